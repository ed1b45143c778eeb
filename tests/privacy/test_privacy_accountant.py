"""Pinned ε values per library, edge semantics and argument validation of the accountant."""

from __future__ import annotations

import math

import pytest

from dpbench.api.privacy import MechanismSpec
from dpbench.errors import ConfigError
from dpbench.privacy import (
    ACCOUNTANTS,
    DEFAULT_ACCOUNTANT,
    calibrate_noise_multiplier,
    compute_epsilon,
    compute_noise_multiplier,
    epsilon_for,
)

# Measured with dp-accounting 0.6.0 and opacus 1.6.0; pin each library's own numbers (they differ
# in the 5th digit: different RDP orders).
GOLDEN = [
    # q, σ, steps, δ, accountant, ε, relative tolerance
    (0.01, 1.1, 10_000, 1e-5, "rdp", 5.632010670081592, 1e-6),
    (0.01, 1.1, 10_000, 1e-5, "pld", 5.192620123878041, 1e-4),
    (0.01, 1.1, 10_000, 1e-5, "opacus", 5.63199236854841, 1e-6),
    (0.04, 1.5, 2_250, 1e-5, "rdp", 7.329334702381698, 1e-6),
    (0.04, 1.5, 2_250, 1e-5, "pld", 6.768787373891152, 1e-4),
    (0.04, 1.5, 2_250, 1e-5, "opacus", 7.32911117143, 1e-9),  # opacus's own unit-test pin
    (1.0, 19.3, 20, 3e-6, "rdp", 0.9972741870077821, 1e-6),  # POPri's setting (ε ≈ 1)
    (1.0, 19.3, 20, 3e-6, "opacus", 0.9972741870077821, 1e-6),
    (1.0, 19.3, 20, 3e-6, "pld", 0.9194847380136936, 1e-4),
    (1.0, 19.3, 31, 1e-6, "rdp", 1.3331704950337848, 1e-6),  # the reference script's 31 releases
    (1.0, 19.3, 31, 1e-6, "pld", 1.2381388425001676, 1e-4),
]


@pytest.mark.parametrize("q, sigma, steps, delta, accountant, expected, rel", GOLDEN)
def test_accountant_regression_values(q, sigma, steps, delta, accountant, expected, rel):
    eps = compute_epsilon(noise_multiplier=sigma, sampling_rate=q, rounds=steps, delta=delta, accountant=accountant)
    assert eps == pytest.approx(expected, rel=rel)


def test_popri_value_with_the_reference_script_orders():
    """POPri's privacy_accountant.py used orders 1.1..100.9: same 0.997 as opacus's defaults."""
    from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

    orders = [1 + 0.1 * t for t in range(1, 1000)]
    rdp = compute_rdp(q=1.0, noise_multiplier=19.3, steps=20, orders=orders)
    eps, _ = get_privacy_spent(orders=orders, rdp=rdp, delta=3e-6)
    assert eps == pytest.approx(compute_epsilon(noise_multiplier=19.3, sampling_rate=1, rounds=20, delta=3e-6,
                                                accountant="opacus"), rel=1e-9)


def test_pld_matches_analytic_gaussian_composition():
    """PE's setting: T Gaussians at σ compose exactly to one Gaussian at σ/√T (1.9945 at δ=1e-6)."""
    import dp_accounting

    eps = compute_epsilon(noise_multiplier=10, sampling_rate=1, rounds=20, delta=1e-6)
    assert eps == pytest.approx(dp_accounting.get_epsilon_gaussian(10 / math.sqrt(20), 1e-6), rel=1e-4)
    assert eps == pytest.approx(1.9945, abs=1e-4)


def test_tree_aggregation_values():
    eps = dict.fromkeys(ACCOUNTANTS)
    for accountant in ACCOUNTANTS:
        eps[accountant] = compute_epsilon(noise_multiplier=10, sampling_rate=1, rounds=2000, delta=1e-6,
                                          mechanism="tree_aggregation", accountant=accountant)
    assert eps["rdp"] == pytest.approx(1.5494, abs=1e-4)  # dp_accounting's SingleEpochTreeAggregationDpEvent
    assert eps["opacus"] == pytest.approx(eps["rdp"], rel=1e-9)
    assert eps["pld"] < eps["rdp"]


def test_tree_aggregation_is_a_gaussian_of_sensitivity_sqrt_depth():
    """dp_accounting's tree RDP equals one Gaussian at z/√depth: what the PLD backend accounts."""
    depth = math.ceil(math.log2(2000 + 1))
    tree = compute_epsilon(noise_multiplier=10, sampling_rate=1, rounds=2000, delta=1e-6,
                           mechanism="tree_aggregation", accountant="rdp")
    gaussian = compute_epsilon(noise_multiplier=10 / math.sqrt(depth), sampling_rate=1, rounds=1, delta=1e-6,
                               accountant="rdp")
    assert tree == pytest.approx(gaussian, rel=1e-12)


def test_the_tree_under_pld_is_the_analytic_gaussian_of_its_depth():
    """Golden check by an independent formula: one tree over 2,000 rounds at z = 10 is the
    Gaussian mechanism of sensitivity √11 (Balle & Wang 2018, δ(ε) = Φ(μ/2 − ε/μ) − e^ε Φ(−μ/2 − ε/μ),
    μ = √depth / z), solved here with scipy rather than dp_accounting."""
    from scipy.optimize import brentq
    from scipy.stats import norm

    mu = math.sqrt(math.ceil(math.log2(2000 + 1))) / 10

    def delta_at(eps):
        return norm.cdf(mu / 2 - eps / mu) - math.exp(eps) * norm.cdf(-mu / 2 - eps / mu)

    analytic = brentq(lambda eps: delta_at(eps) - 1e-6, 1e-6, 50)
    pld = compute_epsilon(noise_multiplier=10, sampling_rate=1, rounds=2000, delta=1e-6,
                          mechanism="tree_aggregation", accountant="pld")
    assert analytic == pytest.approx(1.4401, abs=1e-4)
    assert pld == pytest.approx(analytic, rel=1e-6) and pld >= analytic  # PLD rounds up, never down


@pytest.mark.parametrize("accountant", ACCOUNTANTS)
@pytest.mark.parametrize("mechanism", ["gaussian", "tree_aggregation"])
def test_accountant_edge_cases(accountant, mechanism):
    common = dict(rounds=10, delta=1e-5, accountant=accountant, mechanism=mechanism)
    q = 0.1 if mechanism == "gaussian" else 1.0
    assert compute_epsilon(noise_multiplier=0.0, sampling_rate=q, **common) == math.inf
    assert compute_epsilon(noise_multiplier=1.0, sampling_rate=0.0, **common) == 0.0
    assert compute_epsilon(noise_multiplier=0.0, sampling_rate=0.0, **common) == 0.0


BAD_ARGUMENTS = [
    ("noise_multiplier", -1.0), ("noise_multiplier", math.nan), ("noise_multiplier", math.inf),
    ("noise_multiplier", "1"), ("noise_multiplier", True),
    ("sampling_rate", -0.1), ("sampling_rate", 1.1), ("sampling_rate", math.nan),
    ("rounds", 0), ("rounds", -3), ("rounds", 2.5), ("rounds", True),
    ("delta", 0.0), ("delta", 1.0), ("delta", -1e-5), ("delta", math.nan),
    ("accountant", "prv"), ("mechanism", "laplace"),
]


@pytest.mark.parametrize("field, value", BAD_ARGUMENTS)
def test_invalid_arguments_raise_naming_the_field(field, value):
    args = dict(noise_multiplier=1.0, sampling_rate=0.5, rounds=10, delta=1e-5, accountant="rdp", mechanism="gaussian")
    args[field] = value
    with pytest.raises(ConfigError) as err:
        compute_epsilon(**args)
    assert err.value.field == field
    assert field in str(err.value) and repr(value) in str(err.value)


def test_tree_aggregation_refuses_subsampling():
    with pytest.raises(ConfigError, match="sampling_rate.*tree aggregation"):
        compute_epsilon(noise_multiplier=1, sampling_rate=0.5, rounds=5, delta=1e-5, mechanism="tree_aggregation")


def test_arguments_are_keyword_only():
    with pytest.raises(TypeError):
        compute_epsilon(1.0, 0.5, 10, 1e-5)  # noqa
    with pytest.raises(TypeError):
        epsilon_for(MechanismSpec(rounds=3), 1.0, 1e-5)  # noqa


@pytest.mark.parametrize("accountant, expected", [("rdp", 19.251), ("opacus", 19.251), ("pld", 17.864)])
def test_calibration_reference_values(accountant, expected):
    """POPri at ε=1, δ=3e-6, 20 full-participation rounds: the paper's setting (docs/methods/popri.md)."""
    spec = MechanismSpec(rounds=20)
    sigma = calibrate_noise_multiplier(spec, epsilon=1.0, delta=3e-6, accountant=accountant)
    assert sigma == pytest.approx(expected, abs=2e-3)
    assert epsilon_for(spec, noise_multiplier=sigma, delta=3e-6, accountant=accountant) <= 1.0


def test_calibration_subsampled_matches_dp_accounting_example():
    sigma = compute_noise_multiplier(epsilon=3.0, delta=1e-5, sampling_rate=0.01, rounds=10_000, accountant="rdp")
    assert sigma == pytest.approx(1.66186, rel=2e-4)  # dp_accounting.calibrate_dp_mechanism's answer


def test_pld_calibration_logs_no_warnings_from_its_rdp_starting_point(caplog):
    """bioRxiv's DP-FedAvg (q 0.064, 30 rounds): the RDP warm start leaves out orders whose
    series do not converge and dp-accounting warns; the pld answer is unchanged and says nothing."""
    import logging

    with caplog.at_level(logging.WARNING):
        sigma = compute_noise_multiplier(epsilon=1, delta=1e-5, sampling_rate=0.0642674, rounds=30, accountant="pld")
    assert sigma == pytest.approx(1.7364, rel=1e-4)  # what bioRxiv's board runs were calibrated to
    assert [r.getMessage() for r in caplog.records if r.name == "absl"] == []
    with caplog.at_level(logging.WARNING):  # the rdp accountant itself still says so
        compute_noise_multiplier(epsilon=1, delta=1e-5, sampling_rate=0.0642674, rounds=30, accountant="rdp")
    assert any("failed to converge" in r.getMessage() for r in caplog.records if r.name == "absl")


def test_calibration_edge_cases():
    assert compute_noise_multiplier(epsilon=math.inf, delta=1e-5, sampling_rate=1, rounds=5) == 0.0
    assert compute_noise_multiplier(epsilon=1.0, delta=1e-5, sampling_rate=0, rounds=5) == 0.0
    for bad in (0.0, -1.0, math.nan, "1"):
        with pytest.raises(ConfigError) as err:
            compute_noise_multiplier(epsilon=bad, delta=1e-5, sampling_rate=1, rounds=5)
        assert err.value.field == "epsilon"
    with pytest.raises(ConfigError, match="epsilon.*reachable"):
        compute_noise_multiplier(epsilon=1e-6, delta=1e-9, sampling_rate=1, rounds=1000, accountant="rdp")


def test_spec_wrappers_use_the_spec():
    spec = MechanismSpec(rounds=50, sampling_rate=0.1)
    direct = compute_epsilon(noise_multiplier=2.0, sampling_rate=0.1, rounds=50, delta=1e-5, accountant="rdp")
    assert epsilon_for(spec, noise_multiplier=2.0, delta=1e-5, accountant="rdp") == direct
    assert DEFAULT_ACCOUNTANT == "pld" and ACCOUNTANTS == ("pld", "rdp", "opacus")
