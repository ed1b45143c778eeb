"""Kill a run between rounds, re-run it, and get exactly an uninterrupted run's results."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from dpbench.results import load_artifact, load_result

SUITE = """\
seeds: [3]
privacy: {epsilon: 2, delta: 1e-5, accountant: rdp}
datasets: {toy_texts: {num_clients: 30}}
methods: {noisy_unigram: {rounds: 4, round_seconds: 0.5}}
evaluators: {next_word: {}}
"""


def _command(plugins: Path, suite: Path, runs: Path, boards: Path):
    return [sys.executable, "-m", "dpbench", "--plugins-dir", str(plugins), "run", str(suite),
            "--runs-dir", str(runs), "--leaderboards-dir", str(boards)]


def _env():
    return {**os.environ, "DPBENCH_LOAD_PLUGINS": "", "WANDB_MODE": "disabled"}


def _ledger(run_dir: Path) -> list[dict]:
    path = run_dir / "ledger.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_killed_run_resumes_without_double_spending(tmp_path, toy_plugins_dir):
    suite = tmp_path / "resume.yaml"
    suite.write_text(SUITE)

    killed_runs = tmp_path / "killed"
    process = subprocess.Popen(_command(toy_plugins_dir, suite, killed_runs, tmp_path / "b1"), env=_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    run_dir = None
    while time.time() < deadline:
        found = list(killed_runs.glob("resume/*/ledger.jsonl"))
        if found and len(_ledger(found[0].parent)) >= 2:
            run_dir = found[0].parent
            break
        assert process.poll() is None, process.stderr.read().decode()
        time.sleep(0.05)
    assert run_dir is not None, "the run never reached its second round"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert load_result(run_dir) is None
    spent_before = len(_ledger(run_dir))
    assert 2 <= spent_before < 4

    resumed = subprocess.run(_command(toy_plugins_dir, suite, killed_runs, tmp_path / "b1"), env=_env(),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    straight = subprocess.run(_command(toy_plugins_dir, suite, tmp_path / "straight", tmp_path / "b2"), env=_env(),
                              capture_output=True, text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr

    (other_dir,) = [p.parent for p in (tmp_path / "straight").glob("resume/*/result.json")]
    assert other_dir.name == run_dir.name
    keys = [e["key"] for e in _ledger(run_dir)]
    assert keys == ["round-0", "round-1", "round-2", "round-3"]  # each round charged exactly once
    assert keys == [e["key"] for e in _ledger(other_dir)]
    for key in keys:
        a = np.load(next((run_dir / "releases").glob(f"{key}*.npy")))
        b = np.load(next((other_dir / "releases").glob(f"{key}*.npy")))
        np.testing.assert_array_equal(a, b)
    resumed_result, straight_result = load_result(run_dir), load_result(other_dir)
    assert resumed_result.privacy["epsilon_spent"] == straight_result.privacy["epsilon_spent"]
    assert resumed_result.metrics == straight_result.metrics
    assert load_artifact(run_dir).texts == load_artifact(other_dir).texts
