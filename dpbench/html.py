"""A board as one self-contained static page (Jinja2): the tables with their intervals and
significance marks, the plot (embedded), each run's details and the provenance. No server and
no network at view time: styles and images are inside the file."""

from __future__ import annotations

import base64
import math
from pathlib import Path

from dpbench.files import read_json
from dpbench.results import RunResult, flatten, monitor_history, release_notes, run_environment

TEMPLATE = """\
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>dpbench: {{ suite }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; padding: 0 1em; color: #222; }
main { overflow-x: auto; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
img { max-width: 100%; border: 1px solid #ddd; }
details { margin: 0.3em 0; } summary { cursor: pointer; }
code { background: #f4f4f4; padding: 0 0.2em; }
.provenance td:first-child { font-weight: bold; }
.curves { display: flex; flex-wrap: wrap; gap: 0.6em; } figure.curve { margin: 0; font-size: 0.8em; }
svg.curve { border: 1px solid #ddd; background: #fff; }
</style>
</head>
<body>
<main>
{{ board_html }}
{% if plot %}<h2>Plot</h2>
<img id="plot" alt="{{ suite }}: utility against ε and gap closed" src="data:image/png;base64,{{ plot }}">
{% endif %}
<h2>Runs</h2>
<p>Each run's ε recomputed from its ledger, cost, release diagnostics (one line per noisy
release: how much of the noise-free clipped sum it carried), its method's per-round monitor
where the run folder keeps it, and a sample of its output.</p>
{% for run in runs %}
<details class="run" id="{{ run.run_id }}">
<summary><code>{{ run.run_id }}</code>: {{ run.method }}, ε = {{ run.epsilon }}, seed {{ run.seed }},
{{ run.score }}</summary>
<table>
<tr><th>ε (target / from ledger)</th><td>{{ run.epsilon }} / {{ run.epsilon_spent }}</td></tr>
<tr><th>noise multiplier</th><td>{{ run.noise_multiplier }}</td></tr>
<tr><th>texts handed to the evaluator (M)</th><td>{{ run.output_texts }}</td></tr>
{% for name, value in run.metrics %}<tr><th>{{ name }}</th><td>{{ value }}</td></tr>{% endfor %}
{% for name, value in run.timings %}<tr><th>{{ name }}</th><td>{{ value }}</td></tr>{% endfor %}
</table>
{% for title, table in run.tables %}{% if table.rows %}<p>{{ title }}</p>
<table><tr>{% for column in table.columns %}<th>{{ column }}</th>{% endfor %}</tr>
{% for row in table.rows %}<tr>{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>{% endfor %}
</table>{% endif %}{% endfor %}
{% if run.curves %}<p>Monitor, per round, as curves (one point per checkpoint; first → last, range)</p>
<div class="curves">{% for curve in run.curves %}<figure class="curve">
<svg class="curve" width="160" height="40" viewBox="0 0 160 40" role="img" aria-label="{{ curve.name }}">
<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{{ curve.points }}"/></svg>
<figcaption>{{ curve.name }}: {{ curve.first }} → {{ curve.last }} ({{ curve.low }}–{{ curve.high }})</figcaption>
</figure>{% endfor %}</div>{% endif %}
{% if run.samples %}<p>Sample of the output</p>
<ol>{% for text in run.samples %}<li>{{ text }}</li>{% endfor %}</ol>{% endif %}
</details>
{% endfor %}
<h2>Provenance</h2>
<table class="provenance">
<tr><td>command</td><td><code>{{ command }}</code></td></tr>
{% for name, value in provenance %}<tr><td>{{ name }}</td><td>{{ value }}</td></tr>{% endfor %}
</table>
</main>
</body>
</html>
"""

SAMPLES_SHOWN = 5
INDEX_COLUMNS = ("checkpoint", "iteration", "round")
"""monitor columns that number the rounds rather than measure them"""


def render_html(board: dict, markdown: str, runs: list[tuple[Path, RunResult]] = (), *,
                plot_png: bytes | None = None) -> str:
    """The page of ``board`` (``Leaderboard.to_dict()``, or a committed board's JSON) and its
    markdown rendering (whose tables become the page's), with the details of ``runs``
    (``collect``; none for a board whose run records are not kept) and the PNG ``plot_png``."""
    from jinja2 import Environment
    from markdown_it import MarkdownIt
    from markupsafe import Markup

    tables = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)  # raw HTML escaped
    return Environment(autoescape=True).from_string(TEMPLATE).render(
        suite=board["suite"], board_html=Markup(tables), command=board.get("command") or "(not recorded)",
        plot=base64.b64encode(plot_png).decode() if plot_png else None,
        runs=[_run(folder, result, board["metric"]) for folder, result in runs], provenance=_provenance(runs))


def _run(folder: Path, result: RunResult, metric: str) -> dict:
    privacy = result.privacy or {}
    evaluator, _, name = metric.partition("/")
    score = result.metrics.get(evaluator, {}).get(name)
    history = monitor_history(folder)
    tables = [("Release diagnostics", _table(release_notes(folder))), ("Monitor, per round", _table(history))]
    return {"run_id": result.run_id, "method": result.spec["method"]["label"], "seed": result.spec["seed"],
            "epsilon": _fmt(result.spec["epsilon"]), "epsilon_spent": _fmt(privacy.get("epsilon_spent")),
            "noise_multiplier": _fmt(privacy.get("noise_multiplier")),
            "output_texts": "model" if result.output_texts is None else result.output_texts,
            "score": f"{metric} {_fmt(score)}",
            "metrics": [(f"{e}/{n}", _fmt(v)) for e, scores in result.metrics.items() for n, v in scores.items()],
            "timings": [(f"cost: {k}", _fmt(v)) for k, v in result.timings.items()],
            "tables": tables, "curves": _curves(history), "samples": _samples(folder)}


def _table(entries: list[dict]) -> dict:
    """Columns and rows of flat cells; nested dicts become ``outer/inner`` columns."""
    flat = [flatten(entry) for entry in entries]
    columns = list(dict.fromkeys(key for entry in flat for key in entry))
    return {"columns": columns, "rows": [[_fmt(entry.get(c)) for c in columns] for entry in flat]}


def _curves(entries: list[dict]) -> list[dict]:
    """One sparkline (SVG polyline points in a 160 × 40 box) per numeric column of a run's
    per-round monitor that has two or more finite values; the round's index columns excluded."""
    flat = [flatten(entry) for entry in entries]
    curves = []
    for column in dict.fromkeys(key for entry in flat for key in entry):
        if column in INDEX_COLUMNS:
            continue
        points = [(i, float(v)) for i, entry in enumerate(flat) if _finite(v := entry.get(column))]
        if len(points) < 2:
            continue
        values = [v for _, v in points]
        low, high, last = min(values), max(values), max(len(flat) - 1, 1)
        span = (high - low) or 1.0
        coords = " ".join(f"{4 + 152 * i / last:.1f},{36 - 32 * (v - low) / span:.1f}" for i, v in points)
        curves.append({"name": column, "points": coords, "first": _fmt(values[0]), "last": _fmt(values[-1]),
                       "low": _fmt(low), "high": _fmt(high)})
    return curves


def _finite(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _samples(folder: Path) -> list[str]:
    path = folder / "samples.json"
    return list(read_json(path))[:SAMPLES_SHOWN] if path.exists() else []


def _provenance(runs) -> list[tuple[str, str]]:
    """Git commits and package versions the runs recorded (``env.json``), each with its count."""
    commits: dict[str, int] = {}
    packages: dict[str, set[str]] = {}
    machines: dict[str, int] = {}
    for folder, _ in runs:
        env = run_environment(folder)
        if not env:
            continue
        git = env.get("git") or {}
        commit = f"{git.get('commit') or 'unknown'}{' (uncommitted changes)' if git.get('dirty') else ''}"
        commits[commit] = commits.get(commit, 0) + 1
        machine = f"{env.get('cpu', '?')}, {env.get('cpu_count', '?')} CPUs, native bf16 {env.get('native_bf16_cpu')}"
        machines[machine] = machines.get(machine, 0) + 1
        for name, version in (env.get("packages") or {}).items():
            packages.setdefault(name, set()).add(str(version))
    rows = [("runs", str(len(runs)))]
    rows += [("git commit", f"{commit} ({count} runs)") for commit, count in commits.items()]
    rows += [("machine", f"{machine} ({count} runs)") for machine, count in machines.items()]
    rows += [(name, ", ".join(sorted(versions))) for name, versions in sorted(packages.items())]
    return rows


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
