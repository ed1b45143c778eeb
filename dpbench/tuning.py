"""``dpbench tune``: the same tuning budget for every method, chosen on validation only.

A tuning file names a suite, the ε and seed(s) to tune at, a ``budget`` (settings tried per
method, the suite's own setting included) and each method's search space (option -> list of
values)::

    suite: ../suites/quickstart.yaml   # relative to the tuning file
    epsilon: 7
    seed: 0
    budget: 6
    methods:
      popri: {learning_rate: [5.0e-5, 2.0e-4, 5.0e-4], beta: [0.01, 0.1, 0.3]}
      pe: {variations_per_sample: [1, 2], iterations: [3, 5]}

Options that must move together are one key joined with ``+`` whose values are lists, one value
per option: ``samples_per_prompt+reject_rank: [[4, 2], [8, 3]]`` tries 8 samples a prompt only
with the 4th best rejected (the grid pairs values only as listed).

For each dataset and method the suite's own setting runs first, then ``budget - 1`` other
points of the space's grid (all of them when there are fewer; otherwise a sample seeded by
``seed`` and the method's label). Each setting runs at ``seeds`` seeds (``seed``, ``seed`` + 1,
…; default 1), each an ordinary run (resumable, ledgered) in the suite
``<suite>-tuning-eps<ε>`` beside the suite's own runs (the evaluator's pretrained model and
other caches are shared), scored by the suite's first evaluator on the validation split only
(``Evaluator.validation_score``): the test split is never read. ``tuning.json``/``.md`` name
every setting with its validation score (the mean over seeds), its paired difference from the
suite's setting (a 95 % t-interval over the seeds both ran, as on the boards) and its cost, and
the best per dataset and method. One seed screens a space cheaply; a second file with the
suite's setting and the screen's winner at ``seeds: 3`` (its seed-``seed`` runs are the screen's,
resumed) says whether the winner is better beyond seed noise.

A suite that adopts a tuning's winner changes what "the suite's setting" is, and with it the
grid's sample; ``baseline`` (method label -> {option: value}) pins the setting a file compared
against, so its record is still reproduced by its command after the adoption (and an ε = 1 screen
tries the same settings as the ε = 7 one it follows).

The suite's setting at the board's seed is the board's own run: when the suite's folder holds it
finished on a machine like this one, its saved output is scored on validation instead of running
the method again (``reuse_board_runs``). The other way, a winner the suite adopts is, at the
tuning's ε and seeds, the tuning's run: ``dpbench run`` copies it into the board's folder and
scores it on test (``reuse_tuning_runs``).

What tuning spends on the private data is not charged to the board's runs, as in the paper
and common practice; the comparison is fair because every method gets the same budget on the
same validation split.
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
from collections.abc import Collection, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dpbench.api.context import derive_seed
from dpbench.errors import ConfigError, did_you_mean

TUNING_KEYS = {
    "suite": "the suite file to tune (relative to the tuning file)",
    "epsilon": "the ε every setting runs at (a number > 0)",
    "seed": "the first run seed of every setting, and the grid sample's (default 0)",
    "seeds": "how many seeds each setting runs at: seed, seed + 1, ... (default 1)",
    "budget": "settings tried per method, the suite's own included (an integer >= 1)",
    "methods": "method label -> {option: [values]}",
    "baseline": "method label -> {option: value}: the setting compared against, when no longer the suite's",
    "description": "one line for the record",
}


_TUNING_FOLDER = "{suite}-tuning-eps{epsilon}"
"""the suite name (and runs folder) of a suite's tuning at one ε, beside the suite's own"""


@dataclass(frozen=True)
class Setting:
    """One method setting tried: the space's options at these values."""

    method: str
    values: Mapping[str, Any]
    own: bool
    """the suite's own setting (the baseline every search includes)"""

    def __str__(self) -> str:
        """``popri: {'beta': 0.1} (the suite's setting)``: as ``--dry-run`` lists it and a log names it."""
        return f"{self.method}: {dict(self.values)}" + (" (the suite's setting)" if self.own else "")


@dataclass(frozen=True)
class TuningPlan:
    """A validated tuning file."""

    path: Path
    suite: Path
    epsilon: float
    seed: int
    seeds: int
    """how many seeds each setting runs at, from ``seed``"""
    budget: int
    spaces: Mapping[str, Mapping[str, tuple]]
    description: str = ""
    baseline: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """method label -> {option: value} set on the suite before tuning (``TUNING_KEYS``)"""

    @property
    def name(self) -> str:
        """The suite name the tuning runs are kept under."""
        return _TUNING_FOLDER.format(suite=self.suite.stem, epsilon=f"{self.epsilon:g}")

    @property
    def command(self) -> str:
        return f"dpbench tune {self.path.as_posix()}"


def load_tuning(path: str | Path) -> TuningPlan:
    """Read and validate a tuning file; every error names the field and what is allowed."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError("tuning", str(path), "an existing tuning file")
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(raw, dict):
        raise ConfigError("tuning", str(path), "a mapping of " + ", ".join(TUNING_KEYS))
    for key in raw:
        if key not in TUNING_KEYS:
            raise ConfigError(key, raw[key], "one of the tuning keys: " + ", ".join(TUNING_KEYS) + "."
                              + did_you_mean(str(key), TUNING_KEYS))
    if not isinstance(raw.get("suite"), str):
        raise ConfigError("suite", raw.get("suite"), "the path of a suite file, relative to the tuning file")
    epsilon = raw.get("epsilon")
    if isinstance(epsilon, bool) or not isinstance(epsilon, int | float) or not 0 < epsilon < math.inf:
        raise ConfigError("epsilon", epsilon, "a finite number > 0 (tune at one ε of the board)")
    seed, seeds, budget = raw.get("seed", 0), raw.get("seeds", 1), raw.get("budget")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError("seed", seed, "an integer >= 0")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ConfigError("seeds", seeds, "an integer >= 1: how many seeds each setting runs at, from seed")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ConfigError("budget", budget, "an integer >= 1: settings tried per method, the suite's own included")
    methods = raw.get("methods")
    if not isinstance(methods, dict) or not methods:
        raise ConfigError("methods", methods, "a non-empty mapping of method label -> {option: [values]}")
    spaces = {}
    for label, space in methods.items():
        if not isinstance(space, dict) or not space:
            raise ConfigError(f"methods.{label}", space, "a non-empty mapping of option -> list of values")
        names = [name for option in space for name in _option_names(option)]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ConfigError(f"methods.{label}.{twice[0]}", twice[0], "an option named by one key of the space only")
        for option, values in space.items():
            if not isinstance(values, list) or not values or len(set(map(repr, values))) != len(values):
                raise ConfigError(f"methods.{label}.{option}", values, "a non-empty list of distinct values")
            joined = _option_names(option)
            if len(joined) > 1 and not all(isinstance(v, list) and len(v) == len(joined) for v in values):
                raise ConfigError(f"methods.{label}.{option}", values,
                                  f"a list of [{', '.join(joined)}] lists, one value per option")
        spaces[label] = {option: tuple(tuple(v) if len(_option_names(option)) > 1 else v for v in values)
                         for option, values in space.items()}
    baseline = raw.get("baseline") or {}
    if not isinstance(baseline, dict):
        raise ConfigError("baseline", baseline, "a mapping of method label -> {option: value}")
    for label, values in baseline.items():
        if label not in spaces:
            raise ConfigError(f"baseline.{label}", label, "a method the tuning file tunes: " + ", ".join(spaces)
                              + "." + did_you_mean(str(label), spaces))
        if not isinstance(values, dict) or not values:
            raise ConfigError(f"baseline.{label}", values, "a non-empty mapping of option -> value")
    return TuningPlan(path=path, suite=path.parent / raw["suite"], epsilon=float(epsilon), seed=seed, seeds=seeds,
                      budget=budget, spaces=spaces, description=str(raw.get("description", "")),
                      baseline=baseline)


def tuning_suites(plan: TuningPlan, *, runs_dir: str | Path | None = None) -> list[tuple[Setting, Any]]:
    """``[(setting, suite)]``: one single-method suite per setting tried, its runs at the plan's
    ε and seed (one per dataset of the tuned suite)."""
    from dpbench.suite import build_suite

    base, suite, overrides = _base_suite(plan, runs_dir)
    choices = {spec.method.label: spec.method for spec in suite.runs}
    out = []
    for label, space in plan.spaces.items():
        if label not in base.get("methods", {}):
            raise ConfigError(f"methods.{label}", label, f"a method of {plan.suite}: "
                              + ", ".join(sorted(base.get("methods", {}))) + "." + did_you_mean(label, base["methods"]))
        choice = choices[label]
        if _is_reference(choice.plugin):
            raise ConfigError(f"methods.{label}", label, "a private method: a reference row has nothing to tune")
        for option in [name for key in space for name in _option_names(key)] + list(plan.baseline.get(label, {})):
            if option not in choice.options:
                raise ConfigError(f"methods.{label}.{option}", option, f"an option of method {choice.plugin!r}: "
                                  + ", ".join(sorted(choice.options)) + "." + did_you_mean(option, choice.options))
        for values in settings(plan, label, choice.options):
            config = copy.deepcopy(base)
            config["name"] = plan.name
            config["methods"] = {label: {**base["methods"][label], **values}}
            config.pop("leaderboard", None)
            tried = build_suite(config, path=plan.suite, runs_dir=suite.runs_dir,
                                overrides=overrides + [f"methods.{label}.{k}={v!r}" for k, v in values.items()])
            out.append((Setting(method=label, values=values, own=all(values[k] == choice.options[k] for k in values)),
                        tried))
    return out


def board_folder(plan: TuningPlan, *, runs_dir: str | Path | None = None) -> Path:
    """The tuned suite's runs folder: where its board's runs of the suite's own setting are."""
    return _base_suite(plan, runs_dir)[1].folder


def run_states(suite, board: Path | None = None) -> dict[str, str]:
    """Run id -> what ``tune`` meets for each run of the tuning ``suite``: a ``runner.RUN_STATES``
    key, or ``"from the board"`` where ``board`` (the suite's own setting's board folder) holds
    the run to score on validation instead of running the method (``reuse_board_runs``)."""
    from dpbench.runner import run_state

    reused = _reusable(suite, [board], validation=False) if board is not None else {}
    return {spec.run_id: "from the board" if spec.run_id in reused
            else run_state(suite.folder / spec.run_id, spec, validation=True) for spec in suite.runs}


def untuned(plan: TuningPlan, *, runs_dir: str | Path | None = None) -> list[str]:
    """The suite's private methods the plan gives no search space: they keep the suite's
    setting, so a board comparing them with tuned ones compares unequal tuning."""
    _, suite, _ = _base_suite(plan, runs_dir)
    private = {spec.method.label for spec in suite.runs if not _is_reference(spec.method.plugin)}
    return sorted(private - set(plan.spaces))


def _base_suite(plan: TuningPlan, runs_dir: str | Path | None):
    """The tuned suite's composed config, the suite at the plan's ε, seeds and baseline, and those overrides."""
    from dpbench.suite import build_suite, compose

    overrides = [f"privacy.epsilon={plan.epsilon!r}", f"seeds={list(range(plan.seed, plan.seed + plan.seeds))}",
                 *(f"methods.{label}.{option}={value!r}"
                   for label, values in plan.baseline.items() for option, value in values.items())]
    base = compose(plan.suite, overrides)
    return base, build_suite(base, path=plan.suite, overrides=overrides, runs_dir=runs_dir), overrides


def settings(plan: TuningPlan, label: str, defaults: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The settings of method ``label`` to try: the suite's own (``defaults``) first, then up to
    ``budget - 1`` other points of the space's grid, sampled with a seed of their own."""
    space = plan.spaces[label]
    own = {name: defaults[name] for key in space for name in _option_names(key)}
    others = [_point(space, values) for values in itertools.product(*space.values())]
    others = [s for s in others if s != own]
    if len(others) > plan.budget - 1:
        import numpy as np

        rng = np.random.default_rng(derive_seed(plan.seed, f"tune/{label}"))
        others = [others[i] for i in sorted(rng.choice(len(others), plan.budget - 1, replace=False))]
    return [own, *others]


def _option_names(key) -> list[str]:
    """The options a space's key names: one, or those it joins with ``+``."""
    return str(key).split("+")


def _point(space: Mapping[str, tuple], values: tuple) -> dict[str, Any]:
    """One grid point as option -> value, a ``+``-joined key's values spread over its options."""
    point = {}
    for key, value in zip(space, values, strict=True):
        names = _option_names(key)
        point.update(zip(names, value, strict=True) if len(names) > 1 else {key: value})
    return point


def _is_reference(plugin: str) -> bool:
    from dpbench.plugins import get_registry

    return get_registry("method").get(plugin).reference is not None


def tune(plan: TuningPlan, *, runs_dir: str | Path | None = None, progress=None, out: Path | None = None,
         command: str | None = None, methods: Collection[str] | None = None) -> dict:
    """Run every setting (resuming finished ones) and return the record (see ``write_record``);
    with ``out``, the record so far is written there after each setting (hours of tuning show
    their results as they come, and an interrupted tuning leaves its record). ``methods``: run
    only these methods' settings; the others' finished runs stay in the record, unrun ones are
    left for a later call."""
    from dpbench.runner import Runner

    left_out, planned = untuned(plan, runs_dir=runs_dir), tuning_suites(plan, runs_dir=runs_dir)
    labels, board = chosen_methods(plan, methods), board_folder(plan, runs_dir=runs_dir)
    failed: dict[str, str] = {}
    ran: set[int] = set()
    row = progress.add(f"tuning {plan.name}", sum(s.method in labels for s, _ in planned)) if progress else None
    try:
        for index, (setting, suite) in enumerate(planned):
            if setting.method not in labels:
                continue
            if setting.own:
                reuse_board_runs(suite, board)
            with progress.phase(str(setting)) if progress else nullcontext():
                failed |= Runner(suite, progress=progress, scoring="validation").run().failed
            ran.add(index)
            if progress:
                progress.advance(row)
            if out is not None:
                write_record(_record_so_far(plan, planned, ran, failed, left_out, command), out)
    finally:  # an interrupted tuning's log says how far it got
        if progress:
            progress.remove(row)
    record = _record_so_far(plan, planned, ran, failed, left_out, command)
    if out is not None:
        write_record(record, out)
    return record


def _record_so_far(plan: TuningPlan, planned: list, ran: set[int], failed: dict[str, str], left_out: list[str],
                   command: str | None) -> dict:
    """The record of every setting of ``planned`` run in this call (indexes ``ran``) or finished
    before it, wherever it comes in the plan's order: a tuning stopped in one method's part keeps
    the others' settings in its record."""
    from dpbench.results import load_result, run_machine

    rows, tried, folder = [], 0, None
    for index, (setting, suite) in enumerate(planned):
        results = {spec.run_id: load_result(suite.folder / spec.run_id) for spec in suite.runs}
        if index not in ran and all(result is None for result in results.values()):
            continue
        tried, folder = tried + 1, suite.folder
        for spec in suite.runs:
            result = results[spec.run_id]
            rows.append({
                "dataset": spec.dataset.label, "method": setting.method, "values": dict(setting.values),
                "suite_setting": setting.own, "seed": spec.seed, "run_id": spec.run_id,
                "validation_score": None if result is None else next(iter(result.metrics.values()))["validation_score"],
                "method_minutes": None if result is None or "method_s" not in result.timings
                else round(result.timings["method_s"] / 60, 2),
                "epsilon_spent": None if result is None else result.privacy.get("epsilon_spent"),
                "machine": run_machine(suite.folder / spec.run_id),
                **({"error": failed[spec.run_id]} if spec.run_id in failed else {})})
    return _record(plan, rows, folder, left_out, planned=(tried, len(planned)), command=command)


def reuse_board_runs(suite, board: Path) -> list[str]:
    """Copy into the tuning ``suite``'s folder each of its runs that the board's folder ``board``
    holds finished, sound and made on a machine like this one (same CPU, native bf16 and
    libraries): the suite's setting at the board's seed is the same spec, so its saved output is
    scored on validation instead of running the method again. The board's test scores are left
    behind (the tuning never reads the test split). Returns the run ids copied."""
    import shutil

    copied = []
    for run_id, source in _reusable(suite, [board], validation=False).items():
        scores = ["result.json", "samples.json", *(f"{choice.label}.json" for choice in suite.runs[0].evaluators)]
        shutil.copytree(source, suite.folder / run_id, ignore=shutil.ignore_patterns(*scores))
        logging.getLogger("dpbench").info("%s: the board's run (%s), its saved output scored on validation",
                                          run_id, source)
        copied.append(run_id)
    return copied


def tuning_runs(suite, runs=None) -> dict[str, Path]:
    """Runs of the board ``suite`` (of ``runs``, default all) not in its folder that a tuning of
    it holds (``<suite>-tuning-eps<ε>`` beside it: a winner it adopted, at the tuning's ε and
    seeds), finished on validation, sound and made on a machine like this one: run id -> folder.
    The same spec gives the same bits here, so the board scores that saved output on test
    instead of running the method again (``reuse_tuning_runs``)."""
    tunings = sorted(suite.folder.parent.glob(_TUNING_FOLDER.format(suite=suite.path.stem, epsilon="*")))
    return _reusable(suite, tunings, validation=True, runs=runs)


def reuse_tuning_runs(suite, runs=None) -> list[str]:
    """Copy ``tuning_runs`` into the board's folder, where ``dpbench run`` scores them on test
    (``RUN_STATES["rescored"]``: the ledger is kept, no release is drawn again). Returns their ids."""
    import shutil

    copied = []
    for run_id, source in tuning_runs(suite, runs).items():
        shutil.copytree(source, suite.folder / run_id)
        logging.getLogger("dpbench").info("%s: the tuning's run (%s), its saved output scored on test", run_id, source)
        copied.append(run_id)
    return copied


def _reusable(suite, folders: list[Path], *, validation: bool, runs=None) -> dict[str, Path]:
    """Run id -> the first of ``folders`` holding that run of ``suite`` (of ``runs``) finished,
    scored on validation or test as ``validation`` says, with a sound ledger, its saved output
    present and intact (a committed run folder keeps no texts or model: there the method runs
    again) and made on a machine like this one; runs already in the suite's folder are left out."""
    from dpbench.env import environment
    from dpbench.privacy.ledger import run_ledger_problems
    from dpbench.results import ArtifactError, load_artifact, load_result, run_environment
    from dpbench.runner import finished

    def output_intact(folder: Path) -> bool:
        try:
            return load_artifact(folder) is not None
        except ArtifactError:
            return False

    found, here = {}, None
    for spec in suite.runs if runs is None else runs:
        if (suite.folder / spec.run_id).exists():
            continue
        for folder in folders:
            source = folder / spec.run_id
            done = load_result(source)
            if not finished(done, spec, validation=validation) or run_ledger_problems(source, done.privacy):
                continue
            here = here or _machine(environment())
            if _machine(run_environment(source)) == here and output_intact(source):  # hashing the output: last
                found[spec.run_id] = source
                break
    return found


def _machine(env: dict) -> tuple:
    """What decides a run's bits besides its config (``dpbench.env.environment``): the CPU, its
    native bf16, the intra-op threads and the libraries' versions."""
    return env.get("cpu"), env.get("native_bf16_cpu"), env.get("intra_op_threads"), env.get("packages")


def chosen_methods(plan: TuningPlan, methods: Collection[str] | None) -> set[str]:
    """The method labels whose settings to run: ``methods`` (each one the plan tunes), all without it."""
    for label in methods or ():
        if label not in plan.spaces:
            raise ConfigError("method", label, "a method the tuning file tunes: " + ", ".join(plan.spaces) + "."
                              + did_you_mean(label, plan.spaces))
    return set(methods or plan.spaces)


def _record(plan: TuningPlan, rows: list[dict], folder: Path | None, left_out: list[str], *,
            planned: tuple[int, int], command: str | None = None) -> dict:
    """The tuning record of the settings' runs ``rows``, ``planned`` = (settings tried so far,
    settings in the plan), naming ``command`` (the command line that resumes it; default the
    plan's bare one); see ``write_record``."""
    summary = summarise(rows)
    best = {}
    for entry in summary:  # among the settings scored at the most seeds: a mean over fewer is not comparable
        key, stat = f"{entry['dataset']}/{entry['method']}", entry["validation"]
        if stat is not None and (key not in best or (stat["n"], stat["mean"])
                                 > (best[key]["validation"]["n"], best[key]["validation"]["mean"])):
            best[key] = entry
    return {"tuning": plan.path.as_posix(), "command": command or plan.command, "suite": plan.suite.as_posix(),
            "description": plan.description, "epsilon": plan.epsilon, "seed": plan.seed, "seeds": plan.seeds,
            "budget": plan.budget, "spaces": {k: {o: list(v) for o, v in s.items()} for k, s in plan.spaces.items()},
            "baseline": plan.baseline,
            "runs_folder": None if folder is None else folder.as_posix(), "settings": rows, "summary": summary,
            "untuned": left_out, "settings_tried": planned[0], "settings_planned": planned[1],
            "best": {k: {"values": v["values"], "validation_score": v["validation"]["mean"],
                         "suite_setting": v["suite_setting"], "vs_suite_setting": v["vs_suite_setting"]}
                     for k, v in best.items()}}


def summarise(rows: list[dict]) -> list[dict]:
    """One entry per dataset, method and setting: its validation score over seeds (``summary``
    of the boards: mean, std, n, 95 % half-width) and, for each setting but the suite's own, the
    paired difference from the suite's setting over the seeds both ran."""
    from dpbench.leaderboard import paired_difference, summary

    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["dataset"], row["method"], repr(row["values"])), []).append(row)
    by_seed = {key: {str(r["seed"]): r["validation_score"] for r in members if r["validation_score"] is not None}
               for key, members in groups.items()}
    own = {(key[0], key[1]): by_seed[key] for key, members in groups.items() if members[0]["suite_setting"]}
    out = []
    for key, members in groups.items():
        scores, first = by_seed[key], members[0]
        baseline = own.get(key[:2])
        out.append({"dataset": key[0], "method": key[1], "values": first["values"],
                    "suite_setting": first["suite_setting"],
                    "validation": summary(list(scores.values())) if scores else None,
                    "vs_suite_setting": None if first["suite_setting"] or not baseline or not scores
                    else paired_difference(scores, baseline),
                    "method_minutes": round(sum(r["method_minutes"] or 0 for r in members), 2)})
    return out


def write_record(record: dict, out: Path) -> list[Path]:
    """``out``.json and ``out``.md: every setting's validation score, its difference from the
    suite's setting and its cost, the best marked."""
    from dpbench.files import write_json
    from dpbench.leaderboard import machines, machines_notice

    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out.with_suffix(".json"), record)
    seeds = record["seeds"]
    seed_text = (f"seed {record['seed']}" if seeds == 1
                 else f"seeds {record['seed']}–{record['seed'] + seeds - 1} (the mean over seeds)")
    lines = [f"# Tuning: {Path(record['suite']).stem} at ε = {record['epsilon']:g}", "",
             f"Produced by `{record['command']}`. Budget: {record['budget']} settings per method (the suite's "
             f"own included), {seed_text}, scored on the validation split only (the test split is never read). "
             "Bold: the best per dataset and method (among the settings scored at the most seeds; n marks a "
             "setting with fewer). *vs suite's setting*: the paired difference over the seeds "
             "both ran, ± its 95 % t half-width, **significant** when that interval excludes 0 (*untested* at "
             "one seed: a one-seed screen's order may be seed noise).", ""]
    if record["settings_tried"] < record["settings_planned"]:
        lines += [f"⚠ **Partial record**: {record['settings_tried']} of {record['settings_planned']} settings so "
                  "far (the tuning is running or was stopped; the same command resumes it).", ""]
    if record.get("baseline"):
        lines += ["*The suite's setting* below is the one this file compared against (its `baseline`), which "
                  "the suite may have changed since: " + "; ".join(
                      f"{label} " + ", ".join(f"{o} {v!r}" for o, v in values.items())
                      for label, values in record["baseline"].items()) + ".", ""]
    if record["untuned"]:
        lines += [f"Not tuned here (they keep the suite's setting): {', '.join(record['untuned'])}.", ""]
    if notice := machines_notice(machines((row.get("machine"), row["method"]) for row in record["settings"])):
        lines += [notice, ""]
    for key in sorted({f"{e['dataset']}/{e['method']}" for e in record["summary"]}):
        dataset, method = key.split("/", 1)
        entries = [e for e in record["summary"] if e["dataset"] == dataset and e["method"] == method]
        options = list(entries[0]["values"])
        minutes = "minutes" if seeds == 1 else "minutes (all seeds)"
        lines += [f"## {method} on {dataset}", "",
                  "| " + " | ".join(options) + f" | validation | vs suite's setting | {minutes} | |",
                  "|" + "---|" * (len(options) + 4)]
        chosen = record["best"].get(key, {}).get("values")
        for e in entries:
            cells = [repr(e["values"][o]) for o in options]
            stat = e["validation"]
            score = "—" if stat is None else f"{stat['mean']:.4f}" + (
                "" if stat["ci95"] is None else f" ± {stat['ci95']:.4f}") + (
                f" (n = {stat['n']})" if stat["n"] < seeds else "")
            if e["values"] == chosen:
                cells, score = [f"**{c}**" for c in cells], f"**{score}**"
            lines.append("| " + " | ".join(cells) + f" | {score} | {_versus(e['vs_suite_setting'])} | "
                         f"{e['method_minutes'] or '—'} | " + ("suite's setting" if e["suite_setting"] else "") + " |")
        if not any(e["suite_setting"] and e["validation"] for e in entries):
            lines.append("The suite's setting has no validation score (its runs failed): nothing to compare with.")
        lines.append("")
    out.with_suffix(".md").write_text("\n".join(lines), encoding="utf-8")
    return [out.with_suffix(".json"), out.with_suffix(".md")]


def _versus(comparison: dict | None) -> str:
    from dpbench.leaderboard import VERDICTS, fmt_difference

    if comparison is None or comparison["difference"] is None:
        return "–"
    return f"{fmt_difference(comparison)} ({VERDICTS[comparison['significant']]})"
