"""Running a grid in parts: ``--shard K/N``, ``--jobs N``, ``--executor ray`` and ``--executor
slurm`` (submitit) give the board of one process."""

import json
import os
import subprocess
import sys

import pytest

from dpbench.errors import ConfigError
from dpbench.executors import job_environment
from dpbench.runner import select, shard


def test_shards_split_the_grid_into_disjoint_interleaved_parts():
    runs = list(range(11))
    parts = [shard(runs, k, 3) for k in (1, 2, 3)]
    assert parts == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8]]
    assert shard(runs, 1, 1) == runs and shard(runs, 12, 12) == []
    for bad in ((0, 2), (3, 2), (1, 0)):
        with pytest.raises(ConfigError, match="shard: .* is not allowed; expected K/N with 1 <= K <= N"):
            shard(runs, *bad)


def test_only_selects_a_part_of_the_grid_by_label_epsilon_and_seed(toy_plugin, toy_suite):
    from dpbench.suite import load_suite

    runs = load_suite(toy_suite()).runs  # public_only, nonprivate, noisy_unigram at ε 1 and 8; seeds 0, 1
    picked = select(runs, ["method=noisy_unigram,nonprivate", "epsilon=8,inf", "seed=1"])
    assert [(r.method.label, r.epsilon, r.seed) for r in picked] == [("nonprivate", float("inf"), 1),
                                                                    ("noisy_unigram", 8.0, 1)]
    assert [r.run_id for r in picked] == [r.run_id for r in runs if r in picked]  # the grid's own runs
    assert select(runs, ["epsilon=8.0"]) == select(runs, ["epsilon=8"])
    for only, message in ((["methd=noisy_unigram"], "--only: .* KEY one of dataset, method, epsilon, seed.*"
                                                    "Did you mean 'method'"),
                          (["method=noisy_unigrm"], "--only method: .* one of the grid's: .*Did you mean"),
                          (["epsilon=2"], "--only epsilon: '2' .*one of the grid's: 0, 1, 8, inf"),
                          (["method=public_only", "epsilon=8"], "--only: .* at least one run")):
        with pytest.raises(ConfigError, match=message):
            select(runs, only)


def test_each_job_gets_its_share_of_threads_and_one_visible_device():
    env = job_environment(2, 2, {"CUDA_VISIBLE_DEVICES": "0,1,2"})
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == str(max(1, (os.cpu_count() or 1) // 2))
    assert env["CUDA_VISIBLE_DEVICES"] == "1"
    assert job_environment(4, 4, {"CUDA_VISIBLE_DEVICES": "0,1,2"})["CUDA_VISIBLE_DEVICES"] == "0"
    assert job_environment(1, 2, {"CUDA_VISIBLE_DEVICES": "3"})["CUDA_VISIBLE_DEVICES"] == "3"  # one: shared
    assert "CUDA_VISIBLE_DEVICES" not in job_environment(1, 2, {})


def _dpbench(plugins_dir, *args, cwd):
    env = {**os.environ, "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", "dpbench", "--plugins-dir", str(plugins_dir), *args],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def _rows(runs_dir):
    board = json.loads((runs_dir / "toy" / "board" / "toy.json").read_text())
    return [(r["method"], r["epsilon"], r["metrics"], r["epsilon_ledger"], r["runs"]) for r in board["rows"]]


def test_shards_and_jobs_give_the_board_of_one_process(toy_plugins_dir, toy_suite, tmp_path):
    suite = str(toy_suite())
    one = _dpbench(toy_plugins_dir, "run", suite, "--runs-dir", str(tmp_path / "one"), cwd=tmp_path)
    assert one.returncode == 0, one.stderr[-2000:]

    for k in (1, 2):
        out = _dpbench(toy_plugins_dir, "run", suite, "--runs-dir", str(tmp_path / "shards"), "--shard", f"{k}/2",
                       cwd=tmp_path)
        assert out.returncode == 0 and f"toy shard {k}/2: 4 completed, 0 already complete" in out.stdout, out.stderr
    jobs = _dpbench(toy_plugins_dir, "run", suite, "--runs-dir", str(tmp_path / "jobs"), "--jobs", "2", cwd=tmp_path)
    assert jobs.returncode == 0, jobs.stdout[-2000:] + jobs.stderr[-2000:]
    assert "toy: 2 jobs done, 8/8 runs complete" in jobs.stdout
    for k in (1, 2):
        log = (tmp_path / "jobs" / "toy" / "jobs" / f"shard-{k}-of-2.log").read_text()
        assert f"toy shard {k}/2: 4 completed" in log

    assert _rows(tmp_path / "shards") == _rows(tmp_path / "jobs") == _rows(tmp_path / "one")
    first = _dpbench(toy_plugins_dir, "run", suite, "--runs-dir", str(tmp_path / "only"), "--only", "epsilon=8",
                     "--jobs", "2", cwd=tmp_path)
    assert first.returncode == 0 and "toy: 2 jobs done, 2/8 runs complete" in first.stdout, first.stderr[-2000:]
    rest = _dpbench(toy_plugins_dir, "run", suite, "--runs-dir", str(tmp_path / "only"), cwd=tmp_path)
    assert "6 completed, 2 already complete" in rest.stdout  # the part's runs are the grid's
    assert _rows(tmp_path / "only") == _rows(tmp_path / "one")
    again = _dpbench(toy_plugins_dir, "run", suite, "--runs-dir", str(tmp_path / "jobs"), cwd=tmp_path)
    assert "0 completed, 8 already complete" in again.stdout  # the jobs' runs are the grid's runs


@pytest.mark.parametrize("executor, package, submitted, task_logs", [
    ("ray", "ray", "8 runs submitted to Ray", None),  # a local cluster
    ("slurm", "submitit", "8 runs submitted through submitit", "jobs/slurm/*_log.out"),  # no sbatch: local processes
])
def test_each_run_as_a_task_gives_the_board_of_one_process(toy_plugins_dir, toy_suite, tmp_path, executor, package,
                                                           submitted, task_logs):
    pytest.importorskip(package)
    suite = str(toy_suite())
    one = _dpbench(toy_plugins_dir, "run", suite, "--runs-dir", str(tmp_path / "one"), cwd=tmp_path)
    assert one.returncode == 0, one.stderr[-2000:]
    tasks = _dpbench(toy_plugins_dir, "run", suite, "--runs-dir", str(tmp_path / executor), "--executor", executor,
                     cwd=tmp_path)
    assert tasks.returncode == 0, tasks.stdout[-2000:] + tasks.stderr[-2000:]
    assert submitted in tasks.stdout and f"toy: 8 of 8 runs done ({executor})" in tasks.stdout
    assert _rows(tmp_path / executor) == _rows(tmp_path / "one")
    if task_logs:
        assert list((tmp_path / executor / "toy").glob(task_logs))


def test_bad_shard_and_jobs_fail_in_one_line_naming_the_option(toy_plugins_dir, toy_suite, tmp_path):
    suite = str(toy_suite())
    for args, expected in ((["--shard", "3/2"], "--shard: '3/2' is not allowed; expected K/N with 1 <= K <= N"),
                           (["--shard", "half"], "--shard: 'half' is not allowed"),
                           (["--shard", "1/2", "--jobs", "2"], "--jobs: 2 is not allowed; expected 1 with --shard"),
                           (["--executor", "ray", "--jobs", "2"], "--executor: 'ray' is not allowed; expected local")):
        out = _dpbench(toy_plugins_dir, "run", suite, *args, "--runs-dir", str(tmp_path / "runs"), cwd=tmp_path)
        assert out.returncode == 2 and expected in out.stderr, out.stderr
