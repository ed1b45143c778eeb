"""Clopper–Pearson audits: the shipped release path stays under its claim; planted bugs are caught.

The planted bugs are small test-side variants of the shared clipped-sum release. All run at
σ = 1, C = 1 (claim ε ≈ 4.38 at δ = 1e-5) with 2,000 releases per side (about 0.3 s each).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from dpbench.errors import ConfigError, DpbenchError
from dpbench.privacy import AuditMechanism, clipped_sum_mechanism, run_audit
from dpbench.privacy.audit import choose_threshold, epsilon_lower_bound
from dpbench.privacy.noise import clip_rows, gaussian_noise

DELTA = 1e-5
N, D, C = 10, 8, 1.0  # clipped_sum_mechanism's defaults: 10 clients in D, dimension 8


def test_auditor_is_calibrated_on_exact_gaussian_scores():
    """Scores N(1, 1) vs N(0, 1) are a Gaussian mechanism at σ = 1: 0 < ε_LB < its true ε."""
    import dp_accounting

    rng = np.random.default_rng(0)
    n = 20_000
    in_scores, out_scores = rng.normal(1.0, 1.0, n), rng.normal(0.0, 1.0, n)
    sign, threshold = choose_threshold(in_scores[: n // 2], out_scores[: n // 2], delta=DELTA, alpha=0.05)
    bound = epsilon_lower_bound(sign * in_scores[n // 2:], sign * out_scores[n // 2:], threshold=threshold,
                                delta=DELTA)
    assert sign == 1
    assert 1.0 < bound < dp_accounting.get_epsilon_gaussian(1.0, DELTA)


@pytest.mark.parametrize("sigma", [1.0, 2.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shipped_clipped_sum_stays_within_its_claim(sigma, seed):
    result = run_audit(clipped_sum_mechanism(noise_multiplier=sigma), trials=2000, delta=DELTA, seed=seed)
    assert not result.violated
    assert result.epsilon_lower_bound <= result.epsilon_claimed
    if sigma == 1.0:
        assert result.epsilon_lower_bound > 0.5  # the canary is seen: the audit is not vacuous
    assert result.epsilon_ceiling == pytest.approx(math.log(1000 / 3.689), abs=0.01)


@pytest.mark.parametrize("canary", [np.full(D, np.nan), np.full(D, np.inf), np.full(D, 3.0), np.full(D, 1e300)])
def test_shipped_clipped_sum_with_degenerate_canaries(canary):
    mechanism = dataclasses.replace(clipped_sum_mechanism(), canary=canary)
    assert not run_audit(mechanism, trials=2000, delta=DELTA).violated


# ---- planted bugs ---------------------------------------------------------------------------


def _rows(clients):
    return np.array(clients, dtype=np.float64).reshape(len(clients), D)


def no_clipping(clients, rng):
    return _rows(clients).sum(axis=0) + gaussian_noise(rng, std=C, shape=(D,))


def clipping_after_averaging(clients, rng):
    """Average of raw rows (public denominator N), clipped as a whole, noised for a mean."""
    mean = clip_rows(_rows(clients).sum(axis=0)[None] / N, clip_norm=C)[0]
    return mean + gaussian_noise(rng, std=C / N, shape=(D,))


def noise_for_the_mean_on_the_sum(clients, rng):
    return clip_rows(_rows(clients), clip_norm=C).sum(axis=0) + gaussian_noise(rng, std=C / N, shape=(D,))


def nan_passes_clipping(clients, rng):
    """Flower-style clip: min(1, C/‖x‖) is 1 for a NaN norm, so a NaN row reaches the output."""
    x = _rows(clients)
    with np.errstate(invalid="ignore"):
        factor = np.array([1.0 if not norm > C else C / norm for norm in np.linalg.norm(x, axis=1)])
    return (x * factor[:, None]).sum(axis=0) + gaussian_noise(rng, std=C, shape=(D,))


def example_weighted_average(clients, rng):
    """FedAvg weighted by reported example counts; noise sized for an unweighted mean."""
    x = clip_rows(np.array([c[0] for c in clients]), clip_norm=C)
    w = np.array([c[1] for c in clients], dtype=np.float64)
    return (w[:, None] * x).sum(axis=0) / w.sum() + gaussian_noise(rng, std=C / N, shape=(D,))


def weighted(mechanism):
    return dataclasses.replace(mechanism, clients=tuple((row, 100) for row in mechanism.clients),
                               canary=(mechanism.canary, 10**6))


PLANTED = {
    "no clipping": lambda m: dataclasses.replace(m, release=no_clipping),
    "clipping after averaging": lambda m: dataclasses.replace(m, release=clipping_after_averaging),
    "noise for the mean added to the sum": lambda m: dataclasses.replace(m, release=noise_for_the_mean_on_the_sum),
    "NaN passes clipping": lambda m: dataclasses.replace(m, release=nan_passes_clipping, canary=np.full(D, np.nan)),
    "canary reports a huge weight": lambda m: dataclasses.replace(weighted(m), release=example_weighted_average),
}


@pytest.mark.parametrize("bug", PLANTED)
def test_planted_bug_is_caught(bug):
    mechanism = PLANTED[bug](clipped_sum_mechanism(noise_multiplier=1.0, clip_norm=C))
    result = run_audit(mechanism, trials=2000, delta=DELTA)
    assert result.violated, f"{bug}: ε_LB {result.epsilon_lower_bound:.3f} ≤ claim {result.epsilon_claimed:.3f}"


# ---- contract -------------------------------------------------------------------------------


def test_audit_mechanism_validation():
    good = clipped_sum_mechanism()
    with pytest.raises(ConfigError, match="direction"):
        dataclasses.replace(good, direction=np.ones(D))
    with pytest.raises(ConfigError, match="release"):
        dataclasses.replace(good, release="not callable")
    with pytest.raises(ConfigError, match="noise_multiplier"):
        dataclasses.replace(good, noise_multiplier=-1.0)
    with pytest.raises(ConfigError, match="trials"):
        run_audit(good, trials=5)
    with pytest.raises(ConfigError, match="mechanism"):
        run_audit(object())


def test_release_of_the_wrong_shape_is_refused():
    mechanism = dataclasses.replace(clipped_sum_mechanism(), release=lambda clients, rng: np.zeros(3))
    with pytest.raises(DpbenchError, match="shape"):
        run_audit(mechanism, trials=20)


def test_claim_is_one_gaussian_release():
    import dp_accounting

    mechanism = AuditMechanism(name="m", release=lambda c, r: np.zeros(1), clients=(), canary=np.ones(1),
                               direction=np.ones(1), noise_multiplier=2.0, clip_norm=1.0)
    assert mechanism.claimed_epsilon(delta=DELTA) == pytest.approx(dp_accounting.get_epsilon_gaussian(2.0, DELTA),
                                                                   rel=1e-3)


# ---- the tree-aggregation release (DP-FTRL) ------------------------------------------------------


def test_the_tree_release_passes_its_audit_and_claims_the_whole_tree():
    from dpbench.privacy import compute_epsilon
    from dpbench.privacy.audit import tree_aggregation_mechanism

    mechanism = tree_aggregation_mechanism(noise_multiplier=2.0, clip_norm=C, rounds=7)
    assert mechanism.claimed_epsilon(delta=DELTA) == compute_epsilon(
        noise_multiplier=2.0, sampling_rate=1.0, rounds=7, delta=DELTA, mechanism="tree_aggregation")
    result = run_audit(mechanism, trials=2000, delta=DELTA)
    assert not result.violated and result.epsilon_lower_bound > 0.3  # the learnt direction finds the canary


def test_a_tree_node_whose_noise_serves_another_node_is_caught(monkeypatch):
    """Nodes keyed by level only (node (l, j) reusing (l, 0)'s draw): some combination of the
    releases carries the canary with less noise than the tree's claim allows."""
    import dpbench.privacy.audit as audit
    from dpbench.privacy.noise import tree_increment

    def level_keyed(index, node_noise, *, shape):
        return tree_increment(index, lambda node: node_noise((node[0], 0)), shape=shape)

    monkeypatch.setattr(audit, "tree_increment", level_keyed)
    result = run_audit(audit.tree_aggregation_mechanism(noise_multiplier=2.0, clip_norm=C, rounds=7), trials=2000,
                       delta=DELTA)
    assert result.violated, f"ε_LB {result.epsilon_lower_bound:.3f} ≤ claim {result.epsilon_claimed:.3f}"


def test_a_restarted_tree_passes_its_audit_and_claims_every_tree():
    from dpbench.privacy import compute_epsilon
    from dpbench.privacy.audit import tree_aggregation_mechanism

    mechanism = tree_aggregation_mechanism(noise_multiplier=3.0, clip_norm=C, rounds=8, rounds_per_tree=4)
    claimed = mechanism.claimed_epsilon(delta=DELTA)
    assert claimed == compute_epsilon(noise_multiplier=3.0, sampling_rate=1.0, rounds=8, delta=DELTA,
                                      mechanism="tree_aggregation", rounds_per_tree=4)
    assert claimed > compute_epsilon(noise_multiplier=3.0, sampling_rate=1.0, rounds=8, delta=DELTA,
                                     mechanism="tree_aggregation")  # two trees cost more than one
    result = run_audit(mechanism, trials=2000, delta=DELTA)
    assert not result.violated and result.epsilon_lower_bound > 0.3


def test_a_restart_that_reuses_the_first_trees_nodes_is_caught(monkeypatch):
    """The second tree drawing its nodes from the first tree's draws (nodes keyed without their
    tree): the canary, at another position in each tree, stands out noise-free in a difference."""
    import itertools

    import dpbench.privacy.audit as audit
    from dpbench.privacy.noise import tree_increment

    calls, first_tree = itertools.count(), {}

    def shared_nodes(index, node_noise, *, shape):
        if next(calls) % 8 < 4:  # 8 rounds a trial, the first 4 in tree 0
            first_tree["nodes"] = node_noise
        return tree_increment(index, first_tree["nodes"], shape=shape)

    monkeypatch.setattr(audit, "tree_increment", shared_nodes)
    mechanism = audit.tree_aggregation_mechanism(noise_multiplier=3.0, clip_norm=C, rounds=8, rounds_per_tree=4)
    result = run_audit(mechanism, trials=2000, delta=DELTA)
    assert result.violated, f"ε_LB {result.epsilon_lower_bound:.3f} ≤ claim {result.epsilon_claimed:.3f}"


def test_a_learnt_direction_is_the_discriminant_of_the_selection_half():
    from dpbench.privacy.audit import discriminant

    rng = np.random.default_rng(0)
    noise = rng.normal(size=(4000, 2)) * [1.0, 10.0]  # the second coordinate is the noisy one
    w = discriminant(noise[:2000] + [1.0, 1.0], noise[2000:])
    assert abs(w[0]) > 0.99  # weighted towards the coordinate where the shift stands out
    exact = np.column_stack([rng.normal(size=100), np.zeros(100)])  # a noise-free coordinate
    assert abs(discriminant(exact + [0.0, 1.0], exact)[1]) > 0.99
