"""wandb publishing, offline: nothing leaves the machine, no secret reaches a logged config."""

import re

import pytest

from dpbench.builtin.wandb_publisher import _mode, scrub
from dpbench.runner import Runner
from dpbench.suite import load_suite

SENTINEL = "sk-dpbench-sentinel-0123456789"


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_API_KEY", SENTINEL)
    monkeypatch.setenv("WANDB_SILENT", "true")
    import wandb

    wandb.teardown()  # wandb keeps the settings of its first use in a process (WANDB_DIR included)
    yield tmp_path / "wandb_dir"
    wandb.teardown()


def test_scrub_drops_secret_looking_keys_at_any_depth():
    config = {"a": 1, "api_key": "x",
              "nested": {"WANDB_API_KEY": "y", "hf-token": "z", "ok": [{"password": 1, "b": 2}]}}
    assert scrub(config) == {"a": 1, "nested": {"ok": [{"b": 2}]}}


def test_scrub_redacts_secret_environment_values_under_any_key(monkeypatch):
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-0123456789")
    monkeypatch.setenv("HF_TOKEN", "short")  # under 8 characters: too likely to occur by chance
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false-but-long")  # not a secret's name
    config = {"a": "tok-0123456789", "b": ["x", "url?key=tok-0123456789"], "c": {"d": "short"},
              "e": "false-but-long", "api_key": "dropped by name"}
    assert scrub(config) == {"a": "[redacted]", "b": ["x", "[redacted]"], "c": {"d": "short"}, "e": "false-but-long"}


def test_mode_without_key_is_offline(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    assert _mode() == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "k")
    assert _mode() == "online"


def test_runs_and_leaderboard_publish_offline(toy_plugin, toy_suite, tmp_path, offline_wandb, capsys):
    from dpbench import leaderboard
    from dpbench.builtin import wandb_publisher
    from dpbench.plots import plot_board

    # the key pasted into a value under an innocent name: scrubbed by value
    suite = load_suite(toy_suite(), ["seeds=1", "privacy.epsilon=1", "+publish.wandb=true",
                                     "+publish.project=dpbench-test", f"description=key {SENTINEL}"],
                       runs_dir=tmp_path / "runs")
    report = Runner(suite).run()
    assert not report.failed
    board = leaderboard.build(suite.name, leaderboard.collect(suite.folder), suite.metric)
    plot = plot_board(board.to_dict(), tmp_path / "toy.png")
    wandb_publisher.publish_leaderboard(suite, board, settings=suite.config["publish"], paths=[plot])

    runs = sorted((offline_wandb).glob("wandb/offline-run-*"))
    assert len(runs) == len(suite.runs) + 1
    assert "wandb sync" in capsys.readouterr().err
    for run in runs:
        for path in run.rglob("*"):
            if path.is_file():
                assert SENTINEL.encode() not in path.read_bytes(), path
    # what the SDK writes before log() returns (the .wandb transaction log is written by wandb's
    # service process and was once found without the board's entry right after finish())
    (table,) = offline_wandb.glob("wandb/offline-run-*/files/media/table/leaderboard/toy_*.table.json")
    board = table.read_bytes()
    assert b"noisy_unigram" in board and b"toy_texts" in board
    assert len(list(offline_wandb.glob("wandb/offline-run-*/files/media/images/plot/toy_*.png"))) == 1


def test_publish_leaves_out_runs_whose_ledger_is_damaged(toy_plugin, toy_suite, tmp_path, offline_wandb):
    from click.testing import CliRunner

    from dpbench.cli import cli

    path = toy_suite()
    overrides = ["seeds=1", "privacy.epsilon=1", "~methods.nonprivate"]
    suite = load_suite(path, overrides, runs_dir=tmp_path / "runs")
    assert not Runner(suite).run().failed
    private = next(s.run_id for s in suite.runs if s.method.label == "noisy_unigram")
    (suite.folder / private / "ledger.jsonl").write_text("")
    out = CliRunner().invoke(cli, ["publish", str(path), *overrides, "--runs-dir", str(tmp_path / "runs")])
    assert out.exit_code == 0, out.output
    assert f"not published (incomplete) {private}" in out.output
    assert "published 1 runs" in out.output  # the public-only run alone


def test_run_then_publish_keeps_one_wandb_run_per_dpbench_run(toy_plugin, toy_suite, tmp_path, offline_wandb):
    from click.testing import CliRunner

    from dpbench.cli import cli

    path, overrides = str(toy_suite()), ["seeds=1", "privacy.epsilon=[1]"]
    runs = ["--runs-dir", str(tmp_path / "runs")]
    first = CliRunner().invoke(cli, ["run", path, *overrides, *runs, "--wandb"])
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(cli, ["publish", path, *overrides, *runs])
    assert again.exit_code == 0, again.output
    suite = load_suite(path, overrides, runs_dir=tmp_path / "runs")

    offline = sorted(offline_wandb.glob("wandb/offline-run-*"))
    # offline-run-<time>-<wandb run id>[-n when two start in the same second]
    ids = [re.fullmatch(r"offline-run-\d{8}_\d{6}-(.+?)(-\d+)?", folder.name).group(1) for folder in offline]
    expected = {s.run_id for s in suite.runs} | {"toy-leaderboard"}
    assert len(offline) == 2 * len(expected) and set(ids) == expected  # each publish resumes the same id

    private = next(s.run_id for s in suite.runs if s.method.label == "noisy_unigram")
    live = []
    for folder in offline:
        logged = b"".join(p.read_bytes() for p in folder.glob("run-*.wandb"))
        if b"live/monitor/released_mass" in logged:
            live.append(folder.name)
            assert b"live/release/signal_norm" in logged and b"live/round" in logged
        if folder.name.endswith(private):
            # per-round history from the release diagnostics, one step per round
            for key in (b"release/signal_norm", b"release/noise_norm"):
                assert key in logged
            assert b"run-" + private.encode() in logged and b"dpbench-run" in logged  # the records' artifact
            assert list(folder.glob("files/media/table/samples_*.table.json"))  # the samples table
        if folder.name.endswith("toy-leaderboard"):
            assert b"leaderboard-toy" in logged and b"dpbench-leaderboard" in logged
    assert len(live) == 1 and live[0].endswith(private) and live[0] == min(f.name for f in offline
                                                                              if f.name.endswith(private))


def test_each_round_reaches_publishers_as_it_is_made(toy_plugin, toy_suite, tmp_path, reported):
    """The toy method reports round r after its release r: release diagnostics then monitor
    entry, round by round; the reference rows, which release nothing, report nothing."""
    suite = load_suite(toy_suite(), ["seeds=1", "privacy.epsilon=[1]"], runs_dir=tmp_path / "runs")
    assert not Runner(suite).run().failed
    private = next(s.run_id for s in suite.runs if s.method.label == "noisy_unigram")
    assert {run_id for run_id, _, _ in reported} == {private}
    assert [(step, *entry) for _, step, entry in reported] == [
        (r, part) for r in range(3) for part in ("release", "monitor")]
    for _, step, entry in reported:
        if "monitor" in entry:
            assert entry["monitor"]["round"] == step and isinstance(entry["monitor"]["released_mass"], float)
        else:
            assert entry["release"]["index"] == step and entry["release"]["noise_norm"] > 0


def test_a_failing_live_publisher_does_not_stop_the_run(toy_plugin, toy_suite, tmp_path, caplog):
    from dpbench.hookspecs import hookimpl
    from dpbench.plugins import registered

    class Down:
        @hookimpl
        def run_progress(self, run, step, entry):
            raise ConnectionError("wandb is down")

    suite = load_suite(toy_suite(), ["seeds=1", "privacy.epsilon=[1]"], runs_dir=tmp_path / "runs")
    with registered(Down(), "down"):
        assert not Runner(suite).run().failed
    assert "round 0 not published live (ConnectionError: wandb is down)" in caplog.text


def test_a_failed_run_marks_its_live_wandb_run_failed(toy_plugin, toy_suite, tmp_path, monkeypatch):
    """A run that fails after reporting rounds live has its wandb run finished as failed (with
    the error, secrets scrubbed) when it fails, not left running until the process exits."""
    from dpbench.builtin import wandb_publisher

    class FakeRun:
        def __init__(self):
            self.summary, self.exit_codes, self.logged = {}, [], []

        def log(self, row):
            self.logged.append(row)

        def finish(self, exit_code=0):
            self.exit_codes.append(exit_code)

    opened = []
    monkeypatch.setattr(wandb_publisher, "_init_run", lambda spec, settings: opened.append(FakeRun()) or opened[-1])
    monkeypatch.setenv("WANDB_API_KEY", SENTINEL)

    def broken(self, artifact, data, ctx):
        raise RuntimeError(f"evaluator exploded near {SENTINEL}")

    monkeypatch.setattr(toy_plugin.NextWord, "evaluate", broken)
    suite = load_suite(toy_suite(), ["seeds=1", "privacy.epsilon=[1]", "publish.wandb=true"],
                       runs_dir=tmp_path / "runs")
    report = Runner(suite).run()
    assert len(report.failed) == len(suite.runs)
    (live,) = opened  # only the private run reported rounds
    assert live.logged and live.exit_codes == [1]
    assert live.summary["error"] == "[redacted]" and not wandb_publisher._live
