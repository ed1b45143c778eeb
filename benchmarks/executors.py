"""The smoke suite under each grid executor, side by side in one run: wall time against a single
process, and whether every executor gives the same board.

Each executor starts from an empty runs folder (nothing cached), one after the other:
``local`` (one process), ``local`` with one intra-op thread (``OMP_NUM_THREADS=1``: what each
of two jobs or Ray tasks gets on two cores), ``--jobs 2``, ``--shard 1/2`` then ``--shard 2/2``
(what two Slurm array tasks would run, here one after the other), and ``--executor ray`` (a
local cluster). The board rows compared are the methods' metrics, ε from the ledger and run
counts; ``largest_metric_difference`` is the largest difference of a metric's mean from the
single process's board (and from the one-thread process's).

``.venv/bin/python benchmarks/executors.py`` writes ``results/executors.json``. Nothing else may
run meanwhile: the ratios are what this machine's cores give each executor.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SUITE = ROOT / "suites" / "smoke.yaml"
EXECUTORS = {"local": [[]], "local, 1 thread": [[]], "jobs 2": [["--jobs", "2"]],
             "shard 1/2 + 2/2": [["--shard", "1/2"], ["--shard", "2/2"]], "ray": [["--executor", "ray"]]}
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run(runs_dir: Path, calls: list[list[str]], extra_env: dict) -> float:
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **extra_env}
    start = time.perf_counter()
    for extra in calls:
        out = subprocess.run([sys.executable, "-m", "dpbench", "run", str(SUITE), "--runs-dir", str(runs_dir), *extra],
                             env=env, capture_output=True, text=True, cwd=ROOT)
        if out.returncode != 0:
            raise SystemExit(f"{extra} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return time.perf_counter() - start


def rows(runs_dir: Path) -> list:
    board = json.loads((runs_dir / "smoke" / "board" / "smoke.json").read_text())
    return [(r["method"], r["epsilon"], r["metrics"], r["epsilon_ledger"], r["runs"]) for r in board["rows"]]


def largest_difference(a: list, b: list) -> float:
    """The largest |difference| of a metric's mean between two boards' matching rows."""
    means = [(x[2][m]["mean"], y[2][m]["mean"]) for x, y in zip(a, b, strict=True) for m in x[2]]
    return max((abs(u - v) for u, v in means if u is not None and v is not None), default=0.0)


def main() -> None:
    seconds, boards = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, calls in EXECUTORS.items():
            runs_dir = Path(tmp) / name.replace(" ", "_").replace("/", "-")
            seconds[name] = run(runs_dir, calls, ONE_THREAD if name == "local, 1 thread" else {})
            boards[name] = rows(runs_dir)
            print(f"{name}: {seconds[name]:.1f} s", flush=True)
    record = {
        "suite": "suites/smoke.yaml",
        "cpus": os.cpu_count(),
        "seconds": seconds,
        "ratio_to_local": {name: seconds[name] / seconds["local"] for name in seconds},
        "same_board_as_local": {name: boards[name] == boards["local"] for name in boards},
        "same_board_as_local_1_thread": {name: boards[name] == boards["local, 1 thread"] for name in boards},
        "largest_metric_difference": {name: {"vs local": largest_difference(boards[name], boards["local"]),
                                             "vs local, 1 thread": largest_difference(boards[name],
                                                                                      boards["local, 1 thread"])}
                                      for name in boards},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "executors.json").write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
