"""Publish runs and leaderboards to Weights & Biases (default plugin, off unless
``publish.wandb: true`` or ``--wandb``).

One wandb run per dpbench run, grouped by suite, whose wandb id is the run id
(``resume="allow"``), so ``dpbench publish`` after ``run --wandb`` updates it rather than adding
a duplicate: the summary (metrics, privacy, cost), per-round history (the method's
``state/monitor.json`` history and each release's diagnostics), the ledger and samples as
tables, and the run's records as an artifact. Under ``run --wandb`` the rounds are also logged
live as the method and the session report them (``run_progress``, as ``live/*``), and the same
wandb run is completed when the dpbench run finishes. Rounds are a custom x-axis
(``define_metric``: ``round`` for the history, ``live/round`` for the live rows), not wandb's
step, so the final history can be logged after the live rows (a POPri checkpoint's
``validation_downstream`` is only known at the end), and a resumed wandb run whose history was
published before (its summary holds ``round``) does not get it twice. The leaderboard is a
``wandb.Table`` and an artifact of the board files in one ``job_type="leaderboard"`` run per
suite, its plot (``dpbench leaderboard --html``) as an image. Without an
API key it logs offline and says how to ``wandb sync``. The API key is read by wandb from the
environment or ~/.netrc only; configs and uploaded records are scrubbed of keys that look like
secrets and of any string holding the value of an environment variable whose name looks like a
secret's.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from pathlib import Path

from dpbench.errors import DpbenchError
from dpbench.hookspecs import hookimpl
from dpbench.results import flatten, monitor_history, release_notes

SECRET_KEY = re.compile(r"(api[_-]?key|token|secret|password)", re.IGNORECASE)
SECRET_ENV = re.compile(r"API_KEY|SECRET|PASSWORD|_TOKEN$", re.IGNORECASE)
"""Names of environment variables whose values are secrets (``WANDB_API_KEY``, ``HF_TOKEN``, ...)."""
MIN_SECRET_LENGTH = 8
"""Shorter values (``1``, ``true``) would redact ordinary config values by coincidence."""
REDACTED = "[redacted]"


RUN_RECORDS = ("result.json", "spec.json", "privacy.json", "ledger.jsonl", "diagnostics.jsonl", "samples.json")
"""the run-folder files uploaded as the run's artifact (scrubbed like the config)"""


@hookimpl
def run_finished(run, result, folder):
    if run.publish.get("wandb"):
        publish_run(run, result, settings=run.publish, folder=folder)


_live: dict[str, object] = {}
"""wandb runs opened by ``run_progress``, by dpbench run id, until ``run_finished`` completes them
(or ``run_failed`` marks them failed)"""


@hookimpl
def run_progress(run, step, entry):
    if run.publish.get("wandb"):
        if run.run_id not in _live:
            _live[run.run_id] = _init_run(run, run.publish)
        row = {f"live/{k}": v for name, part in entry.items() for k, v in _numbers(part, name).items()}
        _live[run.run_id].log({"live/round": step, **row})


@hookimpl
def run_failed(run, error, folder):
    live = _live.pop(run.run_id, None)
    if live is not None:  # marked failed now, not left running until the process exits
        try:
            live.summary["error"] = scrub(f"{type(error).__name__}: {error}")
        finally:
            live.finish(exit_code=1)


@hookimpl
def leaderboard_written(suite, leaderboard, paths):
    settings = suite.config.get("publish") or {}
    if settings.get("wandb"):
        publish_leaderboard(suite, leaderboard, settings=settings, paths=paths)


def publish_run(spec, result, *, settings, folder: Path) -> None:
    wandb = _wandb()
    run = _live.pop(spec.run_id, None) or _init_run(spec, settings)
    if run.summary.get("round") is None:  # not published to this wandb run before
        for step, row in sorted(_history(Path(folder)).items()):
            run.log({"round": step, **row})
    summary = {f"{evaluator}/{name}": value
               for evaluator, scores in result.metrics.items() for name, value in scores.items()}
    summary.update({"privacy/epsilon_target": _finite(spec.epsilon), "privacy/delta": spec.delta,
                    "privacy/accountant": spec.accountant,
                    "privacy/epsilon_spent": _finite(float(result.privacy.get("epsilon_spent", math.nan))),
                    "privacy/noise_multiplier": result.privacy.get("noise_multiplier")})
    summary.update({f"cost/{k}": v for k, v in result.timings.items()})
    run.summary.update(summary)
    tables = {}
    ledger = _ledger_rows(result)
    if ledger:
        tables["privacy/ledger"] = wandb.Table(columns=list(ledger[0]), data=[list(r.values()) for r in ledger])
    samples = Path(folder) / "samples.json"
    if samples.exists():
        tables["samples"] = wandb.Table(columns=["text"], data=[[t] for t in json.loads(samples.read_text())])
    if tables:
        run.log(tables)
    artifact = wandb.Artifact(f"run-{spec.run_id}", type="dpbench-run",
                              description=f"records of dpbench run {spec.run_id}")
    for name in RUN_RECORDS:
        if (Path(folder) / name).exists():
            with artifact.new_file(name, mode="w", encoding="utf-8") as handle:
                handle.write(_scrubbed_text(Path(folder) / name))
    run.log_artifact(artifact)
    run.finish()
    _tell_sync(_mode(), run)


def _init_run(spec, settings):
    """The wandb run of dpbench run ``spec`` (created, or resumed when its id exists), its
    per-round metrics plotted against the round."""
    run = _wandb().init(project=settings.get("project") or "dpbench", entity=settings.get("entity"),
                        group=spec.suite, job_type=spec.method.label, name=spec.run_id, id=spec.run_id,
                        resume="allow", tags=[spec.dataset.label, f"eps={spec.budget.label}"],
                        config=scrub(spec.to_dict()), mode=_mode(), reinit="create_new")
    for axis, prefixes in (("round", ("monitor", "release")), ("live/round", ("live",))):
        run.define_metric(axis)
        for prefix in prefixes:
            run.define_metric(f"{prefix}/*", step_metric=axis)
    return run


def publish_leaderboard(suite, board, *, settings, paths=()) -> None:
    wandb = _wandb()
    mode = _mode()
    names = [n for n, _ in board.columns]
    columns = ["dataset", "method", "epsilon", "delta", "epsilon_ledger", *[f"{n} mean" for n in names],
               *[f"{n} std" for n in names], "gap_closed", "runs"]
    data = [[r.dataset, r.method, _finite(r.epsilon), r.delta, _finite(r.epsilon_ledger),
             *[r.metrics.get(n, {}).get("mean") for n in names], *[r.metrics.get(n, {}).get("std") for n in names],
             r.gap_closed, r.runs] for r in board.rows]
    run = wandb.init(project=settings.get("project") or "dpbench", entity=settings.get("entity"), group=suite.name,
                     job_type="leaderboard", name=f"{suite.name}-leaderboard", id=f"{suite.name}-leaderboard",
                     resume="allow", config=scrub(dict(suite.config)), mode=mode, reinit="create_new")
    run.log({f"leaderboard/{suite.name}": wandb.Table(columns=columns, data=data),
             **{f"plot/{Path(path).stem}": wandb.Image(str(path)) for path in paths if Path(path).suffix == ".png"}})
    if paths:
        artifact = wandb.Artifact(f"leaderboard-{suite.name}", type="dpbench-leaderboard")
        for path in paths:
            artifact.add_file(str(path))
        run.log_artifact(artifact)
    run.finish()
    _tell_sync(mode, run)


def scrub(value, secrets: tuple[str, ...] | None = None):
    """Drop every key that looks like a secret and replace every string containing a secret
    (default: the values of secret-looking environment variables) by ``"[redacted]"``, at any
    depth: a secret can reach a config under an innocent key."""
    if secrets is None:
        secrets = _secret_values()
    if isinstance(value, dict):
        return {k: scrub(v, secrets) for k, v in value.items() if not SECRET_KEY.search(str(k))}
    if isinstance(value, (list, tuple)):
        return [scrub(v, secrets) for v in value]
    if isinstance(value, str) and any(secret in value for secret in secrets):
        return REDACTED
    return value


def _secret_values() -> tuple[str, ...]:
    return tuple(value for name, value in os.environ.items()
                 if SECRET_ENV.search(name) and len(value) >= MIN_SECRET_LENGTH)


def _wandb():
    try:
        import wandb
    except ImportError as err:
        raise DpbenchError("publishing to wandb needs the wandb package: pip install 'dpbench[wandb]'") from err
    return wandb


def _mode() -> str:
    """Respect WANDB_MODE; otherwise online with an API key, offline without one."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    if netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore"):
        return "online"
    return "offline"


def _tell_sync(mode: str, run) -> None:
    if mode == "offline" and getattr(run, "dir", None):
        print(f"wandb: logged offline (no API key); upload with: wandb sync {Path(run.dir).parent}", file=sys.stderr)


def _finite(x):
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x


def _history(folder: Path) -> dict[int, dict]:
    """Per round: the method's monitor entry (``state/monitor.json``'s ``history``, index =
    checkpoint) as ``monitor/*`` and that round's release diagnostics as ``release/*``; numbers only."""
    rows: dict[int, dict] = {}
    for step, entry in enumerate(monitor_history(folder)):
        rows.setdefault(step, {}).update(_numbers(entry, "monitor"))
    for note in release_notes(folder):
        rows.setdefault(int(note["index"]), {}).update(_numbers(note, "release"))
    return rows


def _numbers(entry, prefix: str) -> dict[str, float]:
    """``{prefix/key: number}`` of a (nested) dict, e.g. ``release/agreement/chosen_as_noise_free``."""
    return {key: value for key, value in flatten(entry or {}, f"{prefix}/").items()
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)}


def _scrubbed_text(path: Path) -> str:
    """A JSON or JSON-lines record with ``scrub`` applied to every value."""
    if path.suffix == ".jsonl":
        return "".join(json.dumps(scrub(json.loads(line))) + "\n" for line in path.read_text().splitlines() if line)
    return json.dumps(scrub(json.loads(path.read_text())), indent=1)


def _ledger_rows(result) -> list[dict]:
    """The run's privacy ledger (copied into the result by the runner) as table rows."""
    releases = result.privacy.get("releases") or []
    columns = sorted({k for entry in releases for k in entry})
    return [{c: _cell(entry.get(c)) for c in columns} for entry in releases]


def _cell(value):
    return value if isinstance(value, (int, float, str, bool)) or value is None else str(value)
