"""Properties: calibration never overshoots; ε grows with rounds, sampling rate and 1/σ.

RDP carries most examples (milliseconds each); PLD gets a few, at a coarse discretization
(still a valid bound, 10x faster). Examples are derandomized so CI is deterministic.

Monotonicity is checked where ε is meaningful (≤ 30): far beyond (ε ≳ 50, large q, σ ≈ 1)
dp_accounting's RDP drops low orders whose series fail to converge, and ε wobbles by a few
percent — still a valid upper bound, but not monotone.
"""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from dpbench.privacy import accountant, compute_epsilon, compute_noise_multiplier


@pytest.fixture(autouse=True, scope="module")
def coarse_pld():
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(accountant, "PLD_DISCRETIZATION", 1e-3)
        yield


SLACK = 1e-9  # relative, for float noise in monotonicity checks
MEANINGFUL = 30.0

rates = st.one_of(st.just(1.0), st.floats(1e-3, 0.5))
deltas = st.sampled_from([1e-4, 1e-5, 1e-6])


@settings(derandomize=True, max_examples=6, deadline=None)
@given(epsilon=st.floats(0.5, 10), delta=deltas, rate=rates, rounds=st.integers(1, 500))
def test_rdp_calibration_never_overshoots_and_is_tight(epsilon, delta, rate, rounds):
    args = dict(sampling_rate=rate, rounds=rounds, delta=delta, accountant="rdp")
    sigma = compute_noise_multiplier(epsilon=epsilon, **args)
    assert compute_epsilon(noise_multiplier=sigma, **args) <= epsilon
    assert compute_epsilon(noise_multiplier=sigma * (1 - 1e-3), **args) > epsilon


@settings(derandomize=True, max_examples=6, deadline=None)
@given(epsilon=st.floats(0.5, 8), delta=deltas, rounds=st.integers(1, 30))
def test_pld_calibration_never_overshoots(epsilon, delta, rounds):
    args = dict(sampling_rate=1.0, rounds=rounds, delta=delta, accountant="pld")
    assert accountant.PLD_DISCRETIZATION == 1e-3
    sigma = compute_noise_multiplier(epsilon=epsilon, **args)
    assert compute_epsilon(noise_multiplier=sigma, **args) <= epsilon


@settings(derandomize=True, max_examples=25, deadline=None)
@given(sigma=st.floats(0.5, 50), rate=rates, rounds=st.integers(1, 1000), extra=st.integers(1, 1000), delta=deltas)
def test_epsilon_grows_with_rounds(sigma, rate, rounds, extra, delta):
    args = dict(noise_multiplier=sigma, sampling_rate=rate, delta=delta, accountant="rdp")
    assert compute_epsilon(rounds=rounds, **args) <= compute_epsilon(rounds=rounds + extra, **args) * (1 + SLACK)


@settings(derandomize=True, max_examples=25, deadline=None)
@given(sigma=st.floats(1, 50), rate=st.floats(1e-3, 1.0), factor=st.floats(0.01, 0.99), rounds=st.integers(1, 1000),
       delta=deltas)
def test_epsilon_grows_with_sampling_rate(sigma, rate, factor, rounds, delta):
    args = dict(noise_multiplier=sigma, rounds=rounds, delta=delta, accountant="rdp")
    larger = compute_epsilon(sampling_rate=rate, **args)
    assume(larger <= MEANINGFUL)
    assert compute_epsilon(sampling_rate=rate * factor, **args) <= larger * (1 + SLACK)


@settings(derandomize=True, max_examples=25, deadline=None)
@given(sigma=st.floats(1, 50), factor=st.floats(1.01, 10), rate=rates, rounds=st.integers(1, 1000), delta=deltas)
def test_epsilon_falls_with_noise(sigma, factor, rate, rounds, delta):
    args = dict(sampling_rate=rate, rounds=rounds, delta=delta, accountant="rdp")
    larger = compute_epsilon(noise_multiplier=sigma, **args)
    assume(larger <= MEANINGFUL)
    assert compute_epsilon(noise_multiplier=sigma * factor, **args) <= larger * (1 + SLACK)


@settings(derandomize=True, max_examples=6, deadline=None)
@given(sigma=st.floats(1, 30), rounds=st.integers(1, 40), extra=st.integers(1, 40), factor=st.floats(1.05, 3))
def test_pld_monotone_in_rounds_and_noise(sigma, rounds, extra, factor):
    args = dict(sampling_rate=1.0, delta=1e-5, accountant="pld")
    base = compute_epsilon(noise_multiplier=sigma, rounds=rounds, **args)
    assert base <= compute_epsilon(noise_multiplier=sigma, rounds=rounds + extra, **args) * (1 + SLACK)
    assert compute_epsilon(noise_multiplier=sigma * factor, rounds=rounds, **args) <= base * (1 + SLACK)
