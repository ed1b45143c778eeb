"""Leaderboards: collect a suite's completed runs into Markdown, JSON and CSV.

ε is recomputed from each run's ledger, never read from a config, and a run whose ledger is
not sound (``dpbench.privacy.ledger.check_ledger``) is listed as incomplete instead of shown
with a lower ε; runs scored by different evaluator versions are never mixed; "gap closed" is the paper's
(m − m_ε=0) / (m_ε=∞ − m_ε=0) on the suite's metric, per dataset and seed-averaged.

Statistics: every cell is a mean over seeds with a 95 % Student-t confidence interval
(half-width t₀.₉₇₅,ₙ₋₁ · s / √n; none at n = 1). Each private row is compared with the best
other private row at its dataset and ε (and with the dataset's ``synthetic_public`` row) by a
paired t-interval over the seeds both ran (every row's run at one seed fine-tunes the
evaluator's model with the same seed on the same split), and marked significant when that
interval excludes 0. Every pair of private rows at a dataset and ε gets the same paired
interval (``Leaderboard.pairs``), with its two-sided p-value and whether it stays significant
under Holm's correction over that ε's pairs (one interval in twenty excludes 0 by chance, and
five methods make ten pairs); a row's comparison with the synthetic-public row is corrected the
same way over that ε's rows, and its comparison with the best other row carries its pair's
verdict. The intervals cover seed-to-seed variation (the methods' sampling, their DP noise, the
evaluator's fine-tuning), not the sampling of the test texts, which every row shares.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dpbench.api.method import REFERENCE_EPSILON
from dpbench.errors import DpbenchError
from dpbench.files import write_json, write_text
from dpbench.results import RunResult, as_float, load_result, release_notes, run_environment, validation_scored

OVER_BUDGET_TOLERANCE = 1e-6
TARGET_SHARE_OF_GAP = 0.05
"""the paired 95 % half-width a board aims for, as a share of its ε = 0 → ∞ gap"""


class IncompatibleRuns(DpbenchError):
    """A suite folder holds runs that cannot share one leaderboard."""


@dataclass
class Row:
    dataset: str
    method: str
    plugin: str
    reference: str | None
    epsilon: float
    delta: float
    epsilon_ledger: float
    """max over the row's runs of ε recomputed from the ledger"""
    metrics: dict[str, dict[str, float]]
    """"evaluator/metric" -> {"mean", "std", "n", "ci95"} (``ci95``: the interval's half-width,
    None at n = 1)"""
    gap_closed: float | None
    runs: int
    versions: dict[str, str]
    noise: str = "seeded"
    """the noise mode of the row's runs (``seeded`` rows are simulations: see the README)"""
    over_budget: bool = False
    leaks_canaries: int = 0
    """how many of the row's runs gave away planted canary text"""
    seed_values: dict[str, float] = field(default_factory=dict)
    """seed -> the board metric of that seed's run"""
    comparison: dict | None = None
    """a private row against the best other private row at its dataset and ε:
    ``against``, ``difference`` (this − that, on the board metric), ``ci95``, ``n`` (seeds
    both ran), ``significant`` (None when n < 2) and ``ci95_of_gap`` (``ci95`` over the
    dataset's ε = ∞ − ε = 0 gap), ``std`` (of the per-seed differences) and ``seeds_for_target``
    (the seeds that spread would need for a half-width of ``TARGET_SHARE_OF_GAP`` of the gap);
    ``significant_holm``: the verdict of its pair in ``Leaderboard.pairs``"""
    output_texts: int | None = None
    """M: texts the row's runs handed the evaluators (None: a trained model)"""
    diagnostics: dict | None = None
    """over the row's releases (seeded runs only; ``dpbench.privacy.noise.release_diagnostics``):
    ``releases``, median ``signal_to_noise`` (‖clipped sum‖ / ‖noise‖), mean ``cosine`` and
    mean ``spearman`` of each release with its noise-free sum, and ``agreement``: the means of
    the method's ``release_agreement`` measures"""
    over_synthetic_public: dict | None = None
    """a private row against the dataset's ``synthetic_public`` row, as ``comparison``: what
    the private data added to what the prompts and the generator give without it;
    ``significant_holm`` is corrected over the private rows of its dataset, ε and noise mode"""


@dataclass
class Leaderboard:
    suite: str
    metric: str
    """"evaluator/metric" the gap is computed on"""
    columns: list[tuple[str, bool]]
    """("evaluator/metric", higher_is_better) in display order"""
    rows: list[Row] = field(default_factory=list)
    incomplete: dict[str, str] = field(default_factory=dict)
    """run id -> why it is not on the board (a damaged or short ledger)"""
    data: dict[str, dict] = field(default_factory=dict)
    """dataset -> its split sizes and privacy unit, as the runs recorded them"""
    command: str | None = None
    """the ``dpbench run`` command line that produces (or resumes) the board's runs"""
    references: dict[str, str] = field(default_factory=dict)
    """method plugin -> the BibTeX entry of its paper (``Method.citation``)"""
    unfinished: list[dict] = field(default_factory=list)
    """the suite's runs with no finished result (a partial board): run id, dataset, method, ε, seed"""
    pairs: list[dict] = field(default_factory=list)
    """every pair of private rows at one dataset, ε and noise mode (``pairwise``): ``dataset``,
    ``epsilon``, ``noise``, ``ahead`` and ``behind`` (ordered on the seeds both ran; by mean when
    they share none), ``difference`` (ahead − behind),
    ``ci95``, ``n``, ``significant``, ``p_value`` and ``significant_holm``"""
    claims: list[dict] = field(default_factory=list)
    """each ordering the suite claims (``dpbench.suite.Claim``), pair by pair (``check_claims``)"""
    machines: dict[str, dict[str, int]] = field(default_factory=dict)
    """machine (``dpbench.cache.machine_label``) -> method label -> runs on the board made on it"""

    def to_dict(self) -> dict:
        return {"suite": self.suite, "command": self.command, "metric": self.metric,
                "columns": [{"name": n, "higher_is_better": h} for n, h in self.columns],
                "rows": [asdict(r) for r in self.rows], "pairs": list(self.pairs), "claims": list(self.claims),
                "incomplete": dict(self.incomplete),
                "data": dict(self.data), "references": dict(self.references), "unfinished": list(self.unfinished),
                "machines": dict(self.machines)}


def collect(folder: Path, run_ids: set[str] | None = None) -> list[tuple[Path, RunResult]]:
    """Finished runs under a suite folder (only ``run_ids`` when given), in a stable order; a
    folder whose ``result.json`` is missing or torn is not finished, and a run scored on the
    validation split only (``dpbench tune``) is no board's."""
    found = []
    for path in sorted(folder.glob("*/result.json")):
        if run_ids is not None and path.parent.name not in run_ids:
            continue
        result = load_result(path.parent)
        if result is not None and not validation_scored(result):
            found.append((path.parent, result))
    return found


def build(suite_name: str, runs: list[tuple[Path, RunResult]], metric: str | None = None, *,
          command: str | None = None, unfinished: list[dict] = (), claims=()) -> Leaderboard:
    """The board of ``runs``; a run whose ledger is not sound goes to ``incomplete``, not to a
    row; ``unfinished`` (the grid's runs not yet done) is stated on it, and each of ``claims``
    (``dpbench.suite.Claim``) is checked against its pairs."""
    from dpbench.privacy.ledger import run_ledger_problems
    from dpbench.results import run_machine

    if not runs:
        raise DpbenchError(f"no completed runs for suite {suite_name!r}; run `dpbench run` first")
    incomplete = {}
    for folder, result in runs:
        if problems := run_ledger_problems(folder, result.privacy):
            incomplete[result.run_id] = "; ".join(problems)
    sound = [(folder, result) for folder, result in runs if result.run_id not in incomplete]
    _check_versions(sound)
    _check_precision(sound)
    _check_yardstick(sound)
    columns = _columns(sound or runs)
    metric = _qualified(metric, columns) if metric else columns[0][0]
    higher = dict(columns)[metric]
    runs = sound

    groups: dict[tuple, list[tuple[Path, RunResult]]] = defaultdict(list)
    for folder, result in runs:
        spec = result.spec
        key = (spec["dataset"]["label"], spec["method"]["label"], as_float(spec["epsilon"]), spec["delta"],
               spec.get("noise", "seeded"))
        groups[key].append((folder, result))

    rows = []
    for (dataset, method, epsilon, delta, noise), members in groups.items():
        _check_same_config(dataset, method, epsilon, members)
        first = members[0][1]
        reference = first.privacy.get("reference")
        eps_ledger = max(_ledger_epsilon(folder, result) for folder, result in members)
        values = defaultdict(list)
        for _, result in members:
            for evaluator, scores in result.metrics.items():
                for name, value in scores.items():
                    values[f"{evaluator}/{name}"].append(value)
        stats = {name: summary(v) for name, v in values.items()}
        seed_values = {str(r.spec["seed"]): value for _, r in members if (value := _metric(r, metric)) is not None}
        rows.append(Row(dataset=dataset, method=method, plugin=first.spec["method"]["plugin"], reference=reference,
                        epsilon=epsilon, delta=delta, epsilon_ledger=eps_ledger, metrics=stats, gap_closed=None,
                        runs=len(members), versions=first.versions, noise=noise,
                        leaks_canaries=sum(bool(r.checks.get("canaries", {}).get("flagged")) for _, r in members),
                        over_budget=reference is None and eps_ledger > epsilon * (1 + OVER_BUDGET_TOLERANCE),
                        seed_values=seed_values, diagnostics=_diagnostics([folder for folder, _ in members]),
                        output_texts=first.output_texts))
    _fill_gap_closed(rows, metric)
    _fill_comparisons(rows, metric, higher)
    rows.sort(key=lambda r: (r.dataset, r.epsilon, -_sortable(r.metrics.get(metric, {}).get("mean"), higher)))
    data = {}
    for _, result in runs:
        data.setdefault(result.spec["dataset"]["label"], result.data)
    pairs = pairwise(rows, metric, higher)
    _fill_holm_verdicts(rows, pairs)
    return Leaderboard(suite=suite_name, metric=metric, columns=columns, rows=rows, incomplete=incomplete, data=data,
                       command=command, references=_citations(rows), unfinished=list(unfinished), pairs=pairs,
                       claims=check_claims(pairs, claims, datasets=sorted({r.dataset for r in rows})),
                       machines=machines((run_machine(folder), result.spec["method"]["label"])
                                         for folder, result in runs))


def machines(made: Iterable[tuple[str | None, str]]) -> dict[str, dict[str, int]]:
    """Machine -> method label -> how many runs it made, from (machine, method) pairs (a board's
    runs, a tuning's rows); a run whose machine is unknown (None: no or a torn ``env.json``) is
    left out."""
    found: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for machine, method in made:
        if machine:
            found[machine][method] += 1
    return {machine: dict(counts) for machine, counts in sorted(found.items())}


def machines_notice(counts: dict[str, dict[str, int]]) -> str | None:
    """The line a board or a tuning record states when its runs come from more than one machine."""
    if len(counts) < 2:
        return None
    return ("Runs made on different machines (their kernels round differently, so a score also moves with the "
            "machine, as with a seed); runs per method: " + "; ".join(
                f"{machine}: " + ", ".join(f"{method} {n}" for method, n in methods.items())
                for machine, methods in counts.items()) + ".")


def _citations(rows: list[Row]) -> dict[str, str]:
    """The citation of each registered method plugin on the board that declares one."""
    from dpbench.plugins import get_registry

    registry = get_registry("method")
    cited = {}
    for plugin in sorted({r.plugin for r in rows}):
        if plugin in registry and (citation := registry.get(plugin).citation.strip()):
            cited[plugin] = citation
    return cited


def summary(values: list[float]) -> dict:
    """Mean, sample standard deviation, n and the 95 % t-interval's half-width (None at n = 1)."""
    n = len(values)
    if n < 2:
        return {"mean": values[0], "std": None, "n": n, "ci95": None}
    std = statistics.stdev(values)
    return {"mean": statistics.fmean(values), "std": std, "n": n, "ci95": t_quantile(n - 1) * std / math.sqrt(n)}


def paired_difference(mine: dict[str, float], other: dict[str, float]) -> dict:
    """``mine − other`` over the seeds both hold: mean, 95 % half-width, n, significant, the
    differences' standard deviation and the paired t-test's two-sided p-value (None below 2
    seeds; significant exactly when p < 0.05)."""
    seeds = sorted(set(mine) & set(other))
    if not seeds:
        return {"difference": None, "ci95": None, "n": 0, "significant": None, "std": None, "p_value": None}
    stats = summary([mine[s] - other[s] for s in seeds])
    significant = None if stats["ci95"] is None else abs(stats["mean"]) > stats["ci95"]
    return {"difference": stats["mean"], "ci95": stats["ci95"], "n": stats["n"], "significant": significant,
            "std": stats["std"], "p_value": _t_test_p(stats)}


def _t_test_p(stats: dict) -> float | None:
    """Two-sided p-value of mean = 0 for ``summary`` statistics (None below 2 values)."""
    if stats["std"] is None:
        return None
    if stats["std"] == 0:
        return 1.0 if stats["mean"] == 0 else 0.0
    from scipy.stats import t

    return float(2 * t.sf(abs(stats["mean"]) / (stats["std"] / math.sqrt(stats["n"])), stats["n"] - 1))


def holm(p_values: list[float | None], level: float = 0.05) -> list[bool | None]:
    """Holm's step-down test over one family: which hypotheses are rejected at family-wise
    ``level`` (None for an untested member, which does not count towards the family)."""
    tested = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    rejected: list[bool | None] = [None if p is None else False for p in p_values]
    for rank, (p, i) in enumerate(tested):
        if p >= level / (len(tested) - rank):  # strict, as the unadjusted verdict (p < level)
            break
        rejected[i] = True
    return rejected


def pairwise(rows: list[Row], metric: str, higher: bool) -> list[dict]:
    """Every pair of private rows at one dataset, ε, δ and noise mode, the better one first (on
    the seeds both ran; by mean when they share none), with the paired comparison over those
    seeds and Holm's verdict over that family of pairs."""
    groups = defaultdict(list)
    for row in rows:
        if row.reference is None and row.seed_values:
            groups[(row.dataset, row.epsilon, row.delta, row.noise)].append(row)
    pairs = []
    for (dataset, epsilon, _, noise), members in sorted(groups.items(), key=lambda item: item[0]):
        members.sort(key=lambda r: -_sortable(r.metrics[metric]["mean"], higher))
        family = []
        for i, first in enumerate(members):
            for second in members[i + 1:]:
                ahead, behind = first, second
                result = paired_difference(first.seed_values, second.seed_values)
                if result["difference"] is not None and _sortable(result["difference"], higher) < 0:
                    ahead, behind = second, first  # the seeds both ran order them the other way
                    result["difference"] = -result["difference"]  # n, interval, p and verdict are symmetric
                family.append({"dataset": dataset, "epsilon": epsilon, "noise": noise, "ahead": ahead.method,
                               "behind": behind.method, **{k: v for k, v in result.items() if k != "std"}})
        for pair, verdict in zip(family, holm([p["p_value"] for p in family]), strict=True):
            pair["significant_holm"] = verdict
        pairs += family
    return pairs


def seeds_for(std: float, half_width: float) -> int:
    """The fewest seeds (≥ 2) whose 95 % t half-width, t₀.₉₇₅,ₙ₋₁ · std / √n, is at most
    ``half_width``: what a board would need at the spread its seeds show."""
    n = max(2, math.ceil((1.959964 * std / half_width) ** 2))  # the normal bound; t only widens it
    while t_quantile(n - 1) * std / math.sqrt(n) > half_width:
        n += 1
    return n


def t_quantile(dof: int) -> float:
    """The 97.5 % quantile of Student's t with ``dof`` degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(0.975, dof))


def gap_closed(value: float, at_zero: float, at_infinity: float) -> float | None:
    """(value − at_zero) / (at_infinity − at_zero); None when the references coincide."""
    span = at_infinity - at_zero
    if span == 0:
        return None
    return (value - at_zero) / span


def _references(rows: list[Row], metric: str) -> dict[str, tuple[float, float]]:
    """Dataset -> (m(ε=0), m(ε=∞)) on ``metric``, where both references are on the board."""
    found = {}
    for dataset in {r.dataset for r in rows}:
        mine = [r for r in rows if r.dataset == dataset and metric in r.metrics]
        zero = [r.metrics[metric]["mean"] for r in mine if r.reference == "epsilon_zero"]
        inf = [r.metrics[metric]["mean"] for r in mine if r.reference == "epsilon_infinity"]
        if zero and inf:
            found[dataset] = (statistics.fmean(zero), statistics.fmean(inf))
    return found


def _fill_gap_closed(rows: list[Row], metric: str) -> None:
    references = _references(rows, metric)
    for row in rows:
        if row.dataset in references and metric in row.metrics:
            row.gap_closed = gap_closed(row.metrics[metric]["mean"], *references[row.dataset])


def _fill_comparisons(rows: list[Row], metric: str, higher: bool) -> None:
    """Each private row against the best other private row of its dataset and ε, and against
    its dataset's synthetic-public row."""
    spans = {dataset: abs(inf - zero) for dataset, (zero, inf) in _references(rows, metric).items()}

    def compare(row: Row, other: Row) -> dict:
        result = paired_difference(row.seed_values, other.seed_values)
        span = spans.get(row.dataset)
        measured = result["ci95"] is not None and span
        return {"against": other.method, **result, "ci95_of_gap": result["ci95"] / span if measured else None,
                "seeds_for_target": seeds_for(result["std"], TARGET_SHARE_OF_GAP * span) if measured else None}

    for row in rows:
        if row.reference is not None or not row.seed_values:
            continue
        others = [r for r in rows if r is not row and r.reference is None and r.seed_values
                  and (r.dataset, r.epsilon, r.delta) == (row.dataset, row.epsilon, row.delta)]
        if others:
            row.comparison = compare(row, max(others, key=lambda r: _sortable(r.metrics[metric]["mean"], higher)))
        public = [r for r in rows if r.dataset == row.dataset and r.reference == "synthetic_public" and r.seed_values]
        if public:  # of several (a suite comparing output sizes), the one at the row's own M
            row.over_synthetic_public = compare(row, next((r for r in public if r.output_texts == row.output_texts),
                                                          public[0]))


def _fill_holm_verdicts(rows: list[Row], pairs: list[dict]) -> None:
    """Each row's comparisons under Holm: against the best other row, its pair's verdict;
    against synthetic public, Holm over the rows compared with it at one dataset, ε and noise mode."""
    for row in rows:
        if row.comparison is not None:
            pair = _pair_of(pairs, row.dataset, row.epsilon, row.noise, row.method, row.comparison["against"])
            row.comparison["significant_holm"] = None if pair is None else pair["significant_holm"]
    families = defaultdict(list)
    for row in rows:
        if row.over_synthetic_public is not None:
            families[(row.dataset, row.epsilon, row.delta, row.noise)].append(row.over_synthetic_public)
    for family in families.values():
        for comparison, verdict in zip(family, holm([c["p_value"] for c in family]), strict=True):
            comparison["significant_holm"] = verdict


def _pair_of(pairs: list[dict], dataset: str, epsilon: float, noise: str, one: str, other: str) -> dict | None:
    """The entry of ``pairwise`` comparing methods ``one`` and ``other`` (either order), if any."""
    return next((p for p in pairs if (p["dataset"], p["epsilon"], p["noise"]) == (dataset, epsilon, noise)
                 and {p["ahead"], p["behind"]} == {one, other}), None)


def _diagnostics(folders: list[Path]) -> dict | None:
    """The release diagnostics of a row's runs, summarised (None when no run noted any)."""
    notes = [note for folder in folders for note in release_notes(folder)]
    if not notes:
        return None

    def mean(name: str) -> float | None:
        values = [n[name] for n in notes if n.get(name) is not None]
        return statistics.fmean(values) if values else None

    ratios = [n["signal_norm"] / n["noise_norm"] for n in notes if n.get("noise_norm")]
    agreement = defaultdict(list)
    for note in notes:
        for name, value in (note.get("agreement") or {}).items():
            if value is not None:
                agreement[name].append(value)
    return {"releases": len(notes), "signal_to_noise": statistics.median(ratios) if ratios else None,
            "cosine": mean("cosine"), "spearman": mean("spearman"),
            "agreement": {name: statistics.fmean(values) for name, values in sorted(agreement.items())}}


def _metric(result: RunResult, metric: str) -> float | None:
    evaluator, name = metric.split("/", 1)
    return result.metrics.get(evaluator, {}).get(name)


def _ledger_epsilon(folder: Path, result: RunResult) -> float:
    reference = result.privacy.get("reference")
    if reference is not None:
        return REFERENCE_EPSILON[reference]
    from dpbench.privacy import epsilon_from_ledger

    return epsilon_from_ledger(folder / "ledger.jsonl", delta=result.privacy["delta"],
                               accountant=result.privacy["accountant"])


def _check_versions(runs) -> None:
    seen: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for _, result in runs:
        for key, version in result.versions.items():
            if key.startswith("evaluator/"):
                seen[key][version].append(result.run_id)
    for key, versions in seen.items():
        if len(versions) > 1:
            detail = "; ".join(f"version {v}: {len(ids)} runs, e.g. {ids[0]}" for v, ids in sorted(versions.items()))
            raise IncompatibleRuns(f"{key} scored runs with different versions ({detail}). Scores from different "
                                   f"evaluator versions are not comparable: re-run the old runs (dpbench run --force) "
                                   f"or move them out of the suite folder.")


def by_native_bf16(runs) -> dict[bool, list[str]]:
    """Run ids by whether the machine that made them multiplies bf16 natively (``env.json``),
    which every ``bf16: auto`` follows; a run that kept no record counts under neither."""
    seen: dict[bool, list[str]] = defaultdict(list)
    for folder, result in runs:
        env = run_environment(folder)
        if "native_bf16_cpu" in env:
            seen[bool(env["native_bf16_cpu"])].append(result.run_id)
    return seen


def _check_precision(runs) -> None:
    """Refuse runs from machines that differ in native bf16: their generators and the evaluator's
    own pretrained model ran at different precisions, so the rows would not share one yardstick
    (a board measured in pieces must stay on one kind of machine)."""
    seen = by_native_bf16(runs)
    if len(seen) > 1:
        detail = "; ".join(f"{'with' if native else 'without'} native bf16: {len(ids)} runs, e.g. {ids[0]}"
                           for native, ids in sorted(seen.items()))
        raise IncompatibleRuns(f"runs were measured on machines that differ in native bf16 ({detail}), so "
                               f"`bf16: auto` ran their models at different precisions and the rows do not share "
                               f"one yardstick: finish the board on one kind of machine, or move one kind of "
                               f"run out of the suite folder and redo it (env.json says which machine ran each)")


UNNOTED = "the evaluator's pretrained model (not noted by these runs: built on each run's machine)"
"""``yardsticks``' entry for runs made before runs noted their machine-dependent cache entries"""


def yardsticks(runs) -> dict[str, dict[str, dict[str, list[str]]]]:
    """Per dataset, each machine-dependent cache entry its runs were scored against (the
    evaluator's pretrained model) -> the machines that built it -> run ids. A run made before
    runs noted their entries (no ``cache-inputs.json``) read entries built on its own machine,
    which its ``env.json`` names: it counts under every entry of its dataset (``UNNOTED`` when
    no run of the dataset noted one)."""
    from dpbench.cache import machine_label, read_inputs

    built: dict[tuple[str, str], dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    unnoted: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for folder, result in runs:
        dataset, record = result.spec["dataset"]["label"], read_inputs(folder)
        if record is None:
            env = run_environment(folder)
            if env.get("cpu"):  # every run's env.json has named its CPU since runs kept one
                unnoted[dataset][machine_label(env["cpu"], env.get("native_bf16_cpu", True))].append(result.run_id)
            continue
        for entry, machines in record.items():
            for machine in machines:
                built[dataset, entry][machine].append(result.run_id)
    found = {}
    for dataset in sorted({*unnoted, *(d for d, _ in built)}):
        entries = [entry for d, entry in built if d == dataset] or [UNNOTED]
        found[dataset] = {}
        for entry in entries:
            machines = defaultdict(list, {machine: list(ids) for machine, ids in unnoted[dataset].items()})
            for machine, ids in built.get((dataset, entry), {}).items():
                machines[machine] += ids
            found[dataset][entry] = dict(machines)
    return found


def _check_yardstick(runs) -> None:
    """Refuse rows of one dataset scored against machine-dependent cache entries built on
    different machines: the same training gives other bits on another CPU, so the rows would
    not share one yardstick (measured: ConVote's public-only model scores 0.28767 built on an
    AMD EPYC, 0.28759 on an Intel Xeon)."""
    for dataset, entries in yardsticks(runs).items():
        for entry, machines in entries.items():
            if len(machines) > 1:
                raise IncompatibleRuns(
                    f"runs on {dataset!r} were scored against {entry} built on different machines "
                    f"({describe_builders(machines)}), so the rows do not share one yardstick: finish the board "
                    f"where it was built, keep that entry with the board's records so that every machine reads it "
                    f"(leaderboards/README.md), or move one machine's runs out of the suite folder and redo them")


def describe_builders(machines: dict[str, list[str]]) -> str:
    """``<machine>: <n> runs, e.g. <run id>; …``"""
    return "; ".join(f"{machine}: {len(ids)} runs, e.g. {ids[0]}" for machine, ids in sorted(machines.items()))


def _check_same_config(dataset, method, epsilon, members) -> None:
    hashes = {json.dumps([r.spec["method"], r.spec["dataset"], r.spec["evaluators"]], sort_keys=True)
              for _, r in members}
    if len(hashes) > 1:
        ids = ", ".join(r.run_id for _, r in members[:4])
        raise IncompatibleRuns(f"runs of {method!r} on {dataset!r} at ε={epsilon:g} used different options ({ids}); "
                               f"give each configuration its own label in the suite "
                               f"(methods: {{label: {{plugin: ...}}}})")


def _columns(runs) -> list[tuple[str, bool]]:
    columns = {}
    for _, result in runs:
        for evaluator, specs in result.metric_specs.items():
            for name, spec in specs.items():
                columns.setdefault(f"{evaluator}/{name}", spec["higher_is_better"])
    return list(columns.items())


def _qualified(metric: str, columns) -> str:
    names = [n for n, _ in columns]
    if metric in names:
        return metric
    matches = [n for n in names if n.split("/", 1)[1] == metric]
    if not matches:
        raise DpbenchError(f"leaderboard metric {metric!r} is not among the runs' metrics: {', '.join(names)}")
    return matches[0]


def _sortable(value, higher: bool) -> float:
    if value is None:
        return -math.inf
    return value if higher else -value


# ---------------------------------------------------------------- rendering

CLAIM_VERDICTS = ("reproduced", "reversed", "not reproduced", "untested")


def check_claims(pairs: list[dict], claims, *, datasets: list[str]) -> list[dict]:
    """Each claimed ``ahead > behind`` of each claim on each dataset, judged by its pair's Holm
    verdict (the family of all pairs at that ε): *reproduced* when the claimed order is
    significant, *reversed* when the opposite one is, *not reproduced* when neither is (which is
    not evidence against the claim), *untested* without two shared seeds or without the rows."""
    out = []
    for claim in claims:
        for dataset in datasets:
            for ahead, behind in claim.pairs():
                pair = _pair_of(pairs, dataset, claim.epsilon, "seeded", ahead, behind)
                holds = None if pair is None else pair["significant_holm"]
                as_claimed = pair is not None and pair["ahead"] == ahead
                verdict = ("untested" if holds is None else "not reproduced" if not holds
                           else "reproduced" if as_claimed else "reversed")
                difference = None if pair is None or pair["difference"] is None else (
                    pair["difference"] if as_claimed else -pair["difference"])
                out.append({"dataset": dataset, "epsilon": claim.epsilon, "source": claim.source, "ahead": ahead,
                            "behind": behind, "difference": difference, "ci95": None if pair is None else pair["ci95"],
                            "n": 0 if pair is None else pair["n"], "p_value": None if pair is None else pair["p_value"],
                            "verdict": verdict})
    return out


def _claims_table(claims: list[dict]) -> list[str]:
    """The dataset's claimed orderings, pair by pair, as Markdown lines."""
    counts = {v: sum(c["verdict"] == v for c in claims) for v in CLAIM_VERDICTS}
    lines = ["Claimed orderings (the suite's `leaderboard.claims`), pair by pair, judged by the Holm verdict of "
             "the table above: *reproduced* when the claimed order is significant, *reversed* when the opposite "
             "is, *not reproduced* when neither is (not evidence against it). "
             + ", ".join(f"{counts[v]} {v}" for v in CLAIM_VERDICTS if counts[v]) + f" of {len(claims)}.", ""]
    for epsilon, source in dict.fromkeys((c["epsilon"], c["source"]) for c in claims):
        lines.append(f"- ε = {_fmt_eps(epsilon)}: {source}")
    lines += ["", "| ε | claim | difference | p | verdict |", "|---|---|---|---|---|"]
    for c in claims:
        verdict = {"reproduced": "**reproduced**", "reversed": "**reversed**"}.get(c["verdict"], f"*{c['verdict']}*")
        lines.append(f"| {_fmt_eps(c['epsilon'])} | {c['ahead']} > {c['behind']} | {fmt_difference(c)} | "
                     f"{_fmt_number(c['p_value'])} | {verdict} |")
    return [*lines, ""]


def _fmt_eps(eps: float) -> str:
    return "∞" if math.isinf(eps) else f"{eps:.3g}"


def _partial_notice(unfinished: list[dict]) -> str:
    """One line naming the grid cells whose runs are not finished, seeds grouped."""
    seeds = defaultdict(list)
    for run in unfinished:
        seeds[(run["dataset"], run["method"], _fmt_eps(as_float(run["epsilon"])))].append(str(run["seed"]))
    cells = "; ".join(f"{dataset} {method} ε = {eps} (seed{'s' if len(s) > 1 else ''} {', '.join(s)})"
                      for (dataset, method, eps), s in seeds.items())
    runs, verbs = ("runs", "have not finished and are") if len(unfinished) > 1 else ("run", "has not finished and is")
    return f"⚠ **Partial board**: {len(unfinished)} {runs} of the suite's grid {verbs} not on it: {cells}."


def render_markdown(board: Leaderboard, *, title: str | None = None) -> str:
    lines = [f"# {title or board.suite}", ""]
    if board.command:
        lines += [f"Produced by `{board.command}` (it resumes: finished runs are skipped).", ""]
    lines += [f"Gap closed = (m − m(ε=0)) / (m(ε=∞) − m(ε=0)) on `{board.metric}`. ε (ledger) is recomputed "
             f"from each run's privacy ledger; ⚠ marks a run whose ledger exceeds its target; ⚑ marks a row whose "
             f"output gave away planted canary text (expected only of the ε = ∞ row).", "",
             "Each cell is a mean over seeds ± the half-width of its 95 % confidence interval (Student t over "
             "seeds); a row of one run has no interval. *vs best other* is the paired difference on "
             f"`{board.metric}` from the best other private row at the same ε, over the seeds both ran: "
             "**significant** when its 95 % interval excludes 0, *n.s.* when it does not (an ordering "
             "not reproduced), *untested* with fewer than two shared seeds. *vs synthetic public* is the same "
             "comparison with the `synthetic_public` row: the shared generator's text from public-seeded "
             "prompts alone, i.e. what the private data added. Where Holm's correction changes a verdict "
             "(over that ε's pairs of rows, or its rows' comparisons with synthetic public) the cell says so: "
             "with several methods, one interval in twenty excludes 0 by chance.", ""]
    if board.unfinished:
        lines += [_partial_notice(board.unfinished), ""]
    if notice := machines_notice(board.machines):
        lines += [notice, ""]
    for dataset in sorted({r.dataset for r in board.rows}):
        lines += [f"## {dataset}", ""]
        if about := _describe_data(board.data.get(dataset)):
            lines += [about, ""]
        header = (["method", "ε", "δ", "ε (ledger)"] + [f"{n} {'↑' if h else '↓'}" for n, h in board.columns]
                  + ["gap closed", "vs best other", "vs synthetic public", "M", "runs", "versions"])
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for row in (r for r in board.rows if r.dataset == dataset):
            method = (row.method + (" (secure noise)" if row.noise != "seeded" else "")
                      + (f" ⚑ leaks canaries ({row.leaks_canaries}/{row.runs} runs)" if row.leaks_canaries else ""))
            cells = [method, _fmt_eps(row.epsilon), f"{row.delta:g}",
                     _fmt_eps(row.epsilon_ledger) + (" ⚠" if row.over_budget else "")]
            for name, _ in board.columns:
                stat = row.metrics.get(name)
                cells.append(_fmt_stat(stat))
            cells.append("–" if row.gap_closed is None else f"{100 * row.gap_closed:.1f}%")
            cells.append(_fmt_comparison(row.comparison))
            cells.append(_fmt_comparison(row.over_synthetic_public))
            cells.append("model" if row.output_texts is None else str(row.output_texts))
            cells.append(str(row.runs))
            cells.append(", ".join(f"{k.split('/')[0]} {v}" for k, v in sorted(row.versions.items())))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        if unequal := _unequal_outputs([r for r in board.rows if r.dataset == dataset]):
            lines += [f"⚠ The synthetic-text rows hand the evaluator different numbers of texts ({unequal}): "
                      "the comparison is not at equal output size M.", ""]
        noted = [r for r in board.rows if r.dataset == dataset and r.diagnostics]
        if noted:
            lines += ["How much of the noise-free sum each method's releases carried (seeded runs; computed by the "
                      "privacy session, never seen by the method): ‖clipped sum‖ / ‖noise‖ (median over releases), "
                      "the mean cosine and rank (Spearman) correlation of each release with its noise-free sum, and "
                      "the method's own measures of how often a release led to the noise-free decision (means).", "",
                      "| method | ε | releases | ‖sum‖ / ‖noise‖ | cosine | rank correlation | decisions |",
                      "|---|---|---|---|---|---|---|"]
            lines += [f"| {r.method} | {_fmt_eps(r.epsilon)} | {r.diagnostics['releases']} | "
                      + " | ".join(_fmt_number(r.diagnostics[k]) for k in ("signal_to_noise", "cosine", "spearman"))
                      + " | " + (", ".join(f"{name} {value:.3g}" for name, value in r.diagnostics["agreement"].items())
                                 or "–") + " |" for r in noted]
            lines.append("")
        measured = [r.comparison for r in board.rows if r.dataset == dataset
                    and r.comparison and r.comparison["ci95_of_gap"] is not None]
        if measured:
            lines += [_precision_line(measured), ""]
        if pairs := [p for p in board.pairs if p["dataset"] == dataset]:
            lines += _pairs_table(pairs)
        if claims := [c for c in board.claims if c["dataset"] == dataset]:
            lines += _claims_table(claims)
    if board.references:
        lines += ["## References", ""]
        for plugin, citation in board.references.items():
            lines += [f"`{plugin}`:", "", "```bibtex", citation, "```", ""]
    if board.incomplete:
        lines += ["## Incomplete runs (not on the board)", "",
                  "Their ledgers are damaged or short, so their ε cannot be trusted; `dpbench run` redoes them.", ""]
        lines += [f"- `{run_id}`: {why}" for run_id, why in sorted(board.incomplete.items())] + [""]
    return "\n".join(lines)


def _unequal_outputs(rows: list[Row]) -> str:
    """``"method M, …"`` when the synthetic-text rows (methods and ``synthetic_public``) differ in M."""
    synthetic = {r.method: r.output_texts for r in rows if r.output_texts
                 and r.reference in (None, "synthetic_public")}
    if len(set(synthetic.values())) < 2:
        return ""
    return ", ".join(f"{method} {m}" for method, m in sorted(synthetic.items()))


def _describe_data(data: dict | None) -> str:
    """One line: clients, texts per client, held-out sizes and the privacy unit."""
    if not data or not data.get("clients"):
        return ""
    unit = f" One client (the privacy unit): {data['privacy_unit']}." if data.get("privacy_unit") else ""
    return (f"{data['clients']} training clients with {data['train_texts']} texts "
            f"({data['train_texts'] / data['clients']:.1f} per client); {data['validation_texts']} validation, "
            f"{data['test_texts']} test and {data['public_texts']} public texts.{unit}")


def _fmt_number(value: float | None) -> str:
    return "–" if value is None else f"{value:.3g}"


def _fmt_stat(stat: dict | None) -> str:
    if stat is None:
        return "–"
    return f"{stat['mean']:.4f}" + ("" if stat["ci95"] is None else f" ± {stat['ci95']:.4f}")


def _precision_line(comparisons: list[dict]) -> str:
    """The paired half-widths of a dataset's comparisons as shares of its gap, and the seeds
    each would need for ``TARGET_SHARE_OF_GAP`` (their median, and the widest comparison's)."""
    shares = sorted(c["ci95_of_gap"] for c in comparisons)
    widest = max(comparisons, key=lambda c: c["ci95_of_gap"])
    seeds = math.ceil(statistics.median(c["seeds_for_target"] for c in comparisons))
    counts = sorted({c["n"] for c in comparisons})
    measured_on = str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
    return (f"Paired 95 % half-widths are {100 * shares[0]:.1f}–{100 * shares[-1]:.1f} % of the ε = 0 → ∞ gap "
            f"(median {100 * statistics.median(shares):.1f} %). At the spread these seeds show, "
            f"{100 * TARGET_SHARE_OF_GAP:g} % would take a median of {seeds} seeds over the comparisons and "
            f"{widest['seeds_for_target']} for the widest (`seeds_for_target`; itself an estimate from "
            f"{measured_on} seeds).")


def _pairs_table(pairs: list[dict]) -> list[str]:
    """The dataset's every pair of private rows per ε, as Markdown lines."""
    lines = ["Every pair of private rows at each ε, the better one on the seeds both ran first: the paired "
             "difference over those seeds with its 95 % interval (*n.s.*: these seeds do not establish the "
             "order), the paired t-test's p, and the verdict when all of that ε's pairs are tested together "
             "(Holm's correction: by "
             "chance alone one 95 % interval in twenty excludes 0).", "",
             "| ε | ahead | behind | difference | verdict | p | Holm |", "|---|---|---|---|---|---|---|"]
    for p in pairs:
        eps = _fmt_eps(p["epsilon"]) + (" (secure noise)" if p["noise"] != "seeded" else "")
        lines.append(f"| {eps} | {p['ahead']} | {p['behind']} | {fmt_difference(p)} | "
                     f"{VERDICTS[p['significant']]} | {_fmt_number(p['p_value'])} | "
                     f"{VERDICTS[p['significant_holm']]} |")
    return [*lines, ""]


VERDICTS = {True: "**significant**", False: "*n.s.*", None: "*untested*"}
"""a paired comparison's ``significant`` as the boards print it"""


def fmt_difference(comparison: dict) -> str:
    """A paired difference as ``+d ± half-width`` (no interval below two seeds; – without one)."""
    if comparison["difference"] is None:
        return "–"
    interval = "" if comparison["ci95"] is None else f" ± {comparison['ci95']:.4f}"
    return f"{comparison['difference']:+.4f}{interval}"


def _fmt_comparison(comparison: dict | None) -> str:
    if comparison is None or comparison["difference"] is None:
        return "–"
    verdict = VERDICTS[comparison["significant"]]
    if comparison.get("significant_holm") not in (None, comparison["significant"]):
        verdict += f", {VERDICTS[comparison['significant_holm']]} under Holm"
    return f"{fmt_difference(comparison)} vs {comparison['against']} ({verdict})"


CSV_STATS = ("mean", "std", "n", "ci95")
CSV_COMPARISON = ("against", "difference", "ci95", "n", "significant", "significant_holm", "ci95_of_gap",
                  "seeds_for_target")


def render_csv(board: Leaderboard) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    metric_names = [n for n, _ in board.columns]
    writer.writerow(["dataset", "method", "plugin", "epsilon", "delta", "epsilon_ledger"]
                    + [f"{n}_{s}" for n in metric_names for s in CSV_STATS]
                    + ["gap_closed"] + [f"vs_{which}_{k}" for which in ("best_other", "synthetic_public")
                                        for k in CSV_COMPARISON] + ["output_texts", "runs", "leaks_canaries"])
    for row in board.rows:
        stats = [_blank(row.metrics.get(n, {}).get(s)) for n in metric_names for s in CSV_STATS]
        comparison = [_blank((versus or {}).get(k)) for versus in (row.comparison, row.over_synthetic_public)
                      for k in CSV_COMPARISON]
        writer.writerow([row.dataset, row.method, row.plugin, row.epsilon, row.delta, row.epsilon_ledger, *stats,
                         _blank(row.gap_closed), *comparison, _blank(row.output_texts), row.runs, row.leaks_canaries])
    return out.getvalue()


def _blank(value):
    return "" if value is None else value


def write(board: Leaderboard, folder: Path) -> list[Path]:
    """Write ``<suite>.md``, ``.json`` and ``.csv`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{board.suite}.{ext}" for ext in ("md", "json", "csv")]
    write_text(paths[0], render_markdown(board))
    write_json(paths[1], board.to_dict())
    write_text(paths[2], render_csv(board))
    return paths
