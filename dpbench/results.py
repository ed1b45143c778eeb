"""The run folder: what a run writes, how it is read back, written atomically.

``runs/<suite>/<run_id>/`` holds ``spec.json`` (the resolved run spec), ``env.json``,
``privacy.json`` (mechanism and calibrated noise), ``ledger.jsonl`` and ``releases/`` (the
privacy layer's write-ahead record), ``state/`` (method checkpoints), ``artifact.json`` +
``synthetic.jsonl`` (the method's output), ``samples.json``, ``log.txt`` and, last,
``result.json``. A run is complete exactly when ``result.json`` exists.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dpbench.api.artifacts import Artifact, SyntheticTexts, TrainedModel

RESULT_SCHEMA_VERSION = 1


def write_json(path: Path, value: Any) -> None:
    """Write JSON so a reader never sees a half-written file (temp file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(_jsonable(value), handle, indent=1, ensure_ascii=False, allow_nan=False)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else ("-inf" if value < 0 else "nan")
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def as_float(value: Any) -> float:
    """Read back a number written by ``write_json`` ("inf" strings included)."""
    return float(value)


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
    data: dict[str, int]
    finished_at: str
    schema_version: int = RESULT_SCHEMA_VERSION
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        return cls(**data)


def load_result(folder: Path) -> RunResult | None:
    path = folder / "result.json"
    if not path.exists():
        return None
    return RunResult.from_dict(read_json(path))


def save_artifact(folder: Path, artifact: Artifact) -> None:
    """Keep the method's output so a run killed during evaluation does not redo the method."""
    if isinstance(artifact, SyntheticTexts):
        path = folder / "synthetic.jsonl"
        digest = hashlib.sha256()
        with open(path, "w") as handle:
            for text in artifact.texts:
                line = json.dumps({"text": text}, ensure_ascii=False) + "\n"
                handle.write(line)
                digest.update(line.encode())
            handle.flush()
            os.fsync(handle.fileno())
        write_json(folder / "artifact.json", {"type": "synthetic_texts", "count": len(artifact.texts), "sha256": digest.hexdigest()})
    elif isinstance(artifact, TrainedModel):
        write_json(folder / "artifact.json", {"type": "trained_model", "path": str(Path(artifact.path).resolve())})
    else:
        raise TypeError(f"a method must return SyntheticTexts or TrainedModel, not {type(artifact).__name__}")


def load_artifact(folder: Path) -> Artifact | None:
    """The saved artifact, or None when absent or damaged."""
    meta_path = folder / "artifact.json"
    if not meta_path.exists():
        return None
    meta = read_json(meta_path)
    if meta["type"] == "trained_model":
        path = Path(meta["path"])
        return TrainedModel(path=path) if path.exists() else None
    digest, texts = hashlib.sha256(), []
    with open(folder / "synthetic.jsonl") as handle:
        for line in handle:
            digest.update(line.encode())
            texts.append(json.loads(line)["text"])
    if digest.hexdigest() != meta["sha256"] or len(texts) != meta["count"]:
        return None
    return SyntheticTexts(texts=tuple(texts))
