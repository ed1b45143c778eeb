"""A board as pictures (matplotlib, imported only here): per dataset, utility against ε with
95 % intervals for every method and the reference rows as bands, and the gap closed per method
at one ε as bars."""

from __future__ import annotations

import math
from pathlib import Path

from dpbench.errors import DpbenchError

REFERENCE_STYLE = {"epsilon_zero": ("ε = 0 (public only)", "tab:gray"),
                   "synthetic_public": ("synthetic public (no private data)", "tab:olive"),
                   "epsilon_infinity": ("ε = ∞ (non-private, all data)", "black")}


def plot_board(board: dict, path: Path, *, epsilon: float | None = None) -> Path:
    """Draw ``board`` (a ``Leaderboard.to_dict()``) into the PNG ``path``: one row of two panels
    per dataset. The gap panel shows ``epsilon`` (default: the smallest finite ε on the board);
    its whiskers are each row's 95 % half-width over the gap's denominator (the reference rows'
    own spread left out)."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window
    import matplotlib.pyplot as plt

    metric = board["metric"]
    board = {**board, "rows": [{**row, "epsilon": float(row["epsilon"])} for row in board["rows"]]}  # JSON: "inf"
    datasets = list(dict.fromkeys(row["dataset"] for row in board["rows"]))
    if not datasets:
        raise DpbenchError(f"board {board['suite']!r} has no rows to plot")
    figure, axes = plt.subplots(len(datasets), 2, figsize=(12, 4.2 * len(datasets)), squeeze=False)
    for (utility, gap), dataset in zip(axes, datasets, strict=True):
        rows = [row for row in board["rows"] if row["dataset"] == dataset and metric in row["metrics"]]
        _utility_panel(utility, rows, metric, f"{board['suite']}: {dataset}")
        _gap_panel(gap, rows, metric, epsilon)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, metadata={"Software": None})  # the same board gives the same bytes
    plt.close(figure)
    return path


def _utility_panel(ax, rows, metric, title) -> None:
    private = [row for row in rows if row["reference"] is None]
    budgets = sorted({row["epsilon"] for row in private})
    position = {eps: i for i, eps in enumerate(budgets)}
    methods = list(dict.fromkeys(row["method"] for row in private))
    width = 0.6 / max(1, len(methods))
    for k, method in enumerate(methods):
        mine = sorted((row for row in private if row["method"] == method), key=lambda row: row["epsilon"])
        xs = [position[row["epsilon"]] + (k - (len(methods) - 1) / 2) * width for row in mine]
        ys = [row["metrics"][metric]["mean"] for row in mine]
        errors = [row["metrics"][metric].get("ci95") or 0.0 for row in mine]
        ax.errorbar(xs, ys, yerr=errors, marker="o", capsize=4, linestyle="-", label=method)
    for row in rows:
        if row["reference"] in REFERENCE_STYLE:
            label, colour = REFERENCE_STYLE[row["reference"]]
            mean, half = row["metrics"][metric]["mean"], row["metrics"][metric].get("ci95") or 0.0
            ax.axhline(mean, color=colour, linestyle="--", linewidth=1, label=label)
            if half:
                ax.axhspan(mean - half, mean + half, color=colour, alpha=0.12)
    ax.set_xticks(range(len(budgets)), [_label(eps) for eps in budgets])
    ax.set_xlabel("ε (ε = ∞: the method without noise)")
    ax.set_ylabel(f"{metric} (mean ± 95 % CI over seeds)")
    ax.set_title(title)
    ax.legend(fontsize=8)


def gap_bars(rows, metric: str, epsilon: float | None) -> tuple[float | None, list[tuple[str, float, float]]]:
    """The ε shown (``epsilon``, default the smallest finite one) and its bars ``(row, gap
    closed, 95 % half-width / (acc(ε=∞) − acc(ε=0)))``: the synthetic-public row first, then each
    private method at that ε. No bars without both ε = 0 and ε = ∞ rows."""
    private = [row for row in rows if row["reference"] is None]
    finite = sorted({row["epsilon"] for row in private if math.isfinite(row["epsilon"])})
    chosen = epsilon if epsilon is not None else (finite[0] if finite else None)
    means = {row["reference"]: row["metrics"][metric]["mean"] for row in rows if row["reference"]}
    span = means.get("epsilon_infinity", math.nan) - means.get("epsilon_zero", math.nan)
    if not math.isfinite(span) or span == 0:
        return chosen, []
    shown = [row for row in rows if row["reference"] == "synthetic_public"][:1]
    shown += [row for row in private if row["epsilon"] == chosen and row.get("gap_closed") is not None]
    return chosen, [(row["method"], row["gap_closed"], (row["metrics"][metric].get("ci95") or 0.0) / abs(span))
                    for row in shown]


def _gap_panel(ax, rows, metric, epsilon) -> None:
    chosen, bars = gap_bars(rows, metric, epsilon)
    if not any(name for name, _, _ in bars if name != "synthetic_public"):
        ax.set_axis_off()
        ax.text(0.5, 0.5, f"no gap to show at ε = {_label(chosen) if chosen is not None else '–'}",
                ha="center", va="center")
        return
    methods = list(dict.fromkeys(row["method"] for row in rows if row["reference"] is None))  # as the other panel
    names, gaps, errors = zip(*bars, strict=True)
    colours = [f"C{methods.index(name)}" if name in methods else "tab:olive" for name in names]
    ax.bar(names, gaps, yerr=errors, capsize=4, color=colours)
    ax.axhline(0, color="tab:gray", linewidth=1)
    ax.tick_params(axis="x", labelrotation=25)  # long method names would overlap
    ax.set_ylabel("gap closed: (acc − acc(ε=0)) / (acc(ε=∞) − acc(ε=0))")
    ax.set_title(f"gap closed at ε = {_label(chosen)} (± marginal 95 % CI; paired: see the board)")


def _label(epsilon: float) -> str:
    return "∞" if math.isinf(epsilon) else f"{epsilon:g}"
