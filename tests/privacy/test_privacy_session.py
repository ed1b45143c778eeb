"""The session: exact clipping, noise, sampling, the write-ahead ledger, and resume without double spending."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from dpbench.api.privacy import MechanismSpec, PrivacyBudget
from dpbench.errors import ConfigError, PrivacyMisuseError
from dpbench.privacy import (
    BudgetExceededError,
    LedgerError,
    epsilon_for,
    epsilon_from_ledger,
    noise,
    open_session,
    read_ledger,
)
from dpbench.privacy import session as session_module

C = 1.0
INF_BUDGET = PrivacyBudget(epsilon=math.inf, delta=1e-5)


CLIENTS = tuple(f"c{i:03d}" for i in range(100))


class FirstOfCohort:
    """A session whose releases, when no ``clients`` are named, attribute the rows to the first
    clients of the release's cohort: for tests of the release arithmetic."""

    def __init__(self, session):
        self.session = session

    def __getattr__(self, name):
        return getattr(self.session, name)

    def release_clipped_sum(self, key, contributions, *, clip_norm, clients=None):
        index = len(self.session.records)
        if clients is None and key not in {r["key"] for r in self.session.records} and index < self.spec.rounds:
            if isinstance(contributions, Iterator):
                contributions = iter(batches := list(contributions))
                count = sum(len(b) for b in batches)
            else:
                count = len(contributions)
            clients = self.session.cohort(index)[:count]
        return self.session.release_clipped_sum(key, contributions, clip_norm=clip_norm, clients=clients or [])


def make(run_dir, *, sigma=1.0, rounds=5, rate=1.0, seed=7, budget=None, accountant="rdp", clients=CLIENTS,
         noise="seeded"):
    spec = MechanismSpec(rounds=rounds, sampling_rate=rate)
    budget = budget or PrivacyBudget(epsilon=100.0, delta=1e-5)
    return FirstOfCohort(open_session(spec, noise_multiplier=sigma, budget=budget, run_dir=Path(run_dir),
                                      clients=clients, noise=noise, seed=seed, accountant=accountant))


def rows(n=6, d=4, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d))


# ---- clipping and noise ---------------------------------------------------------------------


def test_clip_exact_without_noise(tmp_path):
    session = make(tmp_path, sigma=0.0, budget=INF_BUDGET)
    x = np.array([[0.3, 0.4], [3.0, 4.0], [0.0, 0.0], [-60.0, 80.0]])  # norms 0.5, 5, 0, 100
    expected = np.array([0.3, 0.4]) + np.array([0.6, 0.8]) + np.array([-0.6, 0.8])
    np.testing.assert_allclose(session.release_clipped_sum("r", x, clip_norm=C), expected, rtol=1e-12)


def test_infinite_budget_accepts_near_zero_noise_under_pld(tmp_path):
    session = make(tmp_path, sigma=1e-12, budget=INF_BUDGET, accountant="pld")
    np.testing.assert_allclose(session.release_clipped_sum("r", [[0.6, 0.8]], clip_norm=C), [0.6, 0.8], atol=1e-9)


def test_no_noise_huge_clip_equals_reference_sum(tmp_path):
    session = make(tmp_path, sigma=0.0, budget=INF_BUDGET)
    x = rows(50, 7)
    np.testing.assert_allclose(session.release_clipped_sum("r", x, clip_norm=1e12), x.sum(axis=0), rtol=1e-12)


def test_row_batches_release_the_same_sum_as_one_array(tmp_path):
    x = rows(50, 7) * 3
    whole = make(tmp_path / "a", sigma=0.5).release_clipped_sum("r", x, clip_norm=C)
    batched = make(tmp_path / "b", sigma=0.5).release_clipped_sum("r", (x[i:i + 8] for i in range(0, 50, 8)),
                                                                  clip_norm=C)
    np.testing.assert_allclose(batched, whole, rtol=1e-12)  # same noise; only the summation order differs


def test_resumed_release_does_not_iterate_the_batches(tmp_path):
    first = make(tmp_path).release_clipped_sum("r", rows(), clip_norm=C)

    def never():
        raise AssertionError("a replayed release must not recompute its rows")
        yield

    np.testing.assert_array_equal(make(tmp_path).release_clipped_sum("r", never(), clip_norm=C), first)


def test_discarded_release_keeps_its_charge_and_refuses_replay(tmp_path):
    session = make(tmp_path)
    session.release_clipped_sum("r0", rows(), clip_norm=C)
    spent = session.epsilon_spent()
    session.discard_release("r0")
    assert [p.name for p in (tmp_path / "releases").iterdir()] == [
        Path(read_ledger(tmp_path / "ledger.jsonl")[0]["file"]).name + ".discarded"]
    resumed = make(tmp_path)
    assert resumed.epsilon_spent() == spent and [e["key"] for e in read_ledger(tmp_path / "ledger.jsonl")] == ["r0"]
    with pytest.raises(LedgerError, match="discarded"):
        resumed.release_clipped_sum("r0", rows(), clip_norm=C)
    with pytest.raises(ConfigError, match="key"):
        resumed.discard_release("never-made")


def test_errors_inside_the_callers_batches_surface_unchanged(tmp_path):
    def failing():
        raise TypeError("a bug in the method's own code")
        yield

    with pytest.raises(TypeError, match="a bug in the method's own code"):
        make(tmp_path).release_clipped_sum("r", failing(), clip_norm=C)


@pytest.mark.parametrize("batches", [[], [np.ones((2, 3)), np.ones((2, 4))]], ids=["none", "mismatched"])
def test_bad_batches_raise(tmp_path, batches):
    with pytest.raises(ConfigError, match="contributions"):
        make(tmp_path).release_clipped_sum("r", iter(batches), clip_norm=C)


CANARIES = {
    "huge": np.full(4, 1e6),
    "overflowing": np.full(4, 1e300),
    "nan": np.array([np.nan, 1.0, 2.0, 3.0]),
    "inf": np.array([np.inf, -np.inf, 0.0, 1.0]),
    "empty": np.zeros(4),
    "constant": np.full(4, 7.0),
}


@pytest.mark.parametrize("canary", CANARIES)
def test_frozen_noise_sensitivity(tmp_path, canary):
    """Same seed and key, D vs D + canary: outputs finite and within C of each other (sensitivity C)."""
    d = rows()
    a = make(tmp_path / "a").release_clipped_sum("round-0", d, clip_norm=C)
    b = make(tmp_path / "b").release_clipped_sum("round-0", np.vstack([d, CANARIES[canary]]), clip_norm=C)
    assert np.isfinite(b).all()
    assert np.linalg.norm(b - a) <= C * (1 + 1e-9)


def test_noise_std(tmp_path):
    sigma, clip = 2.0, 0.5
    value = make(tmp_path, sigma=sigma).release_clipped_sum("r", np.zeros((0, 20_000)), clip_norm=clip)
    assert value.dtype == np.float64
    assert abs(value.mean()) < 5 * sigma * clip / math.sqrt(value.size)
    assert value.std() == pytest.approx(sigma * clip, rel=0.03)


def test_single_noise_draw_per_release(tmp_path, monkeypatch):
    calls = []
    real = noise.gaussian_noise

    def spy(rng, *, std, shape):
        calls.append(shape)
        return real(rng, std=std, shape=shape)

    monkeypatch.setattr(noise, "gaussian_noise", spy)
    session = make(tmp_path)
    session.release_clipped_sum("round-0", rows(30), clip_norm=C)
    assert calls == [(4,)]
    session.release_clipped_sum("round-0", rows(30), clip_norm=C)  # replay: no new noise
    assert calls == [(4,)]


def test_noise_reproducible_and_keyed(tmp_path):
    first = make(tmp_path / "a", seed=3)
    second = make(tmp_path / "b", seed=3)
    x = rows()
    np.testing.assert_array_equal(first.release_clipped_sum("k1", x, clip_norm=C),
                                  second.release_clipped_sum("k1", x, clip_norm=C))
    assert not np.array_equal(first.release_clipped_sum("k2", x, clip_norm=C),
                              second.release_clipped_sum("k3", x, clip_norm=C))
    other_seed = make(tmp_path / "c", seed=4).release_clipped_sum("k1", x, clip_norm=C)
    assert not np.array_equal(other_seed, first.release_clipped_sum("k1", x, clip_norm=C))


def test_secure_noise_differs_for_the_same_seed_and_stores_no_seed(tmp_path):
    x = rows()
    a = make(tmp_path / "a", seed=None, noise="secure").release_clipped_sum("k", x, clip_norm=C)
    b = make(tmp_path / "b", seed=None, noise="secure").release_clipped_sum("k", x, clip_norm=C)
    assert not np.array_equal(a, b)
    with pytest.raises(ConfigError, match="seed"):
        make(tmp_path / "c", seed=7, noise="secure")
    with pytest.raises(ConfigError, match="seed"):
        make(tmp_path / "d", seed=None, noise="seeded")


def test_secure_noise_has_the_calibrated_distribution(tmp_path):
    from scipy import stats

    value = make(tmp_path, sigma=2.0, noise="secure", seed=None).release_clipped_sum("r", np.zeros((0, 20_000)),
                                                                                    clip_norm=0.5)
    assert stats.kstest(value, stats.norm(scale=1.0).cdf).pvalue > 1e-4


@pytest.mark.parametrize("bad", [np.zeros(4), np.zeros((3, 0)), [["a", "b"]], np.zeros((2, 2, 2))])
def test_bad_contributions_raise(tmp_path, bad):
    with pytest.raises(ConfigError) as err:
        make(tmp_path).release_clipped_sum("k", bad, clip_norm=C)
    assert err.value.field == "contributions"


@pytest.mark.parametrize("field, kwargs", [("clip_norm", {"clip_norm": 0.0}), ("clip_norm", {"clip_norm": math.inf}),
                                           ("key", {"key": ""})])
def test_bad_release_arguments_raise(tmp_path, field, kwargs):
    args = {"key": "k", "clip_norm": C, **kwargs}
    with pytest.raises(ConfigError) as err:
        make(tmp_path).release_clipped_sum(args["key"], rows(), clip_norm=args["clip_norm"])
    assert err.value.field == field


# ---- sampling -------------------------------------------------------------------------------


def test_cohort_is_drawn_by_the_session(tmp_path):
    ids = [f"c{i}" for i in range(4000)]
    session = make(tmp_path, rate=0.1, rounds=3, clients=ids)
    first = session.cohort(0)
    assert first == make(tmp_path / "again", rate=0.1, rounds=3, clients=ids[::-1]).cohort(0)
    assert abs(len(first) - 400) < 5 * math.sqrt(4000 * 0.1 * 0.9)
    assert first != session.cohort(1)
    # a client's inclusion depends on neither the other clients nor their order
    subset = ids[::3]
    assert (make(tmp_path / "subset", rate=0.1, rounds=3, clients=subset).cohort(0)
            == [c for c in first if c in set(subset)])
    assert make(tmp_path / "full", rate=1.0, clients=ids).cohort(0) == sorted(ids)
    with pytest.raises(PrivacyMisuseError, match="round_index"):
        session.cohort(3)


def test_release_refuses_rows_from_outside_the_cohort(tmp_path):
    """A method that declares rate 0.05 but releases every client is refused, not charged at 0.05."""
    session = make(tmp_path, rate=0.05, rounds=3)
    everyone = list(CLIENTS)
    with pytest.raises(PrivacyMisuseError, match="cohort"):
        session.release_clipped_sum("round-0", rows(len(everyone)), clip_norm=C, clients=everyone)
    cohort = session.cohort(0)
    with pytest.raises(PrivacyMisuseError, match="cohort"):  # release 0 takes round 0's cohort, not round 1's
        session.release_clipped_sum("round-0", rows(len(session.cohort(1))), clip_norm=C, clients=session.cohort(1))
    with pytest.raises(PrivacyMisuseError, match="twice"):
        session.release_clipped_sum("round-0", rows(2), clip_norm=C, clients=[cohort[0], cohort[0]])
    with pytest.raises(PrivacyMisuseError, match="rows for"):
        session.release_clipped_sum("round-0", rows(len(cohort) + 1), clip_norm=C, clients=cohort)
    assert read_ledger(tmp_path / "ledger.jsonl") == []  # nothing refused was charged or stored
    assert not list((tmp_path / "releases").iterdir())
    session.release_clipped_sum("round-0", rows(len(cohort)), clip_norm=C, clients=cohort)
    assert [r["key"] for r in read_ledger(tmp_path / "ledger.jsonl")] == ["round-0"]


def test_empty_round_is_released_and_charged(tmp_path):
    session = make(tmp_path, rate=0.01, rounds=2, clients=["only"])
    assert session.cohort(0) in ([], ["only"])
    value = session.release_clipped_sum("round-0", np.zeros((0, 5)), clip_norm=C, clients=[])
    assert value.shape == (5,) and np.isfinite(value).all() and np.any(value != 0)
    assert session.epsilon_spent() > 0
    assert [r["key"] for r in read_ledger(tmp_path / "ledger.jsonl")] == ["round-0"]


# ---- ledger ---------------------------------------------------------------------------------


def test_ledger_is_written_before_the_value_is_returned(tmp_path):
    session = make(tmp_path, seed=424242)
    value = session.release_clipped_sum("round/0 (first)", rows(), clip_norm=C)
    records = read_ledger(tmp_path / "ledger.jsonl")
    assert len(records) == 1
    release = records[0]
    for field in ("index", "kind", "noise_multiplier", "sampling_rate", "clip_norm", "key", "time", "sha256", "file"):
        assert field in release
    assert release["noise_std"] == 1.0 * C and release["key"] == "round/0 (first)"
    stored = np.load(tmp_path / release["file"])
    np.testing.assert_array_equal(stored, value)
    assert (tmp_path / release["file"]).parent == tmp_path / "releases"
    text = (tmp_path / "ledger.jsonl").read_text()
    assert "seed" not in text and "424242" not in text  # the noise seed is never stored


def test_epsilon_spent_matches_ledger_and_spec(tmp_path):
    session = make(tmp_path, sigma=3.0, rounds=6, rate=0.5)
    assert session.epsilon_spent() == 0.0
    for r in range(4):
        session.release_clipped_sum(f"round-{r}", rows(), clip_norm=C)
    expected = epsilon_for(MechanismSpec(rounds=4, sampling_rate=0.5), noise_multiplier=3.0, delta=1e-5,
                           accountant="rdp")
    assert session.epsilon_spent() == pytest.approx(expected, rel=1e-12)
    assert epsilon_from_ledger(tmp_path, delta=1e-5, accountant="rdp") == pytest.approx(expected, rel=1e-12)
    assert epsilon_from_ledger(tmp_path / "ledger.jsonl", delta=1e-5) < expected  # PLD is tighter


def test_refuses_more_releases_than_rounds(tmp_path):
    session = make(tmp_path, rounds=2)
    session.release_clipped_sum("a", rows(), clip_norm=C)
    session.release_clipped_sum("b", rows(), clip_norm=C)
    session.release_clipped_sum("a", rows(), clip_norm=C)  # a replay is free
    with pytest.raises(BudgetExceededError, match="calibrated for 2 releases"):
        session.release_clipped_sum("c", rows(), clip_norm=C)
    with pytest.raises(LedgerError, match="more than the 1 declared"):
        make(tmp_path, rounds=1)


def test_open_refuses_noise_that_overspends(tmp_path):
    budget = PrivacyBudget(epsilon=1.0, delta=3e-6)
    with pytest.raises(ConfigError) as err:
        make(tmp_path, sigma=15.0, rounds=20, budget=budget)
    assert err.value.field == "noise_multiplier"
    make(tmp_path, sigma=19.3, rounds=20, budget=budget)


def test_open_refuses_a_ledger_of_another_mechanism(tmp_path):
    make(tmp_path, sigma=2.0).release_clipped_sum("a", rows(), clip_norm=C)
    with pytest.raises(LedgerError, match="noise_multiplier"):
        make(tmp_path, sigma=3.0)


def test_replay_checks_the_stored_release(tmp_path):
    make(tmp_path).release_clipped_sum("a", rows(), clip_norm=C)
    session = make(tmp_path)
    with pytest.raises(PrivacyMisuseError, match="clip_norm"):  # the method's mistake, not damage
        session.release_clipped_sum("a", rows(), clip_norm=2.0)
    with pytest.raises(PrivacyMisuseError, match="shape"):
        session.release_clipped_sum("a", rows(d=5), clip_norm=C)
    file = tmp_path / read_ledger(tmp_path / "ledger.jsonl")[0]["file"]
    np.save(file, np.zeros(4))
    with pytest.raises(LedgerError, match="sha256"):
        session.release_clipped_sum("a", rows(), clip_norm=C)


def test_epsilon_from_ledger_edge_cases(tmp_path):
    assert epsilon_from_ledger(tmp_path / "missing.jsonl", delta=1e-5) == 0.0
    (tmp_path / "empty.jsonl").write_text("")
    assert epsilon_from_ledger(tmp_path / "empty.jsonl", delta=1e-5) == 0.0
    line = {"index": 0, "key": "a", "kind": "gaussian", "noise_multiplier": 0.0, "sampling_rate": 1.0,
            "clip_norm": 1.0, "file": "releases/a.npy", "sha256": "0"}
    (tmp_path / "nonprivate.jsonl").write_text(json.dumps(line) + "\n")
    assert epsilon_from_ledger(tmp_path / "nonprivate.jsonl", delta=1e-5) == math.inf
    (tmp_path / "torn.jsonl").write_text(json.dumps(line) + "\n" + '{"key": "b", "ki')
    with pytest.raises(LedgerError, match="torn"):
        epsilon_from_ledger(tmp_path / "torn.jsonl", delta=1e-5)
    (tmp_path / "short.jsonl").write_text(json.dumps({"key": "a"}) + "\n")
    with pytest.raises(LedgerError, match="field 'index' is None"):
        epsilon_from_ledger(tmp_path / "short.jsonl", delta=1e-5)
    (tmp_path / "typed.jsonl").write_text(json.dumps({**line, "key": ["a"]}) + "\n")
    with pytest.raises(LedgerError, match="field 'key'"):
        epsilon_from_ledger(tmp_path / "typed.jsonl", delta=1e-5)
    (tmp_path / "bad.jsonl").write_text("not json\n")
    with pytest.raises(LedgerError, match="bad.jsonl:1"):
        epsilon_from_ledger(tmp_path / "bad.jsonl", delta=1e-5)
    with pytest.raises(ConfigError):
        epsilon_from_ledger(tmp_path / "missing.jsonl", delta=0.0)


# ---- crash and resume -----------------------------------------------------------------------

ROUNDS = 5


def contributions(r):
    return rows(8, 4, seed=100 + r)


def run_rounds(run_dir, *, crash_after=None):
    """A method's loop; ``crash_after`` simulates a kill once round k has been released."""
    session = make(run_dir, rounds=ROUNDS, rate=0.5, sigma=2.0)
    values = []
    for r in range(ROUNDS):
        values.append(session.release_clipped_sum(f"round-{r}", contributions(r), clip_norm=C))
        if r == crash_after:
            raise KeyboardInterrupt
    return values, session


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    values, session = run_rounds(run_dir)
    return values, session.epsilon_spent(), epsilon_from_ledger(run_dir, delta=1e-5, accountant="rdp")


def assert_resumed_like_uninterrupted(run_dir, uninterrupted):
    values, session = run_rounds(run_dir)
    reference, eps_reference, ledger_eps = uninterrupted
    for got, want in zip(values, reference, strict=True):
        np.testing.assert_array_equal(got, want)
    keys = [r["key"] for r in read_ledger(run_dir / "ledger.jsonl")]
    assert keys == [f"round-{r}" for r in range(ROUNDS)]  # each round charged exactly once
    assert session.epsilon_spent() == eps_reference
    assert epsilon_from_ledger(run_dir, delta=1e-5, accountant="rdp") == ledger_eps
    assert not list((run_dir / "releases").glob("*.tmp"))


@pytest.mark.parametrize("crash_after", [0, 2, 4])
def test_resume_after_release(tmp_path, uninterrupted, crash_after):
    with pytest.raises(KeyboardInterrupt):
        run_rounds(tmp_path, crash_after=crash_after)
    assert_resumed_like_uninterrupted(tmp_path, uninterrupted)


def test_a_value_stored_without_its_ledger_line_is_damage(tmp_path, monkeypatch):
    """Killed (or a line lost) between storing round 2's value and charging it: nobody can tell
    whether that value was used, so the session refuses the folder and the run is redone."""
    real = session_module.append_record

    def crash_on_round_2(path, record, *, expected):
        if record.get("key") == "round-2":
            raise KeyboardInterrupt
        real(path, record, expected=expected)

    monkeypatch.setattr(session_module, "append_record", crash_on_round_2)
    with pytest.raises(KeyboardInterrupt):
        run_rounds(tmp_path)
    monkeypatch.setattr(session_module, "append_record", real)
    with pytest.raises(LedgerError, match="does not list"):
        run_rounds(tmp_path)


def test_a_torn_ledger_line_is_damage(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        run_rounds(tmp_path, crash_after=1)
    with open(tmp_path / "ledger.jsonl", "a") as handle:
        handle.write('{"key": "round-2", "kind": "gauss')  # killed mid-append
    with pytest.raises(LedgerError, match="torn"):
        run_rounds(tmp_path)


@pytest.mark.parametrize("damage", ["deleted", "line dropped", "last line dropped", "duplicated", "value changed"])
def test_a_damaged_ledger_is_refused_on_resume(tmp_path, damage):
    with pytest.raises(KeyboardInterrupt):
        run_rounds(tmp_path, crash_after=2)
    ledger = tmp_path / "ledger.jsonl"
    lines = ledger.read_text().splitlines(keepends=True)
    if damage == "deleted":
        ledger.unlink()
    elif damage == "line dropped":
        ledger.write_text(lines[0] + lines[2])
    elif damage == "last line dropped":
        ledger.write_text("".join(lines[:-1]))
    elif damage == "duplicated":
        ledger.write_text("".join(lines) + lines[-1])
    else:
        np.save(tmp_path / json.loads(lines[1])["file"], np.zeros(4))
    with pytest.raises(LedgerError):
        run_rounds(tmp_path)


def test_a_ledger_changed_during_the_run_is_refused_at_the_next_release(tmp_path):
    session = make(tmp_path)
    session.release_clipped_sum("round-0", rows(), clip_norm=C)
    (tmp_path / "ledger.jsonl").unlink()  # deleted mid-run
    with pytest.raises(LedgerError, match="changed under this run"):
        session.release_clipped_sum("round-1", rows(), clip_norm=C)
    other = make(tmp_path / "b")
    other.release_clipped_sum("round-0", rows(), clip_norm=C)
    make(tmp_path / "b").release_clipped_sum("round-1", rows(), clip_norm=C)  # a second writer
    with pytest.raises(LedgerError, match="changed under this run"):
        other.release_clipped_sum("round-1", rows(), clip_norm=C)


KILLED_SCRIPT = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_privacy_session import make, contributions, ROUNDS
session = make(Path({run_dir!r}), rounds=ROUNDS, rate=0.5, sigma=2.0)
for r in range(ROUNDS):
    session.release_clipped_sum(f"round-{{r}}", contributions(r), clip_norm=1.0)
    if r == 2:
        os.kill(os.getpid(), signal.SIGKILL)
"""


def test_resume_after_sigkill(tmp_path, uninterrupted):
    script = KILLED_SCRIPT.format(tests=str(Path(__file__).parent), run_dir=str(tmp_path))
    process = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, timeout=120)
    assert process.returncode == -signal.SIGKILL, process.stderr.decode()
    assert len(read_ledger(tmp_path / "ledger.jsonl")) == 3
    assert_resumed_like_uninterrupted(tmp_path, uninterrupted)


# ---- release diagnostics (benchmark only) -----------------------------------------------------


def test_release_diagnostics_measure_what_the_noise_left_of_the_sum():
    from dpbench.privacy.noise import release_diagnostics

    total = np.array([1.0, 2.0, 3.0, 4.0])
    clean = release_diagnostics(total, np.zeros(4))
    assert clean == pytest.approx({"signal_norm": math.sqrt(30), "noise_norm": 0.0, "cosine": 1.0, "spearman": 1.0})
    reversed_ = release_diagnostics(total, np.array([3.0, 1.0, -1.0, -3.0]))  # the release is 4, 3, 2, 1
    assert reversed_["spearman"] == pytest.approx(-1.0)
    assert reversed_["cosine"] == pytest.approx(20 / 30) and reversed_["noise_norm"] == pytest.approx(math.sqrt(20))
    assert release_diagnostics(np.zeros(4), np.ones(4))["cosine"] is None  # nothing to point at
    assert release_diagnostics(np.array([1.0, 2.0]), np.zeros(2))["spearman"] is None  # too short to rank


def test_a_noise_free_release_is_not_ranked(monkeypatch):
    """ε = ∞ runs release their sums: the rank correlation is 1 by definition, and ranking a
    model-sized release every round cost a quarter of a federated round."""
    import scipy.stats

    from dpbench.privacy.noise import release_diagnostics

    def no_ranking(*args, **kwargs):
        raise AssertionError("a noise-free release was ranked")

    monkeypatch.setattr(scipy.stats, "spearmanr", no_ranking)
    total = np.array([0.0, 0.0, 2.0, -1.0, 0.5])  # ties, as in a delta whose frozen weights stay 0
    assert release_diagnostics(total, np.zeros(5))["spearman"] == 1.0
    with pytest.raises(AssertionError, match="ranked"):
        release_diagnostics(total, np.full(5, 1e-9))  # any noise at all is ranked


def test_a_seeded_session_notes_each_release_and_a_secure_one_nothing(tmp_path):
    import json

    from dpbench.privacy.session import DIAGNOSTICS_NAME

    x = rows(8, 5)
    seeded = make(tmp_path / "seeded", sigma=0.5)
    value = seeded.release_clipped_sum("r0", x, clip_norm=C)
    seeded.release_clipped_sum("r0", x, clip_norm=C)  # a replay notes nothing new
    seeded.release_clipped_sum("r1", np.zeros((0, 5)), clip_norm=C)
    lines = [json.loads(line) for line in (tmp_path / "seeded" / DIAGNOSTICS_NAME).read_text().splitlines()]
    assert [(d["key"], d["index"], d["clients"]) for d in lines] == [("r0", 0, 8), ("r1", 1, 0)]
    total = sum(r * min(1.0, C / np.linalg.norm(r)) for r in x)
    assert lines[0]["signal_norm"] == pytest.approx(np.linalg.norm(total))
    assert lines[0]["noise_norm"] == pytest.approx(np.linalg.norm(value - total))
    assert lines[1]["signal_norm"] == 0.0 and lines[1]["cosine"] is None
    make(tmp_path / "secure", seed=None, noise="secure").release_clipped_sum("r0", x, clip_norm=C)
    assert not (tmp_path / "secure" / DIAGNOSTICS_NAME).exists()


def test_the_methods_agreement_measure_joins_the_notes(tmp_path):
    import json

    from dpbench.privacy.session import DIAGNOSTICS_NAME

    seen = []

    def agreement(noisy, clean):
        seen.append((noisy.copy(), clean.copy()))
        return {"same_argmax": float(noisy.argmax() == clean.argmax())}

    spec = MechanismSpec(rounds=1, sampling_rate=1.0)
    session = open_session(spec, noise_multiplier=0.0, budget=INF_BUDGET, run_dir=tmp_path, clients=CLIENTS[:2],
                           seed=3, agreement=agreement)
    value = session.release_clipped_sum("r", np.array([[0.0, 1.0], [0.0, 0.5]]), clip_norm=C, clients=CLIENTS[:2])
    note = json.loads((tmp_path / DIAGNOSTICS_NAME).read_text())
    assert note["agreement"] == {"same_argmax": 1.0}
    np.testing.assert_array_equal(seen[0][0], value)
    np.testing.assert_allclose(seen[0][1], [0.0, 1.5])


def test_a_run_killed_after_a_ledger_line_keeps_its_note(tmp_path, monkeypatch):
    """The note is written before the ledger line, so a run killed right after it resumes with
    one note per release, equal to an uninterrupted run's."""
    from dpbench.results import release_notes

    x = rows(8, 5)
    reference = make(tmp_path / "reference", sigma=0.5)
    expected = [reference.release_clipped_sum(k, x, clip_norm=C) for k in ("r0", "r1")]
    append_record = session_module.append_record

    def killed_after(*args, **kwargs):
        append_record(*args, **kwargs)
        raise KeyboardInterrupt

    first = make(tmp_path / "run", sigma=0.5)
    first.release_clipped_sum("r0", x, clip_norm=C)
    monkeypatch.setattr(session_module, "append_record", killed_after)
    with pytest.raises(KeyboardInterrupt):
        first.release_clipped_sum("r1", x, clip_norm=C)
    monkeypatch.undo()
    resumed = make(tmp_path / "run", sigma=0.5)
    for key, want in zip(("r0", "r1"), expected, strict=True):
        np.testing.assert_array_equal(resumed.release_clipped_sum(key, x, clip_norm=C), want)
    notes = {n["key"]: n for n in release_notes(tmp_path / "run")}
    assert notes == {n["key"]: n for n in release_notes(tmp_path / "reference")} and set(notes) == {"r0", "r1"}


def test_a_note_after_a_torn_one_starts_its_own_line(tmp_path):
    from dpbench.privacy.session import DIAGNOSTICS_NAME
    from dpbench.results import release_notes

    session = make(tmp_path, sigma=0.5)
    session.release_clipped_sum("r0", rows(8, 5), clip_norm=C)
    with open(tmp_path / DIAGNOSTICS_NAME, "a") as handle:
        handle.write('{"key": "r')  # a note torn by a crash
    session.release_clipped_sum("r1", rows(8, 5), clip_norm=C)
    assert [n["key"] for n in release_notes(tmp_path)] == ["r0", "r1"]
