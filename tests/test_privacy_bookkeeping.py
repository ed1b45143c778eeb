"""The ε beside a number is never lower than what the run spent: damaged records, two runners,
lying plugins, side channels, torn files and a full disk."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

from dpbench import leaderboard
from dpbench.api import MechanismSpec, Method, SyntheticTexts
from dpbench.hookspecs import hookimpl
from dpbench.plugins import registered
from dpbench.privacy import read_ledger
from dpbench.results import load_artifact, load_result
from dpbench.runner import Runner
from dpbench.suite import load_suite

PRIVATE = """\
seeds: [3]
privacy: {epsilon: 2, delta: 1e-5, accountant: rdp}
datasets: {toy_texts: {num_clients: 30}}
methods: {noisy_unigram: {rounds: 4, round_seconds: 0.4}}
evaluators: {next_word: {}}
"""


def _suite(tmp_path, body=PRIVATE, name="bookkeeping"):
    path = tmp_path / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    return path


def _command(plugins: Path, suite: Path, runs: Path):
    return [sys.executable, "-m", "dpbench", "--plugins-dir", str(plugins), "run", str(suite),
            "--runs-dir", str(runs), "--leaderboards-dir", str(runs / "boards")]


def _env():
    return {**os.environ, "DPBENCH_LOAD_PLUGINS": "", "WANDB_MODE": "disabled"}


def _private_run(suite) -> Path:
    spec = next(s for s in suite.runs if s.method.label == "noisy_unigram")
    return suite.folder / spec.run_id


def _keys(run_dir: Path) -> list[str]:
    return [r["key"] for r in read_ledger(run_dir / "ledger.jsonl")]


def _wait_for_releases(runs: Path, count: int, process) -> Path:
    deadline = time.time() + 120
    while time.time() < deadline:
        for ledger in runs.glob("*/*/ledger.jsonl"):
            if len(ledger.read_text().splitlines()) >= count:
                return ledger.parent
        assert process.poll() is None, process.stderr.read().decode()
        time.sleep(0.05)
    raise AssertionError(f"no run reached {count} releases")


@pytest.fixture(scope="module")
def straight(tmp_path_factory, toy_plugins_dir):
    """One uninterrupted run of the private suite: what every repaired run must equal."""
    tmp = tmp_path_factory.mktemp("straight")
    done = subprocess.run(_command(toy_plugins_dir, _suite(tmp), tmp / "runs"), env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (folder,) = [p.parent for p in (tmp / "runs").glob("*/*/result.json")]
    return folder, load_result(folder)


# ---- 1. a damaged ledger never lowers ε ------------------------------------------------------


def test_ledger_deleted_mid_run_is_redone_with_the_full_charge(tmp_path, straight, toy_plugins_dir):
    process = subprocess.Popen(_command(toy_plugins_dir, _suite(tmp_path), tmp_path / "runs"), env=_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    run_dir = _wait_for_releases(tmp_path / "runs", 2, process)
    (run_dir / "ledger.jsonl").unlink()
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr.decode()
    assert "damaged" in stderr.decode()
    result = load_result(run_dir)
    assert _keys(run_dir) == [f"round-{r}" for r in range(4)]
    assert result.privacy["epsilon_spent"] == straight[1].privacy["epsilon_spent"]
    assert result.metrics == straight[1].metrics
    assert len(list((run_dir.parent / ".damaged").iterdir())) == 1


def test_killed_run_resumes_without_double_spending(tmp_path, straight, toy_plugins_dir):
    """Kill a run between rounds, re-run it, and get exactly an uninterrupted run's results."""
    process = subprocess.Popen(_command(toy_plugins_dir, _suite(tmp_path), tmp_path / "runs"), env=_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    run_dir = _wait_for_releases(tmp_path / "runs", 2, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert load_result(run_dir) is None
    assert 2 <= len(_keys(run_dir)) < 4

    resumed = subprocess.run(_command(toy_plugins_dir, _suite(tmp_path), tmp_path / "runs"), env=_env(),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    other_dir, straight_result = straight
    assert other_dir.name == run_dir.name
    keys = _keys(run_dir)
    assert keys == ["round-0", "round-1", "round-2", "round-3"]  # each round charged exactly once
    assert keys == _keys(other_dir)
    for key in keys:
        a = np.load(next((run_dir / "releases").glob(f"{key}*.npy")))
        b = np.load(next((other_dir / "releases").glob(f"{key}*.npy")))
        np.testing.assert_array_equal(a, b)
    resumed_result = load_result(run_dir)
    assert resumed_result.privacy["epsilon_spent"] == straight_result.privacy["epsilon_spent"]
    assert resumed_result.metrics == straight_result.metrics
    assert load_artifact(run_dir).texts == load_artifact(other_dir).texts


@pytest.fixture
def finished(toy_plugin, tmp_path):
    suite = load_suite(_suite(tmp_path, PRIVATE.replace("round_seconds: 0.4", "round_seconds: 0")),
                       runs_dir=tmp_path / "runs")
    assert not Runner(suite).run().failed
    return suite


def _drop_records(ledger):
    """A ledger and every stored release gone, the method's checkpoints left."""
    ledger.unlink()
    for name in ("releases", "result.json", "artifact.json", "synthetic.jsonl"):
        path = ledger.parent / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


DAMAGE = {
    "deleted": lambda ledger: ledger.unlink(),
    "emptied": lambda ledger: ledger.write_text(""),
    "torn": lambda ledger: ledger.write_bytes(ledger.read_bytes()[:-20]),
    "a line dropped": lambda ledger: ledger.write_text("".join(ledger.read_text().splitlines(True)[1:])),
    "all records but the checkpoints": _drop_records,
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_finished_run_with_a_damaged_ledger_is_incomplete_then_redone(finished, damage):
    run_dir = _private_run(finished)
    spent = load_result(run_dir).privacy["epsilon_spent"]
    DAMAGE[damage](run_dir / "ledger.jsonl")

    if (run_dir / "result.json").exists():
        board = leaderboard.build(finished.name, leaderboard.collect(finished.folder), finished.metric)
        assert run_dir.name in board.incomplete  # never shown with a lower ε
        assert not any(r.method == "noisy_unigram" for r in board.rows)
        assert run_dir.name in leaderboard.render_markdown(board)

    report = Runner(finished).run()
    assert report.completed == [run_dir.name]
    assert _keys(run_dir) == [f"round-{r}" for r in range(4)]
    assert load_result(run_dir).privacy["epsilon_spent"] == spent
    board = leaderboard.build(finished.name, leaderboard.collect(finished.folder), finished.metric)
    assert not board.incomplete and board.rows[0].epsilon_ledger == pytest.approx(spent)


def test_a_truncated_result_is_not_complete_and_never_breaks_the_board(finished):
    run_dir = _private_run(finished)
    before = load_result(run_dir)
    (run_dir / "result.json").write_text((run_dir / "result.json").read_text()[:50])
    assert leaderboard.collect(finished.folder) == []  # unfinished, not a crash
    report = Runner(finished).run()
    assert report.completed == [run_dir.name]
    again = load_result(run_dir)
    assert again.metrics == before.metrics and _keys(run_dir) == [r["key"] for r in before.privacy["releases"]]


# ---- 2. one writer per run folder -------------------------------------------------------------


def test_two_runners_on_one_suite_share_the_work_and_charge_once(tmp_path, straight, toy_plugins_dir):
    body = PRIVATE.replace("seeds: [3]", "seeds: [3, 4]")
    suite = _suite(tmp_path, body)
    processes = [subprocess.Popen(_command(toy_plugins_dir, suite, tmp_path / "runs"), env=_env(),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    assert any("another dpbench process" in err for _, err in outputs)
    folders = sorted(p.parent for p in (tmp_path / "runs").glob("*/*/result.json"))
    assert len(folders) == 2
    for folder in folders:
        keys = _keys(folder)
        assert keys == [f"round-{r}" for r in range(4)] and len(set(keys)) == len(keys)
    same_seed = next(f for f in folders if "seed3" in f.name)
    assert load_result(same_seed).metrics == straight[1].metrics
    assert not (tmp_path / "runs" / "bookkeeping" / ".damaged").exists()


# ---- 3 and 5. what a method may not do ---------------------------------------------------------


def _plant(**methods):
    plugin = types.ModuleType("planted")
    plugin.register_methods = hookimpl(lambda register: [register(n, cls) for n, cls in methods.items()])
    return registered(plugin, name="planted")


def _planted_suite(tmp_path, method: str):
    body = PRIVATE.replace("noisy_unigram: {rounds: 4, round_seconds: 0.4}", f"{method}: {{}}")
    return load_suite(_suite(tmp_path, body, name=method), runs_dir=tmp_path / "runs")


def test_a_method_releasing_more_clients_than_it_declared_is_refused(toy_plugin, tmp_path):
    class LyingRate(toy_plugin.NoisyUnigram):
        """Declares rate 0.05 but releases every client every round."""

        def mechanism(self, data):
            return MechanismSpec(rounds=3, sampling_rate=0.05)

        def run(self, data, ctx):
            everyone = sorted(data.clients)
            for r in range(3):
                ctx.privacy.release_clipped_sum(f"round-{r}", np.ones((len(everyone), 4)), clip_norm=1.0,
                                                clients=everyone)
            return SyntheticTexts(texts=("w0 w1",))

    with _plant(lying_rate=LyingRate):
        suite = _planted_suite(tmp_path, "lying_rate")
        report = Runner(suite).run()
    (error,) = report.failed.values()
    assert "PrivacyMisuseError" in error and "cohort" in error
    assert load_result(_private_run_of(suite, "lying_rate")) is None
    assert read_ledger(_private_run_of(suite, "lying_rate") / "ledger.jsonl") == []


def _private_run_of(suite, label):
    return suite.folder / next(s.run_id for s in suite.runs if s.method.label == label)


def test_a_finite_epsilon_run_without_releases_fails_and_stays_off_the_board(toy_plugin, tmp_path):
    class ReturnsPrivateTexts(Method):
        def mechanism(self, data):
            return MechanismSpec(rounds=2)

        def run(self, data, ctx):
            return SyntheticTexts(texts=data.training_texts())

    class PosesAsReference(ReturnsPrivateTexts):
        __module__ = "dpbench.builtin.references"  # even one that claims to be built in
        reference = "epsilon_zero"

        def mechanism(self, data):
            return None

    class CustomReference(PosesAsReference):
        reference = "custom"

    with _plant(returns_private_texts=ReturnsPrivateTexts, poses_as_reference=PosesAsReference,
                custom_reference=CustomReference):
        for label, expected in (("returns_private_texts", "PrivacyMisuseError: method 'returns_private_texts' made 0 "
                                                          "of the 2 releases"),
                                ("poses_as_reference", "only dpbench's built-in reference rows"),
                                ("custom_reference", "only dpbench's built-in reference rows")):
            suite = _planted_suite(tmp_path / label, label)
            report = Runner(suite).run()
            (error,) = report.failed.values()
            assert expected in error
            assert load_result(_private_run_of(suite, label)) is None


def test_epsilon_comes_from_the_ledger_whatever_the_method_does_to_ctx_privacy(toy_plugin, tmp_path):
    class SwapsTheSession(toy_plugin.NoisyUnigram):
        def run(self, data, ctx):
            texts = super().run(data, ctx)
            real = ctx.privacy
            ctx.privacy = types.SimpleNamespace(records=real.records, epsilon_spent=lambda: 0.0)
            return texts

    with _plant(swaps_the_session=SwapsTheSession):
        suite = _planted_suite(tmp_path, "swaps_the_session")
        assert not Runner(suite).run().failed
    run_dir = _private_run_of(suite, "swaps_the_session")
    from dpbench.privacy import epsilon_from_ledger

    spent = load_result(run_dir).privacy["epsilon_spent"]
    assert spent > 0 and spent == epsilon_from_ledger(run_dir, delta=1e-5, accountant="rdp")


def test_a_method_logging_its_cohort_size_is_caught(toy_plugin, tmp_path):
    from dpbench.testing.leaks import check_release_only

    data = toy_plugin.ToyTexts().load(None).for_method()
    canary = ("w39 w38 w37 w36 w35 w34 w33 w32",) * 3  # text the toy method can read
    honest = toy_plugin.NoisyUnigram(toy_plugin.NoisyUnigramOptions(rounds=2, num_texts=10))
    assert check_release_only(honest, data, folder=tmp_path / "honest", canary_texts=canary) == []

    class LogsCohort(toy_plugin.NoisyUnigram):
        def run(self, data, ctx):
            ctx.log.info("round 0 cohort: %d clients", len(ctx.privacy.cohort(0)))
            return super().run(data, ctx)

    class WritesPrivateText(toy_plugin.NoisyUnigram):
        def run(self, data, ctx):
            (ctx.checkpoint_dir / "debug.txt").write_text(data.training_texts()[-1])
            return super().run(data, ctx)

    options = toy_plugin.NoisyUnigramOptions(rounds=2, num_texts=10)
    logged = check_release_only(LogsCohort(options), data, folder=tmp_path / "logs", canary_texts=canary)
    assert any(p.startswith("<log>:1") and "31" in p for p in logged)
    written = check_release_only(WritesPrivateText(options), data, folder=tmp_path / "writes", canary_texts=canary)
    assert any("canary client's private text" in p for p in written)


def test_timings_that_match_by_chance_are_not_taken_for_a_leak(toy_plugin, tmp_path):
    from dpbench.testing.leaks import check_release_only

    data = toy_plugin.ToyTexts().load(None).for_method()
    canary = ("w39 w38 w37 w36 w35 w34 w33 w32",) * 3
    clock = iter([0.25, 0.25, 0.5])  # runs A and A2 time alike, run B does not

    class Timed(toy_plugin.NoisyUnigram):
        def run(self, data, ctx):
            seconds = next(clock)
            ctx.log.info("round 0 took %.2f s", seconds)
            ctx.save_state("timed.json", {"cohort": 3, "seconds": seconds, "steps": [{"evaluation_s": seconds}]})
            return super().run(data, ctx)

    options = toy_plugin.NoisyUnigramOptions(rounds=2, num_texts=10)
    assert check_release_only(Timed(options), data, folder=tmp_path / "timed", canary_texts=canary) == []


# ---- 4. noise modes ---------------------------------------------------------------------------


def test_secure_noise_differs_run_to_run_and_seeded_noise_is_bit_identical(toy_plugin, tmp_path):
    digests = {}
    for mode in ("seeded", "secure"):
        for attempt in ("a", "b"):
            body = PRIVATE.replace("round_seconds: 0.4", "round_seconds: 0").replace(
                "accountant: rdp}", f"accountant: rdp, noise: {mode}}}")
            suite = load_suite(_suite(tmp_path / mode / attempt, body), runs_dir=tmp_path / mode / attempt / "runs")
            assert not Runner(suite).run().failed
            run_dir = _private_run(suite)
            digests[mode, attempt] = [r["sha256"] for r in read_ledger(run_dir / "ledger.jsonl")]
            assert json.loads((run_dir / "privacy.json").read_text())["noise"] == mode
    assert digests["seeded", "a"] == digests["seeded", "b"]
    assert not set(digests["secure", "a"]) & set(digests["secure", "b"])


def test_a_damaged_secure_run_is_not_redone_silently(toy_plugin, tmp_path):
    body = PRIVATE.replace("round_seconds: 0.4", "round_seconds: 0").replace("accountant: rdp}",
                                                                            "accountant: rdp, noise: secure}")
    suite = load_suite(_suite(tmp_path, body), runs_dir=tmp_path / "runs")
    assert not Runner(suite).run().failed
    run_dir = _private_run(suite)
    (run_dir / "ledger.jsonl").write_text("")
    report = Runner(suite).run()
    assert "secure noise" in report.failed[run_dir.name] and "--force" in report.failed[run_dir.name]
    assert run_dir.exists() and not (suite.folder / ".damaged").exists()  # left for a person to inspect
    assert not Runner(suite, force=True).run().failed
    assert len(_keys(run_dir)) == 4


# ---- 10. a full disk --------------------------------------------------------------------------


def test_a_full_disk_while_recording_an_error_does_not_stop_the_suite(toy_plugin, tmp_path, monkeypatch):
    from dpbench import runner as runner_module

    class Fails(toy_plugin.NoisyUnigram):
        def run(self, data, ctx):
            raise RuntimeError("a method bug")

    real = runner_module.write_json

    def full_disk_for_errors(path, value, **kw):
        if Path(path).name == "error.json":
            raise OSError(28, "No space left on device")
        return real(path, value, **kw)

    monkeypatch.setattr(runner_module, "write_json", full_disk_for_errors)
    body = PRIVATE.replace("noisy_unigram: {rounds: 4, round_seconds: 0.4}", "fails: {}, noisy_unigram: {rounds: 2}")
    with _plant(fails=Fails):
        suite = load_suite(_suite(tmp_path, body), runs_dir=tmp_path / "runs")
        report = Runner(suite).run()
    assert len(report.failed) == 1 and len(report.completed) == 1


# ---- 5. a plugin that leaks private text is flagged on the board ------------------------------

CANARY_SUITE = """\
seeds: [0]
privacy: {{epsilon: 4, delta: 1e-3, accountant: rdp}}
datasets:
  forum: {{plugin: local, path: {path}, text_field: body, client_field: who, tokenizer: whitespace, canaries: 3}}
methods: {{public_only: {{}}, nonprivate: {{}}, releases_then_leaks: {{}}}}
evaluators: {{next_word: {{}}}}
"""


def test_a_plugin_returning_private_text_is_flagged_by_the_canaries(toy_plugin, tmp_path):
    class ReleasesThenLeaks(Method):
        """Spends its budget honestly on zero rows, then returns the private texts."""

        def mechanism(self, data):
            return MechanismSpec(rounds=1)

        def run(self, data, ctx):
            cohort = ctx.privacy.cohort(0)
            ctx.privacy.release_clipped_sum("r0", np.zeros((len(cohort), 2)), clip_norm=1.0, clients=cohort)
            return SyntheticTexts(texts=data.training_texts())

    data = tmp_path / "forum.jsonl"
    data.write_text("".join(json.dumps({"body": f"text {j} of user {c} says words", "who": f"user{c}"}) + "\n"
                            for c in range(40) for j in range(3)))
    with _plant(releases_then_leaks=ReleasesThenLeaks):
        suite = load_suite(_suite(tmp_path, CANARY_SUITE.format(path=data), name="canaries"),
                           runs_dir=tmp_path / "runs")
        assert not Runner(suite).run().failed
    board = leaderboard.build(suite.name, leaderboard.collect(suite.folder), suite.metric)
    leaks = {row.method: row.leaks_canaries for row in board.rows}
    assert leaks == {"public_only": 0, "nonprivate": 1, "releases_then_leaks": 1}
    report = load_result(_private_run_of(suite, "releases_then_leaks")).checks["canaries"]
    assert report["verbatim"] == 3 and report["flagged"]
    assert "⚑ leaks canaries" in leaderboard.render_markdown(board)
