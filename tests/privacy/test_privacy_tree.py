"""Tree aggregation in the session (DP-FTRL's release): one round per client and tree, node noise
drawn once and reused for every prefix it covers, restarts (fresh trees, one charge each), the
accountant's depth, resume in both noise modes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from dpbench.api.privacy import MechanismSpec, PrivacyBudget
from dpbench.errors import ConfigError, PrivacyMisuseError
from dpbench.privacy import compute_epsilon, epsilon_from_ledger, open_session
from dpbench.privacy.accountant import tree_depth
from dpbench.privacy.ledger import LedgerError, check_ledger
from dpbench.privacy.noise import tree_nodes
from dpbench.privacy.session import TREE_NOISE

CLIENTS = tuple(f"c{i:03d}" for i in range(60))
BUDGET = PrivacyBudget(epsilon=1000.0, delta=1e-5)


def tree_session(run_dir: Path, *, rounds=7, sigma=1.0, noise="seeded", clients=CLIENTS, rounds_per_tree=None):
    spec = MechanismSpec(rounds=rounds, kind="tree_aggregation", rounds_per_tree=rounds_per_tree)
    budget = BUDGET if sigma else PrivacyBudget(epsilon=math.inf, delta=1e-5)
    return open_session(spec, noise_multiplier=sigma, budget=budget, run_dir=run_dir, clients=clients, noise=noise,
                        seed=3 if noise == "seeded" else None, accountant="rdp")


def release(session, r: int, *, d: int, value: float = 0.0, clip_norm: float = 1.0) -> np.ndarray:
    cohort = session.cohort(r)
    return session.release_clipped_sum(f"round-{r}", np.full((len(cohort), d), value), clip_norm=clip_norm,
                                       clients=cohort)


@pytest.mark.parametrize("rounds", [1, 2, 3, 4, 7, 8, 13])
def test_prefix_nodes_cover_each_prefix_once_and_each_round_enters_depth_nodes(rounds):
    used = set()
    for prefix in range(1, rounds + 1):
        nodes = tree_nodes(prefix)
        covered = sorted(r for level, j in nodes for r in range(j << level, (j + 1) << level))
        assert covered == list(range(prefix)) and len(nodes) == bin(prefix).count("1")
        used |= nodes
    per_round = [sum(j << level <= r < (j + 1) << level for level, j in used) for r in range(rounds)]
    assert max(per_round) == tree_depth(rounds)  # the sensitivity the accountant charges for


def test_each_client_takes_part_in_exactly_one_round_chosen_by_its_own_id(tmp_path):
    session = tree_session(tmp_path)
    cohorts = [session.cohort(r) for r in range(7)]
    assert sorted(c for cohort in cohorts for c in cohort) == list(CLIENTS)
    assert min(map(len, cohorts)) > 0
    more = tree_session(tmp_path / "more", clients=(*CLIENTS, "newcomer"))
    assert [[c for c in more.cohort(r) if c != "newcomer"] for r in range(7)] == cohorts


def test_prefix_sums_carry_the_noise_of_their_nodes_only(tmp_path):
    """With zero contributions the prefix sums are pure tree noise, and their covariance is the
    tree's: prefixes a and b share exactly the nodes both are made of (noise at the leaves alone
    would give prefix t variance t; a node drawn afresh at each use, or nodes sharing a draw,
    would break the off-diagonal)."""
    d, sigma, clip = 40_000, 2.0, 0.5
    session = tree_session(tmp_path, sigma=sigma)
    increments = [release(session, r, d=d, clip_norm=clip) for r in range(7)]
    prefixes = np.cumsum(increments, axis=0)
    measured = prefixes @ prefixes.T / d / (sigma * clip) ** 2
    expected = [[len(tree_nodes(a) & tree_nodes(b)) for b in range(1, 8)] for a in range(1, 8)]
    np.testing.assert_allclose(measured, expected, atol=0.05)


def test_the_signal_is_the_clipped_sum_of_the_round(tmp_path):
    session = tree_session(tmp_path, sigma=0.0, rounds=3)
    for r in range(3):
        cohort = session.cohort(r)
        got = session.release_clipped_sum(f"round-{r}", np.full((len(cohort), 4), 3.0), clip_norm=1.0, clients=cohort)
        np.testing.assert_allclose(got, np.full(4, len(cohort) * 0.5))  # rows of norm 6 clipped to 1


def test_the_ledger_charges_one_tree(tmp_path):
    session = tree_session(tmp_path, sigma=3.0)
    for r in range(7):
        release(session, r, d=3)
    expected = compute_epsilon(noise_multiplier=3.0, sampling_rate=1.0, rounds=7, delta=1e-5,
                               mechanism="tree_aggregation", accountant="rdp")
    assert session.epsilon_spent() == expected == epsilon_from_ledger(tmp_path, delta=1e-5, accountant="rdp")
    mechanism = {"kind": "tree_aggregation", "rounds": 7, "sampling_rate": 1.0}
    assert check_ledger(tmp_path, mechanism=mechanism, noise_multiplier=3.0, complete=True) == []


def test_refusals(tmp_path):
    with pytest.raises(ConfigError, match="sampling_rate: 0.5 is not allowed; expected 1 for tree aggregation"):
        open_session(MechanismSpec(rounds=4, sampling_rate=0.5, kind="tree_aggregation"), noise_multiplier=5.0,
                     budget=BUDGET, run_dir=tmp_path, clients=CLIENTS, seed=0, accountant="rdp")
    session = tree_session(tmp_path, rounds=3)
    release(session, 0, d=4)
    with pytest.raises(PrivacyMisuseError, match="clip norm and shape of the first"):
        release(session, 1, d=4, clip_norm=2.0)
    with pytest.raises(PrivacyMisuseError, match="clip norm and shape of the first"):
        release(session, 1, d=5)
    outsider = session.cohort(2)[0]
    with pytest.raises(PrivacyMisuseError, match="must come from cohort"):
        session.release_clipped_sum("round-1", np.zeros((1, 4)), clip_norm=1.0, clients=[outsider])


def test_a_seeded_tree_resumes_to_the_uninterrupted_releases(tmp_path):
    straight = tree_session(tmp_path / "a")
    expected = [release(straight, r, d=6, value=0.1) for r in range(7)]
    first = tree_session(tmp_path / "b")
    for r in range(3):
        release(first, r, d=6, value=0.1)
    resumed = tree_session(tmp_path / "b")  # a new process: replays 0-2, draws 3-6
    got = [release(resumed, r, d=6, value=0.1) for r in range(7)]
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_secure_tree_keeps_the_nodes_it_used_until_its_last_release(tmp_path):
    """Resumed after round 2, round 4's increment subtracts node (1, 0), drawn before the
    interruption: prefix 4 is node (2, 0) alone (variance 1), not 3 nodes' worth."""
    d = 40_000
    first = tree_session(tmp_path, noise="secure")
    increments = [release(first, r, d=d) for r in range(2)]
    assert (tmp_path / TREE_NOISE).is_dir()
    resumed = tree_session(tmp_path, noise="secure")
    increments = [release(resumed, r, d=d) for r in range(7)]
    assert np.sum(increments[:4], axis=0).var() == pytest.approx(1.0, rel=0.05)
    assert not (tmp_path / TREE_NOISE).exists()  # the secret node noise is gone with the last release
    assert math.isfinite(resumed.epsilon_spent())


def test_a_resumed_secure_tree_keeps_every_client_in_its_round(tmp_path):
    """The secure round assignment is keyed once per run (kept in the run folder): a resumed
    session must not put a client into a second round of the same tree."""
    first = [tree_session(tmp_path, noise="secure").cohort(r) for r in range(7)]
    assert [tree_session(tmp_path, noise="secure").cohort(r) for r in range(7)] == first
    assert [tree_session(tmp_path / "other", noise="secure").cohort(r) for r in range(7)] != first  # fresh key


def test_secure_nodes_are_kept_only_while_a_later_release_needs_them(tmp_path):
    session = tree_session(tmp_path, noise="secure")
    for r in range(6):
        release(session, r, d=3)
        kept = sorted(p.stem for p in (tmp_path / TREE_NOISE).iterdir())
        assert kept == sorted(f"tree-0-node-{level}-{j}" for level, j in tree_nodes(r + 1))
    stray = tmp_path / TREE_NOISE / "tree-0-node-0-6.npy"  # drawn for round 6, killed before its ledger line
    np.save(stray, np.zeros(3))
    resumed = tree_session(tmp_path, noise="secure")
    assert not stray.exists()  # never released: forgotten at the reopening, drawn afresh
    np.save(stray, np.zeros(5))  # a node of the wrong shape where round 6 will look for its node
    with pytest.raises(LedgerError, match="shape"):
        release(resumed, 6, d=3)


def test_the_last_release_leaves_no_secret_node_behind_even_when_replayed(tmp_path):
    session = tree_session(tmp_path, noise="secure", rounds=3)
    for r in range(3):
        release(session, r, d=2)
    assert not (tmp_path / TREE_NOISE).exists()
    (tmp_path / TREE_NOISE).mkdir()  # as if killed between the last ledger line and the clean-up
    np.save(tmp_path / TREE_NOISE / "tree-0-node-1-0.npy", np.zeros(2))
    tree_session(tmp_path, noise="secure", rounds=3)
    assert not (tmp_path / TREE_NOISE).exists()


# ---- restarts: a new tree every rounds_per_tree rounds -------------------------------------------


def test_each_tree_assigns_every_client_to_one_of_its_rounds_afresh(tmp_path):
    session = tree_session(tmp_path, rounds=10, rounds_per_tree=4)  # trees of 4, 4 and 2 rounds
    assert session.spec.tree_sizes() == (4, 4, 2)
    trees = [[session.cohort(r) for r in range(start, stop)] for start, stop in ((0, 4), (4, 8), (8, 10))]
    for cohorts in trees:
        assert sorted(c for cohort in cohorts for c in cohort) == list(CLIENTS)
    assert trees[0] != trees[1]  # keyed by the tree: not the same order every pass
    one_tree = tree_session(tmp_path / "one", rounds=4)
    assert [one_tree.cohort(r) for r in range(4)] == trees[0]  # the first tree is the unrestarted one


def test_a_restart_starts_from_fresh_nodes(tmp_path):
    """With zero contributions, the second tree's prefix sums are the same tree noise as the
    first's but independent of it: a node reused across trees would correlate them."""
    d, sigma = 40_000, 1.5
    session = tree_session(tmp_path, rounds=8, rounds_per_tree=4, sigma=sigma)
    increments = np.array([release(session, r, d=d) for r in range(8)]) / sigma
    first, second = np.cumsum(increments[:4], axis=0), np.cumsum(increments[4:], axis=0)
    expected = [[len(tree_nodes(a) & tree_nodes(b)) for b in range(1, 5)] for a in range(1, 5)]
    np.testing.assert_allclose(first @ first.T / d, expected, atol=0.05)
    np.testing.assert_allclose(second @ second.T / d, expected, atol=0.05)
    np.testing.assert_allclose(first @ second.T / d, np.zeros((4, 4)), atol=0.05)


def test_the_ledger_charges_each_tree_and_refuses_a_merged_one(tmp_path):
    """Two trees of 4 rounds charge depth 3 twice (RDP 6α/2z²), not one tree of 8 (depth 4): a
    ledger whose lines all claim tree 0 would report less ε, so it is not sound."""
    import json

    import dp_accounting as dpa
    from dp_accounting.rdp import RdpAccountant

    session = tree_session(tmp_path, rounds=8, rounds_per_tree=4, sigma=3.0)
    for r in range(8):
        release(session, r, d=3)
    reference = RdpAccountant(neighboring_relation=dpa.NeighboringRelation.REPLACE_SPECIAL)
    reference.compose(dpa.SelfComposedDpEvent(dpa.SingleEpochTreeAggregationDpEvent(3.0, 4), 2))
    restarted = compute_epsilon(noise_multiplier=3.0, sampling_rate=1.0, rounds=8, delta=1e-5,
                                mechanism="tree_aggregation", rounds_per_tree=4, accountant="rdp")
    assert session.epsilon_spent() == restarted == epsilon_from_ledger(tmp_path, delta=1e-5, accountant="rdp")
    assert restarted == pytest.approx(reference.get_epsilon(1e-5), rel=1e-12)
    mechanism = {"kind": "tree_aggregation", "rounds": 8, "sampling_rate": 1.0, "rounds_per_tree": 4}
    assert check_ledger(tmp_path, mechanism=mechanism, noise_multiplier=3.0, complete=True) == []

    ledger = tmp_path / "ledger.jsonl"
    merged = [{**json.loads(line), "tree": 0} for line in ledger.read_text().splitlines()]
    ledger.write_text("".join(json.dumps(record) + "\n" for record in merged))
    assert epsilon_from_ledger(tmp_path, delta=1e-5, accountant="rdp") < restarted  # what the check prevents
    problems = check_ledger(tmp_path, mechanism=mechanism, noise_multiplier=3.0, complete=True)
    assert len(problems) == 4 and "belongs to tree 1 (4 rounds per tree)" in problems[0]
    one_tree = {**mechanism, "rounds_per_tree": None}  # nor may a restarted ledger pass as one tree
    ledger.write_text("".join(json.dumps({**r, "tree": r["index"] // 4}) + "\n" for r in merged))
    assert len(check_ledger(tmp_path, mechanism=one_tree, noise_multiplier=3.0, complete=True)) == 4


def test_a_secure_restarted_tree_resumes_across_the_restart(tmp_path):
    """Killed after round 5 (tree 1, position 1): the resumed session keeps tree 1's node and
    assignment, and tree 0's nodes are gone since its last release."""
    d = 40_000
    first = tree_session(tmp_path, noise="secure", rounds=8, rounds_per_tree=4)
    cohorts = [first.cohort(r) for r in range(8)]
    for r in range(4):
        release(first, r, d=d)
    assert not (tmp_path / TREE_NOISE).exists()  # tree 0 complete: nothing secret kept
    release(first, 4, d=d)
    assert sorted(p.stem for p in (tmp_path / TREE_NOISE).iterdir()) == ["tree-1-node-0-0"]
    resumed = tree_session(tmp_path, noise="secure", rounds=8, rounds_per_tree=4)
    assert [resumed.cohort(r) for r in range(8)] == cohorts
    increments = [release(resumed, r, d=d) for r in range(8)]
    assert np.sum(increments[4:6], axis=0).var() == pytest.approx(1.0, rel=0.05)  # prefix 2 of tree 1: one node
    assert not (tmp_path / TREE_NOISE).exists()


def test_restarts_only_for_a_tree():
    with pytest.raises(ConfigError, match="rounds_per_tree: 4 is not allowed; expected None unless"):
        MechanismSpec(rounds=8, rounds_per_tree=4)
    with pytest.raises(ConfigError, match="rounds_per_tree"):
        MechanismSpec(rounds=8, kind="tree_aggregation", rounds_per_tree=0)
    with pytest.raises(ConfigError, match="rounds_per_tree"):
        compute_epsilon(noise_multiplier=1, sampling_rate=0.1, rounds=8, delta=1e-5, rounds_per_tree=4)
