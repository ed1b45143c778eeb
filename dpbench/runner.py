"""The runner: dataset -> method (with calibrated privacy) -> evaluators, one run spec at a time.

Completed runs (a ``result.json`` with the same config hash and a sound ledger) are skipped;
an interrupted run is resumed: its saved artifact, ledgered releases and method checkpoints
are reused, nothing is charged twice. A run whose records disagree (a lost or torn ledger
line, a changed output) is set aside under ``<suite>/.damaged/`` and redone from scratch.
Each run folder has one writer: a second ``dpbench run`` of the same suite leaves the runs
another process holds to it, does the rest, then waits for those.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import math
import shutil
import time
import traceback
from collections.abc import Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from dpbench.api import Evaluator, FederatedTextData, Method, MethodData, RunContext, SyntheticTexts, TrainedModel
from dpbench.api.config import config_dict
from dpbench.api.method import REFERENCE_EPSILON
from dpbench.builtin.references import NonPrivate, PublicOnly, SyntheticPublic
from dpbench.cache import SuiteCache
from dpbench.datacheck import check_datasets, check_delta
from dpbench.env import environment
from dpbench.errors import ConfigError, DamagedRunError, DpbenchError, PrivacyMisuseError, did_you_mean
from dpbench.files import write_json
from dpbench.plugins import get_registry, load_plugins
from dpbench.privacy.ledger import (
    LEDGER_NAME,
    LedgerError,
    check_ledger,
    epsilon_from_ledger,
    read_ledger,
    run_ledger_problems,
)
from dpbench.progress import Progress
from dpbench.results import (
    ENV_NAME,
    VALIDATION_SCORE,
    PrivacyRecord,
    RunResult,
    load_artifact,
    load_result,
    save_artifact,
    saved_method_seconds,
    validation_scored,
)
from dpbench.suite import PluginChoice, RunSpec, Suite

if TYPE_CHECKING:
    from dpbench.privacy.session import Session

log = logging.getLogger("dpbench")
SAMPLES_SHOWN = 20
CANARY_REFERENCES = 999  # a canary is ranked among 1,000 candidates: ranked 1st by chance 0.1% of the time
LOCKED = "locked"
SCORINGS = ("test", "validation")


@dataclass
class SuiteReport:
    completed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def shard(runs: Sequence[RunSpec], index: int, count: int) -> list[RunSpec]:
    """Shard ``index`` of ``count`` (1-based) of a grid: every ``count``-th run from the
    ``index``-th, so each shard gets its share of every method (and of the grid's cost)."""
    if not (isinstance(index, int) and isinstance(count, int) and 1 <= index <= count):
        raise ConfigError("shard", f"{index}/{count}", "K/N with 1 <= K <= N, e.g. 2/4")
    return list(runs[index - 1::count])


ONLY_FIELDS = {
    "dataset": lambda spec: spec.dataset.label, "method": lambda spec: spec.method.label,
    "epsilon": lambda spec: f"{spec.epsilon:g}", "seed": lambda spec: str(spec.seed)}
"""what ``dpbench run --only KEY=VALUES`` selects on: KEY -> a run's value as text"""


def select(runs: Sequence[RunSpec], only: Sequence[str]) -> list[RunSpec]:
    """The runs matching every ``KEY=V1,V2`` of ``only`` (dataset and method labels, ε with
    ``inf`` for ∞, seeds): a part of the grid to run first, whose ids are the grid's."""
    chosen = list(runs)
    for item in only:
        key, sep, wanted = item.partition("=")
        key = key.strip()
        if not sep or key not in ONLY_FIELDS:
            raise ConfigError("--only", item, "KEY=V1,V2 with KEY one of " + ", ".join(ONLY_FIELDS) + "."
                              + did_you_mean(key, ONLY_FIELDS))
        grid = sorted({ONLY_FIELDS[key](spec) for spec in runs})
        picked = set()
        for value in (v.strip() for v in wanted.split(",")):
            value = f"{float(value):g}" if key == "epsilon" and _is_number(value) else value
            if value not in grid:
                raise ConfigError(f"--only {key}", value, "one of the grid's: " + ", ".join(grid) + "."
                                  + did_you_mean(value, grid))
            picked.add(value)
        chosen = [spec for spec in chosen if ONLY_FIELDS[key](spec) in picked]
    if not chosen:
        raise ConfigError("--only", " ".join(only), "a selection that leaves at least one run of the grid")
    return chosen


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def finished(done: RunResult | None, spec: RunSpec, *, validation: bool = False) -> bool:
    """Whether ``done`` (a folder's result) is ``spec`` finished: the same config, scored on the
    same split (test, or validation for tuning). Its ledger decides whether it is sound."""
    return (done is not None and validation_scored(done) == validation
            and done.spec.get("config_hash") == spec.config_hash)


RUN_STATES = {
    "complete": "finished and sound: skipped",
    "resumes": "interrupted: continues from what it saved",
    "rescored": "scored on the other split (a tuning's run on validation, a board's on test): its saved output "
                "is evaluated again",
    "redone": "damaged ledger (or --force): started afresh",
    "refused": "damaged, with noise other than seeded: only --force redoes it",
    "to run": "not started",
}
"""what ``dpbench run`` (or ``dpbench tune``) does with a run of the grid, by what its folder holds (``run_state``)"""


def run_state(folder: Path, spec: RunSpec, *, force: bool = False, validation: bool = False) -> str:
    """Which of ``RUN_STATES`` ``dpbench run`` (with ``--force`` or not) meets in ``spec``'s
    ``folder``; with ``validation``, what ``dpbench tune`` meets there."""
    if force and folder.exists():
        return "redone"
    done = load_result(folder)
    if finished(done, spec, validation=validation):
        if not run_ledger_problems(folder, done.privacy):
            return "complete"
        return "redone" if spec.noise == "seeded" else "refused"
    if done is not None and validation_scored(done) != validation:
        return "rescored"
    return "resumes" if folder.exists() else "to run"


class Runner:
    """Runs a suite's grid (or ``runs``, a part of it: a shard); shares loaded datasets and the
    runs folder's cache across runs. ``scoring="validation"`` (``dpbench tune``) scores each run
    with the first evaluator's ``validation_score`` instead of its test metrics: the test split
    is never read. A finished run scored the other way is evaluated again from its saved output
    (the method does not run again)."""

    def __init__(self, suite: Suite, *, progress: Progress | None = None, force: bool = False,
                 fail_fast: bool = False, scoring: str = "test", runs: Sequence[RunSpec] | None = None):
        if scoring not in SCORINGS:
            raise ValueError(f"scoring: {scoring!r} is not one of {', '.join(SCORINGS)}")
        self.suite, self.force, self.fail_fast, self.scoring = suite, force, fail_fast, scoring
        self.runs = list(suite.runs if runs is None else runs)
        self.progress = progress
        self.cache = SuiteCache(suite.cache_dir)
        self._datasets: dict[str, FederatedTextData] = {}
        self._environment: dict | None = None
        self._started = time.time()

    def run(self) -> SuiteReport:
        """Check every dataset (sizes, δ < 1/clients) before any run, then run the grid."""
        datasets = len({spec.dataset.label for spec in self.suite.runs})
        with self.progress.phase(f"loading and checking {datasets} dataset(s)") if self.progress else nullcontext():
            check_datasets(self.suite, self.dataset)
        self.check_yardstick_here()
        report = SuiteReport()
        overall = self.progress.add(f"suite {self.suite.name}", len(self.runs)) if self.progress else None
        try:
            held_elsewhere = [spec for spec in self.runs
                              if self._attempt(spec, report, overall, wait=False) == LOCKED]
            for spec in held_elsewhere:
                log.warning("waiting for the other dpbench process running %s", spec.run_id)
                self._attempt(spec, report, overall, wait=True)
        finally:  # a finished suite's row must not stay open under the next one's (a tuning runs many)
            if self.progress:
                self.progress.remove(overall)
        return report

    def check_yardstick_here(self) -> None:
        """Refuse, before any work, to add runs that the board would refuse: runs already in the
        suite folder were made on a machine that differs from this one in native bf16 (so
        ``bf16: auto`` would run every model here at another precision), or were scored against
        an evaluator model built on another machine that this machine would not read but rebuild
        (``leaderboard.yardsticks``). Every run in the folder counts, not only this grid's: a grid
        narrowed by an override (one ε) shares its board with the rest."""
        from dpbench.cache import built_on, this_machine
        from dpbench.leaderboard import UNNOTED, by_native_bf16, collect, describe_builders, yardsticks
        from dpbench.models.precision import native_bf16

        runs = collect(self.suite.folder)
        here = native_bf16("cpu")
        if other := by_native_bf16(runs).get(not here):
            raise DpbenchError(
                f"{self.suite.folder} holds {len(other)} runs made on a machine {'without' if here else 'with'} "
                f"native bf16 (e.g. {other[0]}; its env.json names the machine), and this one "
                f"{'has' if here else 'lacks'} it: `bf16: auto` would run the generators and the evaluator at "
                f"another precision here, and the board refuses to mix them. Run the suite on a machine like "
                f"theirs, or give --runs-dir another folder to measure the suite afresh")
        devices = {spec.dataset.label: _device(spec.device) for spec in self.suite.runs}
        for dataset, entries in yardsticks(runs).items():
            if dataset not in devices:
                continue
            for entry, machines in entries.items():
                device = devices[dataset]
                here = this_machine(device) if entry == UNNOTED else built_on(self.cache.root / entry, device)
                if set(machines) != {here}:
                    raise DpbenchError(
                        f"{self.suite.folder} holds runs on {dataset!r} scored against {entry} built on "
                        f"{describe_builders(machines)}; runs made here would be scored against one built on "
                        f"{here}, and the board refuses to mix them. Run the suite on that machine, keep the "
                        f"entry with the board's records (leaderboards/README.md), or give --runs-dir another "
                        f"folder to measure the suite afresh")

    def _attempt(self, spec: RunSpec, report: SuiteReport, overall, *, wait: bool) -> str | None:
        if self.progress:
            self.progress.describe(overall, f"suite {self.suite.name}: {spec.run_id.rsplit('__', 1)[0]}")
        status = None
        try:
            status = self.run_one(spec, wait=wait)
            if status == LOCKED:
                log.warning("%s is being run by another dpbench process; doing the other runs first", spec.run_id)
                return status
            (report.completed if status == "completed" else report.skipped).append(spec.run_id)
        except KeyboardInterrupt:
            log.warning("interrupted during %s; re-run the same command to resume", spec.run_id)
            raise
        except Exception as err:  # one failing run must not lose the others
            report.failed[spec.run_id] = f"{type(err).__name__}: {err}"
            self._record_error(spec, err)
            _tell_failed(spec, err, self.suite.folder / spec.run_id)
            if self.fail_fast:
                raise
            log.error("run %s failed: %s", spec.run_id, err)
        if self.progress:
            self.progress.advance(overall)
        return status

    def run_one(self, spec: RunSpec, *, wait: bool = True) -> str:
        """Run (or resume, or skip) one spec under its folder's lock; returns "completed",
        "skipped", or "locked" when another process holds it and ``wait`` is false."""
        from filelock import FileLock, Timeout

        locks = self.suite.folder / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        lock = FileLock(locks / f"{spec.run_id}.lock")
        try:
            lock.acquire(timeout=-1 if wait else 0)
        except Timeout:
            return LOCKED
        try:
            return self._run_locked(spec)
        finally:
            lock.release()

    def _run_locked(self, spec: RunSpec) -> str:
        folder = self.suite.folder / spec.run_id
        done = load_result(folder)
        fresh = done is not None and (folder / "result.json").stat().st_mtime >= self._started
        if finished(done, spec, validation=self.scoring == "validation") and (not self.force or fresh):
            problems = run_ledger_problems(folder, done.privacy)
            if not problems:
                log.info("skipping %s: already complete%s", spec.run_id, " (by another process)" if fresh else "")
                return "skipped"
            self._set_aside(spec, folder, problems)
        if folder.exists() and self.force:
            shutil.rmtree(folder)
        try:
            return self._start(spec, folder)
        except DamagedRunError as err:
            self._set_aside(spec, folder, [str(err)])
            return self._start(spec, folder)

    def _start(self, spec: RunSpec, folder: Path) -> str:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "error.json").unlink(missing_ok=True)
        write_json(folder / "spec.json", {**spec.to_dict(), "suite_config": self.suite.config,
                                          "overrides": list(self.suite.overrides)})
        write_json(folder / ENV_NAME, self._env())
        with _log_to(folder / "log.txt"):
            result = self._execute(spec, folder)
        write_json(folder / "result.json", result.to_dict())
        load_plugins().hook.run_finished(run=spec, result=result, folder=folder)
        return "completed"

    def _set_aside(self, spec: RunSpec, folder: Path, problems: list[str]) -> None:
        """Move a damaged attempt to ``<suite>/.damaged/`` (kept for inspection, on no board) so
        the run is redone from scratch. Seeded noise only: a redo releases exactly the values the
        attempt released, while a secure-noise redo would draw fresh noise on the same data, a
        second release the new ledger would not charge — that needs a person's decision."""
        reason = "; ".join(problems)
        if spec.noise != "seeded":
            raise DamagedRunError(f"{spec.run_id} is damaged ({reason}). With secure noise a redo draws new "
                                  f"releases of the same data, which no ledger would charge; inspect {folder}, then "
                                  f"re-run with --force and count the earlier releases yourself")
        if not folder.exists():
            return
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
        target = self.suite.folder / ".damaged" / f"{folder.name}-{stamp}"
        log.warning("%s is damaged (%s); it is redone from scratch and the old attempt kept in %s",
                    folder.name, reason, target)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(folder), str(target))
        write_json(target / "damage.json", {"problems": problems})

    # ------------------------------------------------------------ the pipeline

    def _execute(self, spec: RunSpec, folder: Path) -> RunResult:
        timings: dict[str, float] = {}
        start = time.perf_counter()
        data = self.dataset(spec.dataset)
        timings["dataset_s"] = time.perf_counter() - start
        method = self.method(spec)
        method_cls = type(method)
        method_data = data.for_method()
        if REFERENCE_EPSILON.get(method_cls.reference) == 0:
            method_data = MethodData(clients={}, validation=data.validation, public=data.public)

        evaluators = self.evaluators(spec)
        ctx = RunContext(run_id=spec.run_id, seed=spec.seed, output_dir=folder, budget=spec.budget,
                         cache=self.cache.for_run(folder), device=_device(spec.device), log=log, progress=self.progress,
                         reporter=functools.partial(_report_progress, spec))
        if method_cls.trains_downstream_model:
            ctx.downstream_model = _downstream_model(evaluators, method_data, ctx)
        if evaluators:
            scorer = evaluators[0][1]
            ctx.validation_scorer = lambda artifact: scorer.validation_score(artifact, method_data, ctx)
        privacy, session = self._privacy(spec, method, method.mechanism(method_data), data, folder, ctx)

        artifact, notes = load_artifact(folder), []
        fresh = artifact is None
        if fresh:
            log.info("%s: running method %s", spec.run_id, spec.method.label)
            t0 = time.perf_counter()
            artifact = _run_method(spec, method, method_data, ctx)
            timings["method_s"] = time.perf_counter() - t0
            if isinstance(artifact, TrainedModel) and not method_cls.trains_downstream_model:
                raise DpbenchError(f"method {spec.method.plugin!r} returned a TrainedModel but does not set "
                                   f"Method.trains_downstream_model, so it was handed no downstream model to train")
        else:
            log.info("%s: reusing the method's saved output", spec.run_id)
            if (earlier := saved_method_seconds(folder)) is not None:
                timings["method_s"] = earlier
                notes.append("the method's output was saved by an earlier attempt: timings.method_s is what "
                             "making it cost then, not part of total_s")
        if session is not None:  # the session opened here, whatever the method did to ctx.privacy
            _check_spent(spec, folder, privacy, session)
            privacy.releases = read_ledger(folder / LEDGER_NAME)
            privacy.epsilon_spent = epsilon_from_ledger(folder, delta=spec.delta, accountant=spec.accountant)
        if fresh:
            save_artifact(folder, artifact, method_s=timings["method_s"])
        checks = {}
        if data.info.get("canaries"):
            checks["canaries"] = _canary_check(spec, artifact, data.info["canaries"], ctx)
        if isinstance(artifact, SyntheticTexts) and artifact.texts:
            rng = ctx.rng("samples-shown")
            picked = sorted(rng.choice(len(artifact.texts), size=min(SAMPLES_SHOWN, len(artifact.texts)),
                                       replace=False))
            write_json(folder / "samples.json", [artifact.texts[i] for i in picked])

        metrics, metric_specs, versions = {}, {}, {
            f"dataset/{spec.dataset.label}": spec.dataset.version, f"method/{spec.method.label}": spec.method.version}
        for choice, evaluator in evaluators[:1] if self.scoring == "validation" else evaluators:
            t0 = time.perf_counter()
            if self.scoring == "validation":
                metrics[choice.label] = {VALIDATION_SCORE: evaluator.validation_score(artifact, method_data, ctx)}
                metric_specs[choice.label] = {VALIDATION_SCORE: {
                    "higher_is_better": True, "description": f"{evaluator.primary_metric} on the validation split"}}
                notes.append("scored on the validation split only (dpbench tune): the test split was not read")
            else:
                metrics[choice.label] = _check_scores(choice.label, evaluator, evaluator.evaluate(artifact, data, ctx))
                metric_specs[choice.label] = {m.name: {"higher_is_better": m.higher_is_better,
                                                       "description": m.description} for m in evaluator.metrics}
            versions[f"evaluator/{choice.label}"] = choice.version
            timings[f"evaluate_{choice.label}_s"] = time.perf_counter() - t0
        timings["total_s"] = time.perf_counter() - start
        return RunResult(
            run_id=spec.run_id, suite=spec.suite, spec=spec.to_dict(), metrics=metrics, metric_specs=metric_specs,
            versions=versions, privacy=asdict(privacy), timings=timings, data=data.summary(), checks=checks,
            finished_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            output_texts=len(artifact.texts) if isinstance(artifact, SyntheticTexts) else None, notes=notes,
        )

    def _privacy(self, spec, method, mechanism, data, folder, ctx) -> tuple[PrivacyRecord, Session | None]:
        """Calibrate the method's declared mechanism to the budget and open its session (also
        handed to the method as ``ctx.privacy``); returns the run's privacy record and the session."""
        method_cls = type(method)
        record = PrivacyRecord(target_epsilon=spec.epsilon, delta=spec.delta, accountant=spec.accountant,
                               noise=spec.noise)
        if method_cls.reference is not None:
            if method_cls not in (PublicOnly, NonPrivate, SyntheticPublic):
                raise DpbenchError(f"method {spec.method.plugin!r} sets Method.reference, which only dpbench's "
                                   f"built-in reference rows may do; a method declares a mechanism instead")
            if mechanism is not None:
                raise DpbenchError(f"reference method {spec.method.plugin!r} must not declare a mechanism")
            record.reference, record.epsilon_spent = method_cls.reference, spec.epsilon
            return record, None
        if mechanism is None:
            raise DpbenchError(f"method {spec.method.plugin!r} declared no DP mechanism "
                               "(Method.mechanism returned None)")
        check_delta(spec.dataset.label, data, spec.delta)
        from dpbench.privacy import calibrate_noise_multiplier, open_session

        if not read_ledger(folder / LEDGER_NAME) and (_has_files(folder / "state")
                                                      or (folder / "artifact.json").exists()):
            raise LedgerError(f"{folder}: the method's checkpoints or output exist but its ledger is missing or empty")
        record.mechanism = config_dict(mechanism)
        record.noise_multiplier = calibrate_noise_multiplier(mechanism, epsilon=spec.epsilon, delta=spec.delta,
                                                             accountant=spec.accountant)
        write_json(folder / "privacy.json", {k: v for k, v in asdict(record).items() if k != "releases"})
        session = open_session(mechanism, noise_multiplier=record.noise_multiplier, budget=spec.budget, run_dir=folder,
                               clients=sorted(data.clients), noise=spec.noise,
                               seed=spec.seed if spec.noise == "seeded" else None, accountant=spec.accountant,
                               agreement=method.release_agreement, report=ctx.reporter)
        ctx.privacy = session
        log.info("%s: noise multiplier %.4g for ε=%g, δ=%g over %d rounds at q=%g (%s, %s noise)", spec.run_id,
                 record.noise_multiplier, spec.epsilon, spec.delta, mechanism.rounds, mechanism.sampling_rate,
                 spec.accountant, spec.noise)
        return record, session

    def method(self, spec: RunSpec) -> Method:
        """The configured method instance of ``spec``."""
        return _instance("method", spec.method)

    def evaluators(self, spec: RunSpec) -> list[tuple[PluginChoice, Evaluator]]:
        """``(choice, configured instance)`` for each evaluator of ``spec``."""
        return [(choice, _instance("evaluator", choice)) for choice in spec.evaluators]

    def dataset(self, choice: PluginChoice) -> FederatedTextData:
        """The loaded, checked dataset of ``choice``; loaded once per runner."""
        key = json.dumps([choice.plugin, choice.options, choice.version], sort_keys=True)
        if key not in self._datasets:
            self._datasets[key] = _instance("dataset", choice).load(self.cache)
        return self._datasets[key]

    def _env(self) -> dict:
        if self._environment is None:
            self._environment = environment()
        return self._environment

    def _record_error(self, spec: RunSpec, err: BaseException) -> None:
        folder = self.suite.folder / spec.run_id
        if not folder.exists():
            return
        try:
            write_json(folder / "error.json", {"error": f"{type(err).__name__}: {err}",
                                               "traceback": traceback.format_exc()})
        except OSError as write_err:  # a full disk must not stop the other runs
            log.error("could not write %s: %s", folder / "error.json", write_err)


def _instance(kind: str, choice: PluginChoice):
    """The plugin of ``choice`` built with its options (validated once, when the suite loaded)."""
    if choice.config is None:
        raise DpbenchError(f"{kind} {choice.label!r} has no validated options (a run spec read back from JSON): "
                           f"load the suite with dpbench.suite.load_suite to run it")
    return get_registry(kind).get(choice.plugin)(choice.config)


def _downstream_model(evaluators, data: MethodData, ctx: RunContext) -> Path:
    """The first evaluator's model a method may train (``Evaluator.initial_model``)."""
    for _choice, evaluator in evaluators:
        if (path := evaluator.initial_model(data, ctx)) is not None:
            return path
    raise DpbenchError("this method trains the downstream model itself, but none of the suite's evaluators provides "
                       "one (an evaluator with initial_model, such as next_token): "
                       + ", ".join(choice.label for choice, _ in evaluators))


def _has_files(folder: Path) -> bool:
    return folder.is_dir() and any(p.is_file() for p in folder.rglob("*"))


def _check_spent(spec: RunSpec, folder: Path, privacy: PrivacyRecord, session: Session) -> None:
    """Before a run is called complete: its ledger is sound and holds every declared release."""
    made, declared = len(session.records), privacy.mechanism["rounds"]
    problems = check_ledger(folder, mechanism=privacy.mechanism, noise_multiplier=privacy.noise_multiplier,
                            complete=False, records=session.records)
    if problems:
        raise LedgerError(f"{spec.run_id}: " + "; ".join(problems))
    if made != declared:
        raise PrivacyMisuseError(
            f"method {spec.method.plugin!r} made {made} of the {declared} releases its mechanism declared; a run "
            f"with ε < ∞ spends its budget through ctx.privacy, and is complete only once every release is made")


def _canary_check(spec: RunSpec, artifact, canaries: list[str], ctx: RunContext) -> dict:
    """How much of the planted canary text the method's output gives away (``dpbench.canaries``)."""
    from dpbench.canaries import canary_report, reference_canaries

    tokenizer = ctx.initial_model() if isinstance(artifact, TrainedModel) else None
    report = canary_report(artifact, canaries, reference_canaries(CANARY_REFERENCES, seed=spec.seed),
                           tokenizer_dir=tokenizer, device=ctx.device)
    if report["flagged"]:
        log.warning("%s: the output gives away planted canary text (%s of %d verbatim, best rank %d of %d)",
                    spec.run_id, report["verbatim"], report["canaries"], report["best_rank"], report["candidates"])
    return report


def _check_scores(label: str, evaluator: Evaluator, scores) -> dict[str, float]:
    declared = {m.name for m in evaluator.metrics}
    if not isinstance(scores, dict) or set(scores) != declared:
        got = sorted(scores) if isinstance(scores, dict) else type(scores).__name__
        raise DpbenchError(f"evaluator {label!r} returned metrics {got}, but declares {sorted(declared)}")
    clean = {}
    for name, value in scores.items():
        value = float(value)
        if math.isnan(value):
            raise DpbenchError(f"evaluator {label!r} returned NaN for {name!r}")
        clean[name] = value
    return clean


def _run_method(spec: RunSpec, method, data: MethodData, ctx: RunContext):
    """``method.run``, under the suite's client runtime: a run with clients and a privacy
    session runs as a Flower federation under ``runtime: flower`` (the reference rows, which
    federate nothing, run in process)."""
    if spec.runtime != "flower" or ctx.privacy is None or not data.clients:
        return method.run(data, ctx)
    import torch

    from dpbench.federation import FlowerClients

    ctx.clients = FlowerClients(list(data.clients), threads=torch.get_num_threads())
    log.info("%s: the clients' steps run on %d Flower nodes", spec.run_id, len(data.clients))
    return ctx.clients.execute(lambda: method.run(data, ctx))


def _device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _report_progress(spec: RunSpec, step: int, entry: dict) -> None:
    """Hand round ``step`` of run ``spec`` to the publishers (``run_progress``); one that fails
    is logged, never allowed to stop the run."""
    try:
        load_plugins().hook.run_progress(run=spec, step=step, entry=entry)
    except Exception as err:  # a live view going down must not cost the run
        log.warning("%s: round %d not published live (%s: %s)", spec.run_id, step, type(err).__name__, err)


def _tell_failed(spec: RunSpec, err: Exception, folder: Path) -> None:
    """Tell the publishers run ``spec`` failed (``run_failed``); one that fails doing so is
    logged, never allowed to stop the suite."""
    try:
        load_plugins().hook.run_failed(run=spec, error=err, folder=folder)
    except Exception as hook_err:
        log.warning("%s: its failure not published (%s: %s)", spec.run_id, type(hook_err).__name__, hook_err)


@contextmanager
def _log_to(path: Path):
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("dpbench")
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
