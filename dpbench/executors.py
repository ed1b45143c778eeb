"""Running a suite's grid as several processes: ``dpbench run --jobs N`` on one machine.

Each job is ``dpbench run SUITE --shard k/N`` in a process of its own (``runner.shard``: every
N-th run), with its share of the CPU threads and, where ``CUDA_VISIBLE_DEVICES`` lists several
devices, one of them; its output goes to ``<suite folder>/jobs/shard-k-of-N.log``. The run
folders' locks keep any mix of jobs, shards and plain runs from doing a run twice, so a killed
``--jobs`` run resumes with the same command (or with any other executor).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

STATUS_INTERVAL_S = 30.0
"""how often the parent prints how far the grid is while its jobs run"""


def job_environment(index: int, jobs: int, environ=None) -> dict[str, str]:
    """The environment of job ``index`` (1-based) of ``jobs``: its share of the CPU threads
    (at least one), and one of several visible CUDA devices, round robin."""
    env = dict(os.environ if environ is None else environ)
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    devices = [d.strip() for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    if len(devices) > 1:
        env["CUDA_VISIBLE_DEVICES"] = devices[(index - 1) % len(devices)]
    return env


def run_jobs(command: Sequence[str], jobs: int, *, log_dir: Path, complete: Callable[[], tuple[int, int]],
             echo: Callable[[str], None]) -> dict[int, int]:
    """Start ``command + ["--shard", "k/jobs"]`` for k = 1…jobs and wait for all of them,
    echoing ``complete()`` (runs done, runs in the grid) every ``STATUS_INTERVAL_S``; returns
    each job's exit status. Interrupted, it passes the interrupt on to the jobs (each stops
    where a rerun resumes) and waits for them."""
    log_dir.mkdir(parents=True, exist_ok=True)
    running = {}
    for index in range(1, jobs + 1):
        log = log_dir / f"shard-{index}-of-{jobs}.log"
        with open(log, "w") as handle:
            running[index] = subprocess.Popen([*command, "--shard", f"{index}/{jobs}"], stdout=handle,
                                              stderr=subprocess.STDOUT, env=job_environment(index, jobs))
        echo(f"job {index}/{jobs} started (pid {running[index].pid}); its log: {log}")
    status: dict[int, int] = {}
    last = time.monotonic()
    try:
        while len(status) < jobs:
            time.sleep(0.5)
            for index, process in running.items():
                if index not in status and process.poll() is not None:
                    status[index] = process.returncode
                    echo(f"job {index}/{jobs} finished (exit status {process.returncode})")
            if time.monotonic() - last >= STATUS_INTERVAL_S and len(status) < jobs:
                last = time.monotonic()
                done, total = complete()
                echo(f"{time.strftime('%H:%M:%S')} {done}/{total} runs complete, {jobs - len(status)} jobs running")
    except KeyboardInterrupt:
        for process in running.values():
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in running.values():
            process.wait()
        raise
    return status


def dpbench_command(*args: str) -> list[str]:
    """``dpbench ARGS`` through this interpreter, as a job runs it."""
    return [sys.executable, "-m", "dpbench", *args]
