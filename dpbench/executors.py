"""Running a suite's grid as several processes: ``dpbench run --jobs N`` on one machine,
``--executor ray`` on a Ray cluster, or ``--executor slurm`` as a Slurm job array (submitit).

Each job is ``dpbench run SUITE --shard k/N`` in a process of its own (``runner.shard``: every
N-th run), with its share of the CPU threads and, where ``CUDA_VISIBLE_DEVICES`` lists several
devices, one of them; its output goes to ``<suite folder>/jobs/shard-k-of-N.log``. The run
folders' locks keep any mix of jobs, shards and plain runs from doing a run twice, so a killed
``--jobs`` run resumes with the same command (or with any other executor). Under Ray and Slurm
each run is a task of its own (``run_one_run``) with the CPUs and GPUs it declares.
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


def run_on_ray(suite: str, overrides: Sequence[str], *, runs_dir: Path, run_ids: Sequence[str],
               plugins_dir: str | None, address: str | None, cpus_per_run: float, gpus_per_run: float,
               echo: Callable[[str], None]) -> dict[str, str]:
    """Each run of ``run_ids`` as a Ray task declaring ``cpus_per_run`` CPUs and
    ``gpus_per_run`` GPUs, on the cluster at ``address`` (``"auto"``: the one this machine
    belongs to) or, without one, on a local cluster of this machine's CPUs; the runs folder must
    be one every worker sees. Returns ``{run_id: error}`` of the runs that failed."""
    try:
        import ray
    except ImportError as err:
        from dpbench.errors import DpbenchError

        raise DpbenchError("--executor ray needs ray: pip install 'dpbench[fl]' (flwr[simulation] brings it)") \
            from err
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(include_dashboard=False, object_store_memory=10**8, log_to_driver=False)
    try:
        task = ray.remote(num_cpus=cpus_per_run, num_gpus=gpus_per_run)(run_one_run)
        pending = {task.remote(suite, list(overrides), str(runs_dir), run_id, plugins_dir): run_id
                   for run_id in run_ids}
        echo(f"{len(pending)} runs submitted to Ray ({ray.cluster_resources().get('CPU', 0):g} CPUs in the cluster)")
        failed: dict[str, str] = {}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=STATUS_INTERVAL_S)
            for ref in ready:
                run_id = pending.pop(ref)
                try:
                    status = ray.get(ref)
                except ray.exceptions.RayError as err:
                    status = f"the Ray task failed: {err}"
                _settle(run_id, status, failed, left=len(pending), echo=echo)
            if not ready:
                echo(f"{time.strftime('%H:%M:%S')} {len(pending)} runs left")
        return failed
    finally:
        ray.shutdown()


def run_one_run(suite: str, overrides: list[str], runs_dir: str, run_id: str, plugins_dir: str | None) -> str:
    """Run ``run_id`` of ``suite`` in this process (a Ray worker, a Slurm task): "completed",
    "skipped" or its error."""
    from dpbench.plugins import load_plugins, load_plugins_dir
    from dpbench.runner import Runner
    from dpbench.suite import load_suite

    load_plugins()
    if plugins_dir:
        load_plugins_dir(plugins_dir)
    loaded = load_suite(suite, overrides, runs_dir=runs_dir)
    spec = next(spec for spec in loaded.runs if spec.run_id == run_id)
    report = Runner(loaded, runs=[spec]).run()
    if report.failed:
        return report.failed[run_id]
    return "completed" if report.completed else "skipped"


def run_on_slurm(suite: str, overrides: Sequence[str], *, runs_dir: Path, run_ids: Sequence[str],
                 plugins_dir: str | None, folder: Path, cpus_per_run: float, gpus_per_run: float,
                 partition: str | None, echo: Callable[[str], None]) -> dict[str, str]:
    """Each run of ``run_ids`` as one task of a Slurm job array through submitit (its logs and
    pickles under ``folder``), on ``partition``; where ``sbatch`` is not found, submitit runs the
    tasks as local processes, all at once. Returns ``{run_id: error}`` of the runs that failed."""
    try:
        import submitit
    except ImportError as err:
        from dpbench.errors import DpbenchError

        raise DpbenchError("--executor slurm needs submitit: pip install 'dpbench[cluster]'") from err
    executor = submitit.AutoExecutor(folder=folder)
    executor.update_parameters(cpus_per_task=max(1, round(cpus_per_run)), gpus_per_node=round(gpus_per_run),
                               timeout_min=7 * 24 * 60, name="dpbench",
                               **({"slurm_partition": partition} if partition else {}))
    with executor.batch():
        jobs = {run_id: executor.submit(run_one_run, suite, list(overrides), str(runs_dir), run_id, plugins_dir)
                for run_id in run_ids}
    echo(f"{len(jobs)} runs submitted through submitit ({executor.cluster}); logs under {folder}")
    failed: dict[str, str] = {}
    last = time.monotonic()
    while jobs:
        time.sleep(1.0)
        for run_id, job in list(jobs.items()):
            if job.done():
                del jobs[run_id]
                try:
                    status = job.result()
                except Exception as err:  # the task died: its error is what the board must not lose
                    status = f"the {executor.cluster} task failed: {type(err).__name__}: {err}"
                _settle(run_id, status, failed, left=len(jobs), echo=echo)
        if jobs and time.monotonic() - last >= STATUS_INTERVAL_S:
            last = time.monotonic()
            echo(f"{time.strftime('%H:%M:%S')} {len(jobs)} runs left")
    return failed


def _settle(run_id: str, status: str, failed: dict[str, str], *, left: int, echo: Callable[[str], None]) -> None:
    """Record a finished task's ``status`` (``run_one_run``'s answer, or why the task died) and say so."""
    if status not in ("completed", "skipped"):
        failed[run_id] = status
    echo(f"{time.strftime('%H:%M:%S')} {run_id}: {status}; {left} runs left")
