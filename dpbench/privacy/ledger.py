"""The write-ahead privacy ledger: one JSON line per noisy release, fsynced before the value is used.

A run's ε is recomputed from its ledger alone, never from its config. One line per charged
release: ``{"key", "kind", "noise_multiplier", "sampling_rate", "clip_norm", "noise_std",
"shape", "file", "sha256", "time"}``; ``file`` holds the noisy value (relative to the run
folder), ``sha256`` hashes its float64 bytes. Never recorded: the noise seed (it would let anyone
subtract the noise) and the realised number of sampled clients (under Poisson sampling it
depends on the private population).

A final line without its newline is a write cut short by a crash: that release never returned,
so it was never used and is not charged (the next session truncates it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from dpbench.errors import DpbenchError
from dpbench.privacy.accountant import DEFAULT_ACCOUNTANT, Charge, epsilon_of_charges

LEDGER_NAME = "ledger.jsonl"


class LedgerError(DpbenchError):
    """A ledger file is corrupt or belongs to a different mechanism."""


def read_ledger(path: Path) -> list[dict]:
    """Every complete line of the ledger at ``path`` (``[]`` when there is none)."""
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    complete = lines[:-1]  # the last piece is "" or a torn write
    records = []
    for number, line in enumerate(complete, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise LedgerError(f"{path}:{number}: not a JSON ledger line ({err.msg})") from None
    return records


def append_record(path: Path, record: dict) -> None:
    """Append one line and fsync it, so the charge survives a crash right after."""
    line = json.dumps(record, sort_keys=True, allow_nan=False) + "\n"
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())


def drop_torn_tail(path: Path) -> None:
    """Cut a final line a crash left without its newline (see the module docstring)."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as handle:
            handle.truncate(data.rfind(b"\n") + 1)
            handle.flush()
            os.fsync(handle.fileno())


def release_charges(records: list[dict]) -> list[Charge]:
    """The privacy charges of ledger lines, identical ones merged."""
    counts: dict[tuple, int] = {}
    for record in records:
        try:
            group = (record["kind"], record["noise_multiplier"], record["sampling_rate"])
        except KeyError as err:
            raise LedgerError(f"ledger line for key {record.get('key')!r} lacks {err.args[0]!r}") from None
        counts[group] = counts.get(group, 0) + 1
    return [Charge(kind, sigma, rate, count) for (kind, sigma, rate), count in counts.items()]


def epsilon_from_ledger(path: Path, *, delta: float, accountant: str = DEFAULT_ACCOUNTANT) -> float:
    """ε at ``delta`` of every release in the ledger at ``path`` (0 when missing or empty).

    ``path`` is the ledger file or the run folder holding ``ledger.jsonl``.
    """
    path = Path(path)
    if path.is_dir():
        path = path / LEDGER_NAME
    return epsilon_of_charges(release_charges(read_ledger(path)), delta=delta, accountant=accountant)
