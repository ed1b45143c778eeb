"""The runner: dataset -> method (with calibrated privacy) -> evaluators, one run spec at a time.

Completed runs (a ``result.json`` with the same config hash) are skipped; an interrupted run
is resumed: its saved artifact, ledgered releases and method checkpoints are reused, nothing
is charged twice.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import shutil
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from dpbench.api import Evaluator, FederatedTextData, Method, RunContext, SyntheticTexts, build_config
from dpbench.api.config import config_dict
from dpbench.cache import SuiteCache
from dpbench.env import environment
from dpbench.errors import ConfigError, DpbenchError
from dpbench.plugins import get_registry, load_plugins
from dpbench.progress import Progress
from dpbench.results import RunResult, load_artifact, load_result, read_json, save_artifact, write_json
from dpbench.suite import PluginChoice, RunSpec, Suite

log = logging.getLogger("dpbench")
SAMPLES_SHOWN = 20


class RunFailed(DpbenchError):
    """A run raised; its traceback is in the run folder's ``error.json``."""


@dataclass
class SuiteReport:
    completed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


class Runner:
    """Runs a suite's grid; shares loaded datasets and the suite cache across runs."""

    def __init__(self, suite: Suite, *, progress: Progress | None = None, force: bool = False,
                 fail_fast: bool = False):
        self.suite, self.force, self.fail_fast = suite, force, fail_fast
        self.progress = progress
        self.cache = SuiteCache(suite.folder / "cache")
        self._datasets: dict[str, FederatedTextData] = {}
        self._environment: dict | None = None

    def run(self) -> SuiteReport:
        report = SuiteReport()
        overall = self.progress.add(f"suite {self.suite.name}", len(self.suite.runs)) if self.progress else None
        for spec in self.suite.runs:
            if self.progress:
                self.progress.describe(overall, f"suite {self.suite.name}: {spec.run_id.rsplit('__', 1)[0]}")
            try:
                status = self.run_one(spec)
                (report.completed if status == "completed" else report.skipped).append(spec.run_id)
            except KeyboardInterrupt:
                log.warning("interrupted during %s; re-run the same command to resume", spec.run_id)
                raise
            except Exception as err:  # one failing run must not lose the others
                report.failed[spec.run_id] = f"{type(err).__name__}: {err}"
                self._record_error(spec, err)
                if self.fail_fast:
                    raise
                log.error("run %s failed: %s", spec.run_id, err)
            if self.progress:
                self.progress.advance(overall)
        return report

    def run_one(self, spec: RunSpec) -> str:
        """Run (or resume, or skip) one spec; returns "completed" or "skipped"."""
        folder = self.suite.folder / spec.run_id
        done = load_result(folder)
        if done is not None and not self.force and done.spec.get("config_hash") == spec.config_hash:
            log.info("skipping %s: already complete", spec.run_id)
            return "skipped"
        if folder.exists() and self.force:
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "error.json").unlink(missing_ok=True)
        write_json(folder / "spec.json", {**spec.to_dict(), "suite_config": self.suite.config,
                                          "overrides": list(self.suite.overrides)})
        write_json(folder / "env.json", self._env())
        with _log_to(folder / "log.txt"):
            result = self._execute(spec, folder)
        write_json(folder / "result.json", result.to_dict())
        load_plugins().hook.run_finished(run=spec, result=result)
        return "completed"

    # ------------------------------------------------------------ the pipeline

    def _execute(self, spec: RunSpec, folder: Path) -> RunResult:
        timings: dict[str, float] = {}
        start = time.perf_counter()
        data = self.dataset(spec.dataset)
        timings["dataset_s"] = time.perf_counter() - start
        method = self.method(spec)
        method_cls = type(method)
        method_data = data.for_method()

        evaluators = self.evaluators(spec)
        ctx = RunContext(run_id=spec.run_id, seed=spec.seed, output_dir=folder, budget=spec.budget,
                         cache=self.cache, device=_device(spec.device), log=log, progress=self.progress)
        ctx.downstream = lambda: next((path for _, e in evaluators
                                       if (path := e.initial_model(method_data, ctx)) is not None), None)
        privacy = self._privacy(spec, method_cls, method.mechanism(method_data), data, folder, ctx)

        artifact = load_artifact(folder)
        if artifact is None:
            log.info("%s: running method %s", spec.run_id, spec.method.label)
            t0 = time.perf_counter()
            artifact = method.run(method_data, ctx)
            save_artifact(folder, artifact)
            timings["method_s"] = time.perf_counter() - t0
        else:
            log.info("%s: reusing the method's saved output", spec.run_id)
        if isinstance(artifact, SyntheticTexts) and artifact.texts:
            rng = ctx.rng("samples-shown")
            picked = sorted(rng.choice(len(artifact.texts), size=min(SAMPLES_SHOWN, len(artifact.texts)), replace=False))
            write_json(folder / "samples.json", [artifact.texts[i] for i in picked])

        metrics, metric_specs, versions = {}, {}, {
            f"dataset/{spec.dataset.label}": spec.dataset.version, f"method/{spec.method.label}": spec.method.version}
        for choice, evaluator in evaluators:
            t0 = time.perf_counter()
            scores = evaluator.evaluate(artifact, data, ctx)
            metrics[choice.label] = _check_scores(choice.label, evaluator, scores)
            metric_specs[choice.label] = {m.name: {"higher_is_better": m.higher_is_better, "description": m.description}
                                          for m in evaluator.metrics}
            versions[f"evaluator/{choice.label}"] = choice.version
            timings[f"evaluate_{choice.label}_s"] = time.perf_counter() - t0
        if privacy.get("session") is not None:
            privacy["epsilon_spent"] = privacy.pop("session").epsilon_spent()
            from dpbench.privacy import read_ledger

            privacy["releases"] = read_ledger(folder / "ledger.jsonl")
        timings["total_s"] = time.perf_counter() - start
        return RunResult(
            run_id=spec.run_id, suite=spec.suite, spec=spec.to_dict(), metrics=metrics, metric_specs=metric_specs,
            versions=versions, privacy=privacy, timings=timings, data=data.summary(),
            finished_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        )

    def _privacy(self, spec, method_cls, mechanism, data, folder, ctx) -> dict:
        """Calibrate the method's declared mechanism to the budget and open its session."""
        base = {"target_epsilon": spec.epsilon, "delta": spec.delta, "accountant": spec.accountant}
        if method_cls.reference is not None:
            if mechanism is not None:
                raise DpbenchError(f"reference method {spec.method.plugin!r} must not declare a mechanism")
            return {**base, "reference": method_cls.reference, "epsilon_spent": spec.epsilon}
        if mechanism is None:
            raise DpbenchError(f"method {spec.method.plugin!r} declared no DP mechanism (Method.mechanism returned None)")
        if spec.delta >= 1 / data.num_clients:
            raise ConfigError("privacy.delta", spec.delta,
                              f"a number below 1/num_clients = 1/{data.num_clients} for dataset {spec.dataset.label!r}")
        from dpbench.privacy import calibrate_noise_multiplier, open_session

        stored = folder / "privacy.json"
        if stored.exists():  # resumed: the calibration is part of the run's record
            sigma = read_json(stored)["noise_multiplier"]
        else:
            sigma = calibrate_noise_multiplier(mechanism, epsilon=spec.epsilon, delta=spec.delta, accountant=spec.accountant)
            write_json(stored, {**base, "mechanism": config_dict(mechanism), "noise_multiplier": sigma})
        ctx.privacy = open_session(mechanism, noise_multiplier=sigma, budget=spec.budget, run_dir=folder,
                                   seed=spec.seed, accountant=spec.accountant)
        log.info("%s: noise multiplier %.4g for ε=%g, δ=%g over %d rounds at q=%g (%s)", spec.run_id, sigma,
                 spec.epsilon, spec.delta, mechanism.rounds, mechanism.sampling_rate, spec.accountant)
        return {**base, "mechanism": config_dict(mechanism), "noise_multiplier": sigma, "session": ctx.privacy}

    def method(self, spec: RunSpec) -> Method:
        """The configured method instance of ``spec``."""
        method_cls = get_registry("method").get(spec.method.plugin)
        return method_cls(build_config(method_cls.config_class, spec.method.options, where=f"methods.{spec.method.label}"))

    def evaluators(self, spec: RunSpec) -> list[tuple[PluginChoice, Evaluator]]:
        """``(choice, configured instance)`` for each evaluator of ``spec``."""
        evaluators = []
        for choice in spec.evaluators:
            evaluator_cls = get_registry("evaluator").get(choice.plugin)
            evaluators.append((choice, evaluator_cls(
                build_config(evaluator_cls.config_class, choice.options, where=f"evaluators.{choice.label}"))))
        return evaluators

    def dataset(self, choice: PluginChoice) -> FederatedTextData:
        """The loaded, checked dataset of ``choice``; loaded once per suite."""
        key = json.dumps([choice.plugin, choice.options, choice.version], sort_keys=True)
        if key not in self._datasets:
            from dpbench.datacheck import check_data

            cls = get_registry("dataset").get(choice.plugin)
            dataset = cls(build_config(cls.config_class, choice.options, where=f"datasets.{choice.label}"))
            data = dataset.load(self.cache)
            check_data(choice.label, data)
            self._datasets[key] = data
        return self._datasets[key]

    def _env(self) -> dict:
        if self._environment is None:
            self._environment = environment()
        return self._environment

    def _record_error(self, spec: RunSpec, err: BaseException) -> None:
        folder = self.suite.folder / spec.run_id
        if folder.exists():
            write_json(folder / "error.json", {"error": f"{type(err).__name__}: {err}",
                                               "traceback": traceback.format_exc()})


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


def _device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


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
