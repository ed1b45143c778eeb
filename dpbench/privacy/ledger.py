"""The write-ahead privacy ledger, and the one rule that decides whether a run's ε can be trusted.

A run's ε is recomputed from its ledger alone, never from its config. One line per charged
release: ``{"index", "key", "kind", "noise_multiplier", "sampling_rate", "clip_norm",
"noise_std", "shape", "file", "sha256", "time"}``, plus ``"tree"`` (the tree it belongs to) for a
tree-aggregation release; ``file`` holds the noisy value (relative to the run folder), ``sha256``
hashes its float64 bytes. Never recorded: the noise seed and the
realised number of sampled clients (under Poisson sampling it depends on the private
population).

**The rule** (``check_ledger``): a private run's ledger is sound when every line parses and
ends in a newline, its indices are exactly 0, 1, 2, … with no key twice, each line carries the
kind, σ and sampling rate the session was calibrated with (and a tree release the tree its index
falls in, since each tree is charged on its own), there are no more lines than the
declared rounds (exactly as many once the run is complete), each stored release is present and
matches its hash (or was discarded on purpose, leaving a tombstone), and ``releases/`` holds
nothing the ledger does not name. A value is stored before its line is written, so a lost or
torn line always leaves such an unnamed file behind. A run whose ledger is not sound is
incomplete: the runner redoes it from scratch and the board never shows it — a damaged ledger
can only ever raise the ε reported, never lower it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from dpbench.api.method import REFERENCE_EPSILON
from dpbench.errors import DamagedRunError
from dpbench.privacy.accountant import DEFAULT_ACCOUNTANT, Charge, epsilon_of_charges

LEDGER_NAME = "ledger.jsonl"
RELEASES = "releases"
TOMBSTONE = ".discarded"
REQUIRED = {"index": int, "key": str, "kind": str, "noise_multiplier": (int, float), "sampling_rate": (int, float),
            "clip_norm": (int, float), "file": str, "sha256": str}


class LedgerError(DamagedRunError):
    """A ledger is damaged, or disagrees with its run folder or the calibrated mechanism."""


def read_ledger(path: Path) -> list[dict]:
    """Every line of the ledger at ``path`` (``[]`` when there is none); a line that does not
    parse or lacks its newline (a torn write) raises ``LedgerError``."""
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8", errors="replace")
    if text and not text.endswith("\n"):
        raise LedgerError(f"{path}: the last line is torn (no newline at the end)")
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise LedgerError(f"{path}:{number}: not a JSON ledger line ({err.msg})") from None
        if not isinstance(record, dict):
            raise LedgerError(f"{path}:{number}: not a JSON object")
        for name, kind in REQUIRED.items():
            if not isinstance(record.get(name), kind) or isinstance(record.get(name), bool):
                raise LedgerError(f"{path}:{number}: field {name!r} is {record.get(name)!r}; a ledger line needs "
                                  f"{name} of type {getattr(kind, '__name__', 'number')}")
        records.append(record)
    return records


def append_record(path: Path, record: dict, *, expected: list[dict]) -> None:
    """Append one line and fsync it, so the charge survives a crash right after.

    ``expected`` is what the writer believes the ledger holds; a ledger changed behind its back
    (a deleted or torn file, a line from another process) is refused before anything is added.
    """
    found = read_ledger(path)
    if [r["key"] for r in found] != [r["key"] for r in expected]:
        raise LedgerError(f"{path} changed under this run (it holds {len(found)} releases, this run made "
                          f"{len(expected)}): deleted, damaged, or written by another process")
    line = json.dumps(record, sort_keys=True, allow_nan=False) + "\n"
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())


def release_digest(value: np.ndarray) -> str:
    """The sha256 of a release's float64 bytes, as the ledger records it."""
    return hashlib.sha256(np.ascontiguousarray(value, dtype="<f8").tobytes()).hexdigest()


def check_ledger(run_dir: Path, *, mechanism: Mapping, noise_multiplier: float, complete: bool,
                 records: list[dict] | None = None) -> list[str]:
    """The problems that make ``run_dir``'s ledger untrustworthy (module docstring); ``[]`` when sound.

    ``mechanism`` is the declared ``MechanismSpec`` as a dict (kind, rounds, sampling_rate, and
    rounds_per_tree when restarted);
    ``complete`` also demands one release per declared round; ``records``, when given, is what
    the live session made, which the file must equal.
    """
    run_dir = Path(run_dir)
    try:
        found = read_ledger(run_dir / LEDGER_NAME)
    except LedgerError as err:
        return [str(err)]
    problems = []
    if records is not None and found != records:
        problems.append(f"{LEDGER_NAME} holds {len(found)} releases, the session made {len(records)}")
    expected = {"kind": mechanism["kind"], "noise_multiplier": noise_multiplier,
                "sampling_rate": mechanism["sampling_rate"]}
    tree_size = mechanism.get("rounds_per_tree") or mechanism["rounds"]
    keys, named = set(), set()
    for position, record in enumerate(found):
        where = f"{LEDGER_NAME} line {position + 1} ({record['key']!r})"
        if record["index"] != position:
            problems.append(f"{where} has index {record['index']}, expected {position} (a line is missing)")
        if record["key"] in keys:
            problems.append(f"{where} repeats a key")
        keys.add(record["key"])
        for name, value in expected.items():
            if record[name] != value:
                problems.append(f"{where} has {name}={record[name]!r}, the run was calibrated with {value!r}")
        if record["kind"] == "tree_aggregation" and record.get("tree") != position // tree_size:
            problems.append(f"{where} is in tree {record.get('tree')!r}, but release {position} belongs to tree "
                            f"{position // tree_size} ({tree_size} rounds per tree)")
        named.add(record["file"])
        problems += _stored_value_problems(run_dir, record, where)
    rounds = mechanism["rounds"]
    if len(found) > rounds:
        problems.append(f"{LEDGER_NAME} holds {len(found)} releases, more than the {rounds} declared")
    if complete and len(found) < rounds:
        problems.append(f"{LEDGER_NAME} holds {len(found)} of the {rounds} releases the method declared")
    folder = run_dir / RELEASES
    if folder.is_dir():
        for file in sorted(folder.iterdir()):
            name = f"{RELEASES}/{file.name.removesuffix(TOMBSTONE)}"
            if name not in named and not file.name.startswith("."):
                problems.append(f"{RELEASES}/{file.name} is a release the ledger does not list (a lost ledger line)")
    return problems


def run_ledger_problems(run_dir: Path, privacy: Mapping) -> list[str]:
    """Why a finished run's ε cannot be trusted (``check_ledger`` against the run's privacy
    record); ``[]`` for a sound private run and for the reference rows, which release nothing."""
    reference = privacy.get("reference")
    if reference is not None:
        if reference not in REFERENCE_EPSILON:
            return [f"reference {reference!r} is not one of {', '.join(REFERENCE_EPSILON)}"]
        if float(privacy.get("target_epsilon", "nan")) != REFERENCE_EPSILON[reference]:
            return [f"reference {reference!r} stands for ε = {REFERENCE_EPSILON[reference]:g}, "
                    f"not {privacy.get('target_epsilon')!r}"]
        return []
    try:
        mechanism, sigma = privacy["mechanism"], privacy["noise_multiplier"]
    except (KeyError, TypeError):
        return ["its privacy record names no mechanism"]
    return check_ledger(run_dir, mechanism=mechanism, noise_multiplier=sigma, complete=True)


def _stored_value_problems(run_dir: Path, record: dict, where: str) -> list[str]:
    path = run_dir / record["file"]
    if path.with_name(path.name + TOMBSTONE).exists():
        return []
    if not path.exists():
        return [f"{where}: its stored value {record['file']} is missing"]
    try:
        value = np.load(path)
    except (OSError, ValueError, EOFError) as err:
        return [f"{where}: its stored value {record['file']} is unreadable ({err})"]
    if release_digest(value) != record["sha256"]:
        return [f"{where}: its stored value {record['file']} does not match the ledger's sha256"]
    return []


def release_charges(records: list[dict]) -> list[Charge]:
    """The privacy charges of ledger lines, identical ones merged: Gaussian releases of the same
    σ and rate into one composition, tree releases into one charge per tree."""
    counts: dict[tuple, int] = {}
    for record in records:
        tree = record.get("tree") if record["kind"] == "tree_aggregation" else None
        group = (record["kind"], record["noise_multiplier"], record["sampling_rate"], tree)
        counts[group] = counts.get(group, 0) + 1
    return [Charge(kind, sigma, rate, count) for (kind, sigma, rate, _), count in counts.items()]


def epsilon_from_ledger(path: Path, *, delta: float, accountant: str = DEFAULT_ACCOUNTANT) -> float:
    """ε at ``delta`` of every release in the ledger at ``path`` (0 when missing or empty;
    ``check_ledger`` decides whether a run's ledger may be read at all).

    ``path`` is the ledger file or the run folder holding ``ledger.jsonl``.
    """
    path = Path(path)
    if path.is_dir():
        path = path / LEDGER_NAME
    return epsilon_of_charges(release_charges(read_ledger(path)), delta=delta, accountant=accountant)
