"""The ``dpbench`` command line. Imports stay inside commands so ``--help`` is instant."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from dpbench import __version__

KINDS = ("datasets", "methods", "evaluators")
EXECUTORS = ("local", "ray", "slurm")


class LazyGroup(click.Group):
    """Subcommands defined in other modules, imported only when invoked or listed."""

    lazy = {"privacy": "dpbench.privacy.cli:privacy", "audit": "dpbench.privacy.cli:audit"}

    def list_commands(self, ctx):
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx, name):
        if name in self.lazy:
            import importlib

            module, _, attr = self.lazy[name].partition(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dpbench")
@click.option("--plugins-dir", type=click.Path(file_okay=False),
              help="Also load every *.py in this folder as a plugin.")
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
def cli(plugins_dir, verbose):
    """Compare differentially private methods for federated text at the same (ε, δ)."""
    import logging

    from rich.logging import RichHandler

    handler = RichHandler(console=_console(), show_path=False, show_time=False)
    logger = logging.getLogger("dpbench")
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not logger.handlers:
        handler.setLevel(logging.DEBUG if verbose else logging.WARNING)
        logger.addHandler(handler)
    if plugins_dir:
        from dpbench.plugins import load_plugins, load_plugins_dir

        load_plugins()
        load_plugins_dir(plugins_dir)


def _console():
    from rich.console import Console

    return Console(stderr=True)


def _load(suite, overrides, runs_dir=None, *, runnable_here=False):
    """The loaded suite; ``runnable_here``: also refuse what this machine cannot run."""
    from dpbench.suite import check_machine, load_suite

    loaded = load_suite(suite, overrides, runs_dir=runs_dir)
    if runnable_here:
        check_machine(loaded)
    return loaded


def _fail(err) -> None:
    click.echo(f"Error: {err}", err=True)
    sys.exit(2)


@cli.command()
@click.argument("suite", type=click.Path(dir_okay=False))
@click.argument("overrides", nargs=-1)
@click.option("--runs-dir", type=click.Path(file_okay=False),
              help="Where run folders go (default: the suite's runs_dir or ./runs).")
@click.option("--leaderboards-dir", type=click.Path(file_okay=False),
              help="Where the board goes (default: board/ in the suite's run folder; the committed boards in "
                   "leaderboards/ change only when asked, here or with `dpbench leaderboard`).")
@click.option("--force", is_flag=True, help="Redo runs that are already complete (discarding their folders).")
@click.option("--fail-fast", is_flag=True, help="Stop at the first failing run.")
@click.option("--wandb", "use_wandb", is_flag=True, help="Publish runs and the leaderboard to Weights & Biases.")
@click.option("--dry-run", is_flag=True, help="Validate and list the runs (of --shard) without running them: what "
              "running would do with each (runner.RUN_STATES) and the time the rest would take.")
@click.option("--shard", metavar="K/N", help="Run only the K-th of N shares of the grid (every N-th run from the "
              "K-th), e.g. one per Slurm array task; shards may run at once, on machines sharing the runs folder.")
@click.option("--only", multiple=True, metavar="KEY=V1,V2",
              help="Run only the grid's runs with these datasets, methods, ε (inf for ∞) or seeds, e.g. "
                   "--only method=pe_sft,dp_ftrl --only epsilon=7: a part to run first, with the grid's run ids "
                   "(the board still counts the whole grid). Repeat to narrow further.")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Run the grid as N processes at once on this machine (--shard k/N each, with 1/N of the CPU "
                   "threads); their logs go to <suite folder>/jobs/.")
@click.option("--executor", type=click.Choice(EXECUTORS), default="local", show_default=True,
              help="local: this process (or --jobs processes); ray: each run a Ray task on --ray-address; "
                   "slurm: each run a task of a Slurm job array (submitit; local processes without sbatch).")
@click.option("--ray-address", help="The Ray cluster for --executor ray ('auto': the one this machine belongs to; "
              "default: a local cluster of this machine's CPUs). Its workers must see the runs folder.")
@click.option("--cpus-per-run", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="CPUs each Ray or Slurm task declares (a run on device: cuda also declares one GPU).")
@click.option("--slurm-partition", help="The Slurm partition for --executor slurm.")
def run(suite, overrides, runs_dir, leaderboards_dir, force, fail_fast, use_wandb, dry_run, shard, only, jobs,
        executor, ray_address, cpus_per_run, slurm_partition):
    """Run SUITE (a YAML file) with optional Hydra-style OVERRIDES, e.g. privacy.epsilon=[1,7] seeds=3."""
    from dpbench.errors import ConfigError, DpbenchError

    _quiet_libraries()
    given = overrides
    if use_wandb:
        from dpbench.suite import PUBLISH_OVERRIDE

        overrides = (*overrides, PUBLISH_OVERRIDE)
    try:
        loaded = _load(suite, overrides, runs_dir, runnable_here=True)
        if shard and jobs > 1:
            raise ConfigError("--jobs", jobs, "1 with --shard (a job is itself a shard)")
        if executor != "local" and (jobs > 1 or force):
            raise ConfigError("--executor", executor, "local with --jobs or --force (Ray and Slurm run each run as "
                              "its own task, and a forced run must not race another task for its folder)")
        if executor == "ray" and loaded.config.get("runtime") == "flower":
            raise ConfigError("--executor", executor, "local or slurm with runtime: flower (Flower's simulation "
                              "starts its own Ray cluster, which cannot run inside a Ray task)")
        part = _shard_runs(loaded, shard, only)
    except DpbenchError as err:
        _fail(err)
    if dry_run:
        _print_plan(loaded, part, force=force)
        return

    from dpbench.tuning import reuse_tuning_runs

    if not force:
        for run_id in reuse_tuning_runs(loaded, part):
            click.echo(f"{run_id}: the tuning's run of this setting (made on a machine like this one), scored on test")

    if jobs > 1:
        failed = _run_jobs(loaded, suite, given, jobs, force=force, fail_fast=fail_fast, use_wandb=use_wandb,
                           only=only)
    elif executor != "local":
        failed = _run_as_tasks(loaded, suite, overrides, part, executor=executor, address=ray_address,
                               cpus_per_run=cpus_per_run, partition=slurm_partition)
    else:
        from dpbench.progress import Progress
        from dpbench.runner import Runner

        with Progress(_console()) as progress:
            report = Runner(loaded, progress=progress, force=force, fail_fast=fail_fast, runs=part).run()
        click.echo(f"{loaded.name}{f' shard {shard}' if shard else ''}: {len(report.completed)} completed, "
                   f"{len(report.skipped)} already complete, {len(report.failed)} failed; run folders in "
                   f"{loaded.folder}")
        for run_id, error in report.failed.items():
            click.echo(f"  failed {run_id}: {error}", err=True)
        failed = bool(report.failed)
    try:
        paths = _write_leaderboard(loaded, Path(leaderboards_dir) if leaderboards_dir else loaded.folder / "board")
        click.echo("leaderboard: " + ", ".join(str(p) for p in paths))
    except DpbenchError as err:
        click.echo(f"no leaderboard written: {err}", err=True)
    if failed:
        sys.exit(1)


def _shard_runs(loaded, shard: str | None, only: tuple[str, ...] = ()):
    """The runs ``--only`` selects (all of them without it), and of those ``--shard K/N``'s
    (None: the whole grid)."""
    import re

    from dpbench.errors import ConfigError
    from dpbench.runner import select
    from dpbench.runner import shard as shard_of

    runs = select(loaded.runs, only) if only else None
    if shard is None:
        return runs
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", shard)
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise ConfigError("--shard", shard, "K/N with 1 <= K <= N, e.g. 2/4")
    return shard_of(loaded.runs if runs is None else runs, int(match[1]), int(match[2]))


def _run_as_tasks(loaded, suite, overrides, part, *, executor: str, address: str | None, cpus_per_run: float,
                  partition: str | None) -> bool:
    """``--executor ray|slurm``: each run of the grid (or shard) a task; whether any failed."""
    from dpbench.executors import run_on_ray, run_on_slurm

    runs = loaded.runs if part is None else part
    plugins_dir = click.get_current_context().find_root().params.get("plugins_dir")
    common = dict(runs_dir=loaded.folder.parent.resolve(), run_ids=[spec.run_id for spec in runs],
                  plugins_dir=str(Path(plugins_dir).resolve()) if plugins_dir else None, cpus_per_run=cpus_per_run,
                  gpus_per_run=1.0 if any(s.device == "cuda" for s in runs) else 0.0, echo=click.echo)
    if executor == "ray":
        failed = run_on_ray(str(Path(suite).resolve()), overrides, address=address, **common)
    else:
        failed = run_on_slurm(str(Path(suite).resolve()), overrides, folder=loaded.folder.resolve() / "jobs" / "slurm",
                              partition=partition, **common)
    click.echo(f"{loaded.name}: {len(runs) - len(failed)} of {len(runs)} runs done ({executor}); run folders in "
               f"{loaded.folder}")
    for run_id, error in failed.items():
        click.echo(f"  failed {run_id}: {error}", err=True)
    return bool(failed)


def _run_jobs(loaded, suite, overrides, jobs: int, *, force: bool, fail_fast: bool, use_wandb: bool,
              only: tuple[str, ...] = ()) -> bool:
    """``--jobs N``: the grid as N shard processes (``dpbench.executors``); whether any failed."""
    from dpbench.executors import dpbench_command, run_jobs

    root = click.get_current_context().find_root().params
    command = dpbench_command(*(["--plugins-dir", root["plugins_dir"]] if root.get("plugins_dir") else []),
                              *(["--verbose"] if root.get("verbose") else []), "run", str(suite), *overrides,
                              "--runs-dir", str(loaded.folder.parent),
                              *(["--force"] if force else []), *(["--fail-fast"] if fail_fast else []),
                              *(arg for item in only for arg in ("--only", item)),
                              *(["--wandb"] if use_wandb else []))

    def complete():
        return sum((loaded.folder / spec.run_id / "result.json").exists() for spec in loaded.runs), len(loaded.runs)

    status = run_jobs(command, jobs, log_dir=loaded.folder / "jobs", complete=complete, echo=click.echo)
    done, total = complete()
    click.echo(f"{loaded.name}: {jobs} jobs done, {done}/{total} runs complete; run folders in {loaded.folder}")
    return any(status.values())


def _quiet_libraries() -> None:
    """dpbench draws its own progress bars: silence the libraries' tqdm bars and info chatter."""
    import os

    for var, value in (("TQDM_DISABLE", "1"), ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
                       ("TRANSFORMERS_VERBOSITY", "error")):
        os.environ.setdefault(var, value)


@cli.command()
@click.argument("tuning", type=click.Path(dir_okay=False))
@click.option("--runs-dir", type=click.Path(file_okay=False),
              help="Where run folders go (default: the suite's runs_dir or ./runs).")
@click.option("--out", type=click.Path(dir_okay=False),
              help="The record's path without suffix (default: tuning in the tuning runs' folder); "
                   "e.g. leaderboards/tuning/sotu-eps7 to commit it beside the boards.")
@click.option("--method", "methods", multiple=True, metavar="LABEL",
              help="Run only this method's settings (repeatable): a part of a long tuning to run first; the "
                   "record keeps the other methods' finished settings, and the bare command runs the rest.")
@click.option("--dry-run", is_flag=True, help="Validate and list the settings without running them, with what "
              "running would do with each setting's runs (runner.RUN_STATES, or 'from the board': the board's "
              "run of the suite's setting, scored on validation).")
def tune(tuning, runs_dir, out, methods, dry_run):
    """Tune each method of a suite with the same budget, on the validation split only.

    TUNING is a YAML file naming the suite, the ε and seed, the budget (settings per method, the
    suite's own included) and each method's search space; see ``dpbench.tuning``."""
    from dpbench.errors import DpbenchError
    from dpbench.suite import check_machine
    from dpbench.tuning import board_folder, chosen_methods, load_tuning, run_states, tuning_suites, untuned
    from dpbench.tuning import tune as run_tuning

    _quiet_libraries()
    try:
        plan = load_tuning(tuning)
        planned = tuning_suites(plan, runs_dir=runs_dir)
        for _, suite in planned:
            check_machine(suite)
        left_out = untuned(plan, runs_dir=runs_dir)
        labels = chosen_methods(plan, methods)
    except DpbenchError as err:
        _fail(err)
    if left_out:
        click.echo(f"not tuned by {tuning} (they keep the suite's setting): {', '.join(left_out)}")
    if dry_run:
        from collections import Counter

        board = board_folder(plan, runs_dir=runs_dir)
        for setting, suite in planned:
            if setting.method in labels:
                states = Counter(run_states(suite, board if setting.own else None).values())
                click.echo(f"{setting}: {len(suite.runs)} run(s) in {suite.folder}: "
                           + ", ".join(f"{count} {state}" for state, count in sorted(states.items())))
        return
    import shlex

    from dpbench.progress import Progress

    target = Path(out) if out else planned[0][1].folder / "tuning"
    command = plan.command + "".join(f" {flag} {shlex.quote(str(value))}" for flag, value in
                                     (("--runs-dir", runs_dir), ("--out", out)) if value)
    with Progress(_console()) as progress:
        record = run_tuning(plan, runs_dir=runs_dir, progress=progress, out=target, command=command,
                            methods=methods)
    paths = [target.with_suffix(".json"), target.with_suffix(".md")]
    click.echo(paths[1].read_text(encoding="utf-8"))
    click.echo("record: " + ", ".join(str(p) for p in paths))
    if any("error" in row for row in record["settings"]):
        sys.exit(1)


def _board(loaded, include_all=False):
    """The completed runs of ``loaded``'s grid (every run in its folder with ``include_all``)
    and their board."""
    from dpbench import leaderboard

    runs = leaderboard.collect(loaded.folder, None if include_all else {r.run_id for r in loaded.runs})
    done = {result.run_id for _, result in runs}
    unfinished = [{"run_id": r.run_id, "dataset": r.dataset.label, "method": r.method.label, "epsilon": r.epsilon,
                   "seed": r.seed} for r in loaded.runs if r.run_id not in done]
    return runs, leaderboard.build(loaded.name, runs, loaded.metric, command=loaded.command, unfinished=unfinished,
                                   claims=loaded.claims)


def _write_leaderboard(loaded, folder, include_all=False, *, html=False):
    from dpbench import leaderboard
    from dpbench.plugins import load_plugins

    runs, board = _board(loaded, include_all)
    paths = leaderboard.write(board, folder)
    if html:
        paths += _write_page(paths[1], folder, runs)
    _console().print(leaderboard.render_markdown(board), markup=False, highlight=False)
    load_plugins().hook.leaderboard_written(suite=loaded, leaderboard=board, paths=paths)
    return paths


def _distinct(labels) -> str:
    return ", ".join(dict.fromkeys(labels))


def _print_runs(loaded, runs=None, *, states: dict[str, str] | None = None) -> None:
    """``runs`` (default: the grid), each with its state when ``states`` (``runner.run_state``) is given."""
    from rich.table import Table

    runs = loaded.runs if runs is None else runs
    table = Table(title=f"{loaded.name}: {len(runs)} runs", show_lines=False)
    for column in ("run id", "dataset", "method", "ε", "δ", "seed", *(("status",) if states else ())):
        table.add_column(column)
    for spec in runs:
        table.add_row(spec.run_id, spec.dataset.label, spec.method.label, spec.budget.label, f"{spec.delta:g}",
                      str(spec.seed), *((states[spec.run_id],) if states else ()))
    _console().print(table)


def _print_plan(loaded, runs, *, force: bool) -> None:
    """``--dry-run``: the runs with what running would do with each (a tuning's run of an adopted
    setting is copied and rescored), the time the rest would take, and whether this machine would
    be refused (another machine's evaluator model)."""
    from dpbench.errors import DpbenchError
    from dpbench.runner import Runner, run_state
    from dpbench.tuning import tuning_runs

    runs = loaded.runs if runs is None else runs
    states = {spec.run_id: run_state(loaded.folder / spec.run_id, spec, force=force) for spec in runs}
    tuned = {} if force else tuning_runs(loaded, runs)
    states |= dict.fromkeys(tuned, "rescored")
    _print_runs(loaded, runs, states=states)
    click.echo(_remaining(loaded, runs, states, tuned))
    if tuned:
        click.echo(f"{len(tuned)} run(s) are a tuning's, made on a machine like this one: copied from "
                   f"{', '.join(sorted({p.parent.name for p in tuned.values()}))} and scored on test, not run again")
    try:
        Runner(loaded).check_yardstick_here()
    except DpbenchError as err:
        click.echo(f"Running here would be refused: {err}")
    others = _other_run_folders(loaded)
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        click.echo(f"{len(others)} run folder(s) in {loaded.folder} are no run of this grid (another method "
                   f"version, setting, seed or ε, or left out by an override): {shown}")


def _other_run_folders(loaded) -> list[str]:
    """Run folders (those with a ``spec.json``) in the suite folder that no run of its grid names:
    what a method's new version or a changed setting left behind, which a board never reads."""
    names = {spec.run_id for spec in loaded.runs}
    if not loaded.folder.is_dir():
        return []
    return sorted(p.name for p in loaded.folder.iterdir() if p.name not in names and (p / "spec.json").is_file())


def _remaining(loaded, runs, states: dict[str, str], tuned: dict[str, Path]) -> str:
    """How many of ``runs`` are complete, and about how long the rest would take one after
    another: each at the median recorded time of finished runs of its dataset and method in the
    suite folder (the median, because a run paused or sharing the machine records more than it
    cost; a resuming run counts whole), made on this machine where there are such runs, since
    machines can differ twofold or more in speed; else on the machines that made them, which the line
    names. A rescored run costs only the evaluation its saved result (in ``tuned``, a tuning's
    folder, or its own) recorded."""
    import statistics

    from dpbench.cache import this_machine
    from dpbench.results import load_result, run_machine

    seconds: dict[tuple[str, str], list[tuple[str | None, float]]] = {}
    for spec in loaded.runs:
        done = load_result(loaded.folder / spec.run_id)
        if done is not None and (total := done.timings.get("total_s")) is not None:
            machine = run_machine(loaded.folder / spec.run_id)
            seconds.setdefault((spec.dataset.label, spec.method.label), []).append((machine, total))
    here = this_machine("cpu")
    left = [spec for spec in runs if states[spec.run_id] != "complete"]
    estimates, elsewhere = [], set()
    for spec in left:
        if states[spec.run_id] == "rescored":
            done = load_result(tuned.get(spec.run_id, loaded.folder / spec.run_id))
            estimates.append(sum(s for name, s in done.timings.items() if name.startswith("evaluate_")))
        elif (timed := seconds.get((spec.dataset.label, spec.method.label))) is not None:
            times = [total for machine, total in timed if machine == here]
            if not times:
                times = [total for _, total in timed]
                elsewhere.update(machine or "an unrecorded machine" for machine, _ in timed)
            estimates.append(statistics.median(times))
    line = f"{loaded.name}: {len(runs) - len(left)} of {len(runs)} runs complete, {len(left)} to do"
    if estimates:
        line += (f"; ≈ {_duration(sum(estimates))} for {len(estimates)} of them, one after another, at the median "
                 f"recorded time of finished runs of their dataset and method (a rescored run: its evaluation)")
        if elsewhere:
            line += (f", some timed only on {', '.join(sorted(elsewhere))}, not on this {here}, and machines "
                     f"can differ twofold or more in speed")
    unknown = len(left) - len(estimates)
    return line + (f" ({unknown} with none finished to go by)" if unknown else "")


def _duration(seconds: float) -> str:
    """``2 h 05 min``, ``7 min`` or ``< 1 min``."""
    minutes = round(seconds / 60)
    if minutes < 1:
        return "< 1 min"
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


@cli.command()
@click.argument("suite", type=click.Path(dir_okay=False))
@click.argument("overrides", nargs=-1)
@click.option("--runs-dir", type=click.Path(file_okay=False),
              help="Where run folders go (default: the suite's runs_dir or ./runs); the data is cached there, "
                   "as a run would.")
@click.option("--no-data", is_flag=True, help="Check the suite's structure only; do not load its datasets.")
def validate(suite, overrides, runs_dir, no_data):
    """Check SUITE without running it: plugin names, options, privacy budget, seeds, that this
    machine can run it (device: cuda, backend: vllm), and (unless --no-data) each dataset's
    files, clients and splits, and δ < 1/num_clients."""
    from dpbench.errors import DpbenchError

    try:
        loaded = _load(suite, overrides, runs_dir, runnable_here=True)
        _print_runs(loaded)
        if not no_data:
            from dpbench.datacheck import check_datasets
            from dpbench.runner import Runner

            for label, counts in check_datasets(loaded, Runner(loaded).dataset).items():
                click.echo(f"{label}: {counts['clients']} clients, {counts['train_texts']} texts, "
                           f"{counts['test_texts']} test, {counts['validation_texts']} validation, "
                           f"{counts['public_texts']} public")
    except DpbenchError as err:
        _fail(err)
    click.echo(f"{suite}: valid, {len(loaded.runs)} runs" + (" (data not checked)" if no_data else ""))


@cli.command(name="list")
@click.argument("kind", required=False, type=click.Choice((*KINDS, "suites")))
@click.option("--suites-dir", default="suites", show_default=True, type=click.Path(file_okay=False),
              help="Where `list suites` looks for suite files.")
def list_(kind, suites_dir):
    """List registered datasets, methods and evaluators (and the plugin that registered each),
    or with ``suites`` the suite files in --suites-dir (what each runs)."""
    from rich.table import Table

    from dpbench.plugins import get_registry

    if kind == "suites":
        _list_suites(suites_dir)
        return
    for name in [kind] if kind else KINDS:
        registry = get_registry(name[:-1])
        table = Table(title=name)
        table.add_column("name")
        table.add_column("plugin")
        for entry in registry.names():
            table.add_row(entry, registry.origin(entry))
        _console().print(table)


def _list_suites(folder: str) -> None:
    """One row per suite file in ``folder``: its grid, or why it does not load."""
    from rich.table import Table

    from dpbench.errors import DpbenchError

    files = sorted(Path(folder).glob("*.yaml"))
    if not files:
        _fail(f"no suite files (*.yaml) in {folder!r}; pass --suites-dir")
    table = Table(title=f"suites in {folder}")
    for column in ("suite", "runs", "datasets", "methods", "ε", "seeds", "description"):
        table.add_column(column)
    for file in files:
        try:
            loaded = _load(file, ())
        except DpbenchError as err:
            table.add_row(file.as_posix(), "", "", "", "", "", f"does not load: {err}")
            continue
        specs = loaded.runs
        table.add_row(file.as_posix(), str(len(specs)), _distinct(s.dataset.label for s in specs),
                      _distinct(s.method.label for s in specs), _distinct(s.budget.label for s in specs),
                      str(len({s.seed for s in specs})), str(loaded.config.get("description", "")))
    _console().print(table)


@cli.command()
@click.argument("name")
def show(name):
    """Show the dataset, method or evaluator NAME: what it is, and each option a suite can set
    (methods.NAME.OPTION) with its type, default and meaning."""
    import inspect

    from rich.table import Table

    from dpbench.api.config import option_docs
    from dpbench.errors import UnknownNameError
    from dpbench.plugins import get_registry

    found = [(kind[:-1], get_registry(kind[:-1])) for kind in KINDS]
    found = [(kind, registry) for kind, registry in found if name in registry]
    if not found:
        every = [entry for kind in KINDS for entry in get_registry(kind[:-1]).names()]
        _fail(UnknownNameError("dataset, method or evaluator", name, every))
    for kind, registry in found:
        cls = registry.get(name)
        console = _console()
        console.print(f"{kind} {name} ({cls.__module__}.{cls.__qualname__}, plugin {registry.origin(name)})",
                      markup=False, highlight=False)
        console.print(inspect.cleandoc(cls.__doc__ or ""), markup=False, highlight=False)
        if citation := getattr(cls, "citation", "").strip():
            console.print("Cite:\n" + citation, markup=False, highlight=False)
        options = option_docs(cls.config_class)
        if not options:
            console.print("(no options)")
            continue
        table = Table(title=f"options ({kind}s.{name}.<option> in a suite)", show_lines=True)
        for column in ("option", "type", "default", "meaning"):
            table.add_column(column)
        for option in options:
            table.add_row(option.name, option.type, option.default, option.doc)
        console.print(table)


@cli.group()
def new():
    """Start a new plugin from a working template."""


@new.command(name="method")
@click.argument("name")
@click.option("--out", "parent", default=".", show_default=True, type=click.Path(file_okay=False),
              help="Folder to write the package dpbench-NAME into.")
def new_method(name, parent):
    """Write dpbench-NAME/, an installable method plugin (entry point, options, a DP method
    that works, its contract test); install it with `pip install -e dpbench-NAME`."""
    from dpbench.errors import DpbenchError
    from dpbench.scaffold import new_method as write

    try:
        folder = write(name, Path(parent))
    except DpbenchError as err:
        _fail(err)
    click.echo(f"wrote {folder}\nnext: pip install -e {folder} && python -m pytest {folder / 'tests'} "
               f"&& dpbench show {name}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def plugins(as_json):
    """List every loaded plugin, its version and the hooks it implements."""
    from dpbench.plugins import ENTRY_POINT_GROUP, get_plugins

    found = get_plugins()
    if as_json:
        click.echo(json.dumps(found, indent=1))
        return
    from rich.table import Table

    table = Table(title=f"dpbench plugins (entry-point group {ENTRY_POINT_GROUP!r}; python {sys.executable})")
    for column in ("name", "version", "hooks"):
        table.add_column(column)
    for plugin in found:
        table.add_row(plugin["name"], plugin["version"] or "", ", ".join(plugin["hooks"]))
    _console().print(table)


@cli.command()
@click.argument("suite", type=click.Path(dir_okay=False))
@click.argument("overrides", nargs=-1)
@click.option("--runs-dir", type=click.Path(file_okay=False))
@click.option("--out", "out_dir", default="leaderboards", show_default=True, type=click.Path(file_okay=False))
@click.option("--all", "include_all", is_flag=True,
              help="Include every completed run in the suite folder, not only this grid's.")
@click.option("--html", is_flag=True,
              help="Also write <suite>.png (dpbench plot) and <suite>.html, one self-contained page: tables, plot, "
                   "each run's details, provenance.")
def leaderboard(suite, overrides, runs_dir, out_dir, include_all, html):
    """Collect SUITE's completed runs into leaderboards/<suite>.md, .json and .csv. With --html,
    SUITE may also be a committed board's .json, whose page is drawn from it and its .md."""
    from dpbench.errors import DpbenchError

    try:
        if html and Path(suite).suffix == ".json":
            paths = _write_page(Path(suite), Path(out_dir))
        else:
            loaded = _load(suite, overrides, runs_dir)
            paths = _write_leaderboard(loaded, Path(out_dir), include_all, html=html)
    except DpbenchError as err:
        _fail(err)
    click.echo("wrote " + ", ".join(str(p) for p in paths))


def _write_page(board_json, folder, runs=()) -> list:
    """``<suite>.png`` and ``<suite>.html`` of the board in ``board_json`` (its .md beside it)."""
    from dpbench.errors import DpbenchError
    from dpbench.files import read_json, write_text
    from dpbench.html import render_html
    from dpbench.plots import plot_board

    markdown = board_json.with_suffix(".md")
    if not board_json.is_file() or not markdown.is_file():
        raise DpbenchError(f"no board at {board_json} (with {markdown.name} beside it)")
    board = read_json(board_json)
    png = plot_board(board, folder / f"{board['suite']}.png")
    page = folder / f"{board['suite']}.html"
    write_text(page, render_html(board, markdown.read_text(encoding="utf-8"), list(runs), plot_png=png.read_bytes()))
    return [png, page]


@cli.command()
@click.argument("suite", type=click.Path(dir_okay=False))
@click.argument("overrides", nargs=-1)
@click.option("--runs-dir", type=click.Path(file_okay=False))
@click.option("--out", "out_dir", default="leaderboards", show_default=True, type=click.Path(file_okay=False))
@click.option("--epsilon", type=float, help="The ε of the gap-closed bars (default: the smallest finite ε).")
def plot(suite, overrides, runs_dir, out_dir, epsilon):
    """Plot SUITE's board into <out>/<suite>.png: per dataset, utility against ε with 95 %
    intervals and the reference rows, and the gap closed per method at one ε. SUITE may also
    be a board's .json (a committed board), plotted as it is."""
    from dpbench.errors import DpbenchError
    from dpbench.files import read_json
    from dpbench.plots import plot_board

    try:
        if Path(suite).suffix == ".json":
            if not Path(suite).is_file():
                _fail(f"no board file {suite}")
            board = read_json(Path(suite))
        else:
            loaded = _load(suite, overrides, runs_dir)
            board = _board(loaded)[1].to_dict()
        path = plot_board(board, Path(out_dir) / f"{board['suite']}.png", epsilon=epsilon)
    except DpbenchError as err:
        _fail(err)
    click.echo(f"wrote {path}")


@cli.command()
@click.argument("suite", type=click.Path(dir_okay=False))
@click.argument("overrides", nargs=-1)
@click.option("--runs-dir", type=click.Path(file_okay=False))
def publish(suite, overrides, runs_dir):
    """Publish SUITE's completed runs and leaderboard to Weights & Biases (offline without an API key)."""
    import tempfile

    from dpbench import leaderboard as lb
    from dpbench.builtin import wandb_publisher
    from dpbench.errors import DpbenchError
    from dpbench.suite import RunSpec

    try:
        loaded = _load(suite, overrides, runs_dir)
        runs, board = _board(loaded)
    except DpbenchError as err:
        _fail(err)
    settings = {**loaded.config.get("publish", {}), "wandb": True}
    sound = [(folder, result) for folder, result in runs if result.run_id not in board.incomplete]
    for run_id, why in board.incomplete.items():
        click.echo(f"not published (incomplete) {run_id}: {why}", err=True)
    for folder, result in sound:
        wandb_publisher.publish_run(RunSpec.from_dict(result.spec), result, settings=settings, folder=folder)
    with tempfile.TemporaryDirectory() as folder:  # the board's files, for its artifact
        wandb_publisher.publish_leaderboard(loaded, board, settings=settings, paths=lb.write(board, Path(folder)))
    click.echo(f"published {len(sound)} runs of {loaded.name}")


def main() -> None:
    from dpbench.errors import DpbenchError

    try:
        cli()
    except DpbenchError as err:
        _fail(err)


if __name__ == "__main__":
    main()
