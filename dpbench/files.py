"""The one way dpbench and its plugins write a record or checkpoint file.

``atomic_write`` writes to a temporary file beside the target, fsyncs it, renames it over the
target and fsyncs the folder: a reader (or a resumed run) sees the old file or the new one,
never an empty or half-written one, whatever kills the writer (a crash, a full disk).
``write_sealed`` / ``read_sealed`` add a content hash, so a checkpoint changed on disk (a bit
flip, an edit) is refused on resume instead of silently continuing the run.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from dpbench.errors import DamagedRunError

SEAL = b"dpbench-sealed sha256:"


class CheckpointError(DamagedRunError):
    """A sealed checkpoint no longer matches its content hash."""


@contextmanager
def atomic_write(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """Yield a handle (``"w"`` text in UTF-8, or ``"wb"``) whose content replaces ``path`` only
    if the block finishes; on any error the target is left as it was."""
    if mode not in ("w", "wb"):
        raise ValueError(f"mode: {mode!r} is not allowed; expected 'w' or 'wb'")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
    _fsync_folder(path.parent)


def write_text(path: str | Path, text: str) -> None:
    with atomic_write(path) as handle:
        handle.write(text)


def write_json(path: str | Path, value: Any, *, indent: int | None = 1) -> None:
    """JSON with non-finite floats written as "inf"/"-inf"/"nan" strings (``float()`` reads them back)."""
    with atomic_write(path) as handle:
        json.dump(_jsonable(value), handle, indent=indent, ensure_ascii=False, allow_nan=False)


def write_sealed(path: str | Path, data: bytes) -> None:
    """Write ``data`` atomically behind a line holding its sha256."""
    with atomic_write(path, "wb") as handle:
        handle.write(SEAL + hashlib.sha256(data).hexdigest().encode() + b"\n" + data)


def read_sealed(path: str | Path) -> bytes:
    """The data ``write_sealed`` wrote to ``path``; ``CheckpointError`` when it changed since."""
    raw = Path(path).read_bytes()
    header, _, data = raw.partition(b"\n")
    if not header.startswith(SEAL) or header[len(SEAL):].decode(errors="replace") != hashlib.sha256(data).hexdigest():
        raise CheckpointError(f"{path}: the checkpoint does not match its content hash (changed or damaged on disk)")
    return data


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


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


def _fsync_folder(folder: Path) -> None:
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)
