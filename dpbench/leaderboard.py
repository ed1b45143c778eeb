"""Leaderboards: collect a suite's completed runs into Markdown, JSON and CSV.

ε is recomputed from each run's ledger, never read from a config, and a run whose ledger is
not sound (``dpbench.privacy.ledger.check_ledger``) is listed as incomplete instead of shown
with a lower ε; runs scored by different evaluator versions are never mixed; "gap closed" is the paper's
(m − m_ε=0) / (m_ε=∞ − m_ε=0) on the suite's metric, per dataset and seed-averaged.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dpbench.errors import DpbenchError
from dpbench.files import write_json, write_text
from dpbench.results import RunResult, as_float, load_result

OVER_BUDGET_TOLERANCE = 1e-6


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
    """"evaluator/metric" -> {"mean", "std"}"""
    gap_closed: float | None
    runs: int
    versions: dict[str, str]
    noise: str = "seeded"
    """the noise mode of the row's runs (``seeded`` rows are simulations: see the README)"""
    over_budget: bool = False
    leaks_canaries: int = 0
    """how many of the row's runs gave away planted canary text"""


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

    def to_dict(self) -> dict:
        return {"suite": self.suite, "metric": self.metric,
                "columns": [{"name": n, "higher_is_better": h} for n, h in self.columns],
                "rows": [asdict(r) for r in self.rows], "incomplete": dict(self.incomplete)}


def collect(folder: Path, run_ids: set[str] | None = None) -> list[tuple[Path, RunResult]]:
    """Finished runs under a suite folder (only ``run_ids`` when given), in a stable order; a
    folder whose ``result.json`` is missing or torn is not finished."""
    found = []
    for path in sorted(folder.glob("*/result.json")):
        if run_ids is not None and path.parent.name not in run_ids:
            continue
        result = load_result(path.parent)
        if result is not None:
            found.append((path.parent, result))
    return found


def build(suite_name: str, runs: list[tuple[Path, RunResult]], metric: str | None = None) -> Leaderboard:
    """The board of ``runs``; a run whose ledger is not sound goes to ``incomplete``, not to a row."""
    from dpbench.privacy.ledger import run_ledger_problems

    if not runs:
        raise DpbenchError(f"no completed runs for suite {suite_name!r}; run `dpbench run` first")
    incomplete = {}
    for folder, result in runs:
        if problems := run_ledger_problems(folder, result.privacy):
            incomplete[result.run_id] = "; ".join(problems)
    sound = [(folder, result) for folder, result in runs if result.run_id not in incomplete]
    _check_versions(sound)
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
        stats = {name: {"mean": statistics.fmean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0}
                 for name, v in values.items()}
        rows.append(Row(dataset=dataset, method=method, plugin=first.spec["method"]["plugin"], reference=reference,
                        epsilon=epsilon, delta=delta, epsilon_ledger=eps_ledger, metrics=stats, gap_closed=None,
                        runs=len(members), versions=first.versions, noise=noise,
                        leaks_canaries=sum(bool(r.checks.get("canaries", {}).get("flagged")) for _, r in members),
                        over_budget=reference is None and eps_ledger > epsilon * (1 + OVER_BUDGET_TOLERANCE)))
    _fill_gap_closed(rows, metric)
    rows.sort(key=lambda r: (r.dataset, r.epsilon, -_sortable(r.metrics.get(metric, {}).get("mean"), higher)))
    return Leaderboard(suite=suite_name, metric=metric, columns=columns, rows=rows, incomplete=incomplete)


def gap_closed(value: float, at_zero: float, at_infinity: float) -> float | None:
    """(value − at_zero) / (at_infinity − at_zero); None when the references coincide."""
    span = at_infinity - at_zero
    if span == 0:
        return None
    return (value - at_zero) / span


def _fill_gap_closed(rows: list[Row], metric: str) -> None:
    for dataset in {r.dataset for r in rows}:
        mine = [r for r in rows if r.dataset == dataset and metric in r.metrics]
        zero = [r.metrics[metric]["mean"] for r in mine if r.reference == "epsilon_zero"]
        inf = [r.metrics[metric]["mean"] for r in mine if r.reference == "epsilon_infinity"]
        if not zero or not inf:
            continue
        for row in mine:
            row.gap_closed = gap_closed(row.metrics[metric]["mean"], statistics.fmean(zero), statistics.fmean(inf))


def _ledger_epsilon(folder: Path, result: RunResult) -> float:
    reference = result.privacy.get("reference")
    if reference == "epsilon_zero":
        return 0.0
    if reference == "epsilon_infinity":
        return math.inf
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

def _fmt_eps(eps: float) -> str:
    return "∞" if math.isinf(eps) else f"{eps:.3g}"


def render_markdown(board: Leaderboard, *, title: str | None = None) -> str:
    lines = [f"# {title or board.suite}", "",
             f"Gap closed = (m − m(ε=0)) / (m(ε=∞) − m(ε=0)) on `{board.metric}`. ε (ledger) is recomputed "
             f"from each run's privacy ledger; ⚠ marks a run whose ledger exceeds its target; ⚑ marks a row whose "
             f"output gave away planted canary text (expected only of the ε = ∞ row).", ""]
    for dataset in sorted({r.dataset for r in board.rows}):
        lines += [f"## {dataset}", ""]
        header = (["method", "ε", "δ", "ε (ledger)"] + [f"{n} {'↑' if h else '↓'}" for n, h in board.columns]
                  + ["gap closed", "runs", "versions"])
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for row in (r for r in board.rows if r.dataset == dataset):
            method = (row.method + (" (secure noise)" if row.noise != "seeded" else "")
                      + (f" ⚑ leaks canaries ({row.leaks_canaries}/{row.runs} runs)" if row.leaks_canaries else ""))
            cells = [method, _fmt_eps(row.epsilon), f"{row.delta:g}",
                     _fmt_eps(row.epsilon_ledger) + (" ⚠" if row.over_budget else "")]
            for name, _ in board.columns:
                stat = row.metrics.get(name)
                cells.append("–" if stat is None else f"{stat['mean']:.4f} ± {stat['std']:.4f}")
            cells.append("–" if row.gap_closed is None else f"{100 * row.gap_closed:.1f}%")
            cells.append(str(row.runs))
            cells.append(", ".join(f"{k.split('/')[0]} {v}" for k, v in sorted(row.versions.items())))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if board.incomplete:
        lines += ["## Incomplete runs (not on the board)", "",
                  "Their ledgers are damaged or short, so their ε cannot be trusted; `dpbench run` redoes them.", ""]
        lines += [f"- `{run_id}`: {why}" for run_id, why in sorted(board.incomplete.items())] + [""]
    return "\n".join(lines)


def render_csv(board: Leaderboard) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    metric_names = [n for n, _ in board.columns]
    writer.writerow(["dataset", "method", "plugin", "epsilon", "delta", "epsilon_ledger"]
                    + [f"{n}_{s}" for n in metric_names for s in ("mean", "std")]
                    + ["gap_closed", "runs", "leaks_canaries"])
    for row in board.rows:
        stats = [row.metrics.get(n, {}).get(s, "") for n in metric_names for s in ("mean", "std")]
        writer.writerow([row.dataset, row.method, row.plugin, row.epsilon, row.delta, row.epsilon_ledger, *stats,
                         "" if row.gap_closed is None else row.gap_closed, row.runs, row.leaks_canaries])
    return out.getvalue()


def write(board: Leaderboard, folder: Path) -> list[Path]:
    """Write ``<suite>.md``, ``.json`` and ``.csv`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{board.suite}.{ext}" for ext in ("md", "json", "csv")]
    write_text(paths[0], render_markdown(board))
    write_json(paths[1], board.to_dict())
    write_text(paths[2], render_csv(board))
    return paths
