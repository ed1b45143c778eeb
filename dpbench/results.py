"""The run folder: what a run writes, how it is read back, written atomically.

``runs/<suite>/<run_id>/`` holds ``spec.json`` (the resolved run spec), ``env.json``,
``privacy.json`` (mechanism and calibrated noise), ``ledger.jsonl`` and ``releases/`` (the
privacy layer's write-ahead record), ``state/`` (method checkpoints), ``artifact.json`` +
``synthetic.jsonl`` or a model folder (the method's output, sealed by a content hash),
``samples.json``, ``log.txt`` and, last, ``result.json``. A run is complete when
``result.json`` reads back and, for a private run, its ledger is sound
(``dpbench.privacy.ledger.check_ledger``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dpbench.api.artifacts import Artifact, SyntheticTexts, TrainedModel
from dpbench.errors import DamagedRunError
from dpbench.files import atomic_write, read_json, write_json

RESULT_SCHEMA_VERSION = 1


class ArtifactError(DamagedRunError):
    """A method's saved output no longer matches what the method returned."""


def as_float(value: Any) -> float:
    """Read back a number written by ``write_json`` ("inf" strings included)."""
    return float(value)


@dataclass
class PrivacyRecord:
    """A run's privacy section (``result.json``'s ``privacy``; ``privacy.json`` without the
    releases): what was asked, what was calibrated and, from the ledger, what was spent."""

    target_epsilon: float
    delta: float
    accountant: str
    noise: str
    reference: str | None = None
    """the reference rows' kind (``dpbench.api.method.REFERENCE_EPSILON``); they release nothing"""
    mechanism: dict[str, Any] | None = None
    noise_multiplier: float | None = None
    epsilon_spent: float | None = None
    """recomputed from the ledger once the run is complete"""
    releases: list[dict] = field(default_factory=list)
    """the ledger's lines"""


@dataclass
class RunResult:
    """``result.json``: the record the leaderboard is built from (schema ``RESULT_SCHEMA_VERSION``)."""

    run_id: str
    suite: str
    spec: dict[str, Any]
    metrics: dict[str, dict[str, float]]
    """evaluator label -> metric name -> value"""
    metric_specs: dict[str, dict[str, dict[str, Any]]]
    """evaluator label -> metric name -> {higher_is_better, description}"""
    versions: dict[str, str]
    """plugin kind/label -> version of the plugin that produced the numbers"""
    privacy: dict[str, Any]
    """target epsilon, delta, accountant, noise_multiplier, mechanism, releases, epsilon_spent"""
    timings: dict[str, float]
    data: dict[str, Any]
    finished_at: str
    schema_version: int = RESULT_SCHEMA_VERSION
    notes: list[str] = field(default_factory=list)
    checks: dict[str, Any] = field(default_factory=dict)
    """privacy checks of the output, e.g. ``canaries``: ``dpbench.canaries.canary_report``"""
    output_texts: int | None = None
    """M: how many texts the method handed the evaluators (None: a trained model)"""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        return cls(**data)


def load_result(folder: Path) -> RunResult | None:
    """The run's result, or None when absent or damaged (a truncated file is "not complete")."""
    try:
        return RunResult.from_dict(read_json(folder / "result.json"))
    except (OSError, ValueError, TypeError):
        return None


def save_artifact(folder: Path, artifact: Artifact, *, method_s: float | None = None) -> None:
    """Keep the method's output, sealed by a content hash, so a run killed during evaluation
    does not redo the method and a changed output is never evaluated; ``method_s``, what making
    it cost, stays with it for the result of a later attempt that reuses it."""
    cost = {} if method_s is None else {"method_s": method_s}
    if isinstance(artifact, SyntheticTexts):
        digest = hashlib.sha256()
        with atomic_write(folder / "synthetic.jsonl") as handle:
            for text in artifact.texts:
                line = json.dumps({"text": text}, ensure_ascii=False) + "\n"
                handle.write(line)
                digest.update(line.encode())
        write_json(folder / "artifact.json", {"type": "synthetic_texts", "count": len(artifact.texts),
                                              "sha256": digest.hexdigest(), **cost})
    elif isinstance(artifact, TrainedModel):
        root, path = folder.resolve(), Path(artifact.path).resolve()
        if not path.is_dir() or not path.is_relative_to(root):
            raise TypeError(f"a TrainedModel must be a folder inside the run folder {root} (under "
                            f"ctx.checkpoint_dir); got {artifact.path}")
        relative = path.relative_to(root)
        write_json(folder / "artifact.json", {"type": "trained_model", "path": relative.as_posix(),
                                              "sha256": folder_digest(path), **cost})
    else:
        raise TypeError(f"a method must return SyntheticTexts or TrainedModel, not {type(artifact).__name__}")


def load_artifact(folder: Path) -> Artifact | None:
    """The saved artifact; None when none was saved or its record is torn (redo the method).

    Raises ``ArtifactError`` when the saved output changed since the method returned.
    """
    try:
        meta = read_json(folder / "artifact.json")
        kind, sealed = meta["type"], meta["sha256"]
        where = meta["path"] if kind == "trained_model" else int(meta["count"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if kind not in ("trained_model", "synthetic_texts"):
        return None
    if kind == "trained_model":
        path = folder / where
        found = folder_digest(path) if path.is_dir() else "missing"
        if found != sealed:
            raise ArtifactError(f"{path}: the trained model changed since the method returned it (content hash "
                                f"{found[:12]}, sealed {sealed[:12]}); re-run the method")
        return TrainedModel(path=path)
    digest, texts = hashlib.sha256(), []
    try:
        with open(folder / "synthetic.jsonl", encoding="utf-8") as handle:
            for line in handle:
                digest.update(line.encode())
                texts.append(json.loads(line)["text"])
    except (OSError, ValueError, KeyError, TypeError):
        texts = None
    if texts is None and not (folder / "synthetic.jsonl").is_file():
        raise ArtifactError(f"{folder / 'synthetic.jsonl'}: the synthetic texts are missing (a committed run folder "
                            f"keeps none); re-run the method")
    if texts is None or digest.hexdigest() != sealed or len(texts) != where:
        raise ArtifactError(f"{folder / 'synthetic.jsonl'}: the synthetic texts changed since the method returned "
                            f"them (they no longer match artifact.json); re-run the method")
    return SyntheticTexts(texts=tuple(texts))


def saved_method_seconds(folder: Path) -> float | None:
    """What making the saved artifact cost (``save_artifact``'s ``method_s``); None when unrecorded."""
    try:
        return float(read_json(folder / "artifact.json")["method_s"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def folder_digest(path: Path) -> str:
    """sha256 over every file under ``path`` (relative names and bytes, in sorted order)."""
    digest = hashlib.sha256()
    for file in sorted(p for p in Path(path).rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def release_notes(folder: Path) -> list[dict]:
    """The release diagnostics a seeded run's privacy session noted, one per ledgered release
    (the last note of each key); a torn line is skipped: the notes are a benchmark aid, not a
    record."""
    from dpbench.privacy.ledger import LEDGER_NAME, LedgerError, read_ledger
    from dpbench.privacy.session import DIAGNOSTICS_NAME

    path, by_key = Path(folder) / DIAGNOSTICS_NAME, {}
    if not path.exists():
        return []
    for line in path.read_text().splitlines():
        try:
            note = json.loads(line)
            by_key[note["key"]] = note
        except (ValueError, KeyError, TypeError):
            continue
    try:
        ledgered = {record["key"] for record in read_ledger(Path(folder) / LEDGER_NAME)}
    except LedgerError:  # a damaged run: nothing of it is shown
        return []
    return [note for key, note in by_key.items() if key in ledgered]


ENV_NAME = "env.json"
"""a run's machine, package versions and git commit (``dpbench.env.environment()``)"""


def run_environment(folder: Path) -> dict:
    """What a run recorded of where it ran (``env.json``); {} for a run folder that kept none."""
    path = Path(folder) / ENV_NAME
    return read_json(path) if path.exists() else {}


def run_machine(folder: Path) -> str | None:
    """The machine a run's numbers come from (``dpbench.cache.machine_label`` of its ``env.json``);
    None for a run folder that kept none or holds a torn one."""
    from dpbench.cache import machine_label

    try:
        env = run_environment(folder)
    except ValueError:
        return None
    return machine_label(env.get("cpu"), env.get("native_bf16_cpu", True)) if env else None


def monitor_history(folder: Path) -> list[dict]:
    """The per-round monitor a method keeps as ``history`` in ``state/monitor.json`` (index =
    round or checkpoint); [] when the method keeps none or the run folder dropped its state."""
    path = Path(folder) / "state" / "monitor.json"
    return list(read_json(path).get("history") or []) if path.exists() else []


def flatten(entry: dict, prefix: str = "") -> dict:
    """A nested dict one level deep, keys joined by ``/`` under ``prefix`` (e.g.
    ``agreement/chosen_as_noise_free``): how the board page and wandb show release notes and
    monitor entries."""
    out = {}
    for key, value in entry.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out


VALIDATION_SCORE = "validation_score"
"""the one metric of a run scored for tuning (``Runner(scoring="validation")``)"""


def validation_scored(result: RunResult) -> bool:
    """Whether ``result`` was scored on the validation split only (``dpbench tune``), not on test."""
    return any(VALIDATION_SCORE in scores for scores in result.metrics.values())
