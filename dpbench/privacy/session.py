"""The runner's privacy handle: Poisson sampling, noisy clipped sums, and the ledger behind them.

Every release is written to ``run_dir/releases/`` and charged in ``run_dir/ledger.jsonl``
(fsynced) before it is returned, so nothing unledgered can be used or logged. A key already in
the ledger (a resumed run) returns the stored value: no new noise, no new charge. Noise is keyed
by release, so a resumed run draws the same noise for its later rounds as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import secrets
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from dpbench.api.config import check_choice, check_int, check_positive
from dpbench.api.context import derive_seed
from dpbench.api.privacy import MechanismSpec, PrivacyBudget
from dpbench.errors import ConfigError, DpbenchError
from dpbench.privacy.accountant import ACCOUNTANTS, DEFAULT_ACCOUNTANT, epsilon_for, epsilon_of_charges
from dpbench.privacy.ledger import (LEDGER_NAME, LedgerError, append_record, drop_torn_tail, read_ledger,
                                    release_charges)
from dpbench.privacy.noise import noise_generator, noisy_clipped_sum

SAMPLING_STREAM = "privacy-sampling"


class BudgetExceededError(DpbenchError):
    """A release beyond the rounds the noise multiplier was calibrated for."""


class Session:
    """A ``PrivacySession`` over one run folder (one session at a time); build it with ``open_session``."""

    def __init__(self, spec: MechanismSpec, *, noise_multiplier: float, budget: PrivacyBudget, run_dir: Path,
                 seed: int | None, accountant: str, records: list[dict]):
        self.spec = spec
        self.noise_multiplier = noise_multiplier
        self.budget = budget
        self.run_dir = run_dir
        self.accountant = accountant
        self._seed = seed  # never written anywhere: it would let anyone subtract the noise
        self._sampling_seed = derive_seed(seed, SAMPLING_STREAM) if seed is not None else secrets.randbits(63)
        self._records = list(records)  # what is charged: every ledger line
        self._releases = {r["key"]: r for r in records}

    def poisson_sample(self, client_ids: Sequence[str], *, round_index: int) -> list[str]:
        """Each client independently with probability ``spec.sampling_rate``, decided by a hash of
        (run seed, round, client id): data-independent, reproducible, unaffected by other clients."""
        check_int("round_index", round_index, minimum=0)
        if round_index >= self.spec.rounds:
            raise ConfigError("round_index", round_index, f"an integer below the {self.spec.rounds} rounds planned")
        rate = self.spec.sampling_rate
        if rate == 1:
            return list(client_ids)
        return [cid for cid in client_ids if _uniform(self._sampling_seed, round_index, cid) < rate]

    def release_clipped_sum(self, key: str, contributions: np.ndarray | Iterator[np.ndarray], *,
                            clip_norm: float) -> np.ndarray:
        """Σ clip(row) + N(0, (σ·clip_norm)²), stored and ledgered before it is returned.

        ``contributions`` has one row per sampled client, shape (0, d) when nobody was sampled
        (the noise is still released and charged); it may also be an iterator of row batches,
        which a resumed release never iterates. Rows with NaN/inf become zero.
        """
        if not isinstance(key, str) or not key:
            raise ConfigError("key", key, "a non-empty string naming the release")
        check_positive("clip_norm", clip_norm)
        if key in self._releases:
            return self._replay(self._releases[key], contributions, clip_norm)
        if len(self._records) >= self.spec.rounds:
            raise BudgetExceededError(
                f"release {key!r} would be number {len(self._records) + 1}, but the noise multiplier "
                f"{self.noise_multiplier:g} was calibrated for {self.spec.rounds} releases"
            )
        rng = noise_generator(self._seed, key)
        value = noisy_clipped_sum(contributions, clip_norm=clip_norm, noise_multiplier=self.noise_multiplier, rng=rng)
        file = f"releases/{_file_stem(key)}.npy"
        _write_array(self.run_dir / file, value)
        record = {
            "key": key,
            "kind": self.spec.kind,
            "noise_multiplier": self.noise_multiplier,
            "sampling_rate": self.spec.sampling_rate,
            "clip_norm": clip_norm,
            "noise_std": self.noise_multiplier * clip_norm,
            "shape": list(value.shape),
            "file": file,
            "sha256": _digest(value),
            "time": _now(),
        }
        append_record(self.run_dir / LEDGER_NAME, record)
        self._records.append(record)
        self._releases[key] = record
        return value

    def epsilon_spent(self) -> float:
        """ε at the budget's δ of every release ledgered so far (resumed ones included)."""
        charges = release_charges(self._records)
        return epsilon_of_charges(charges, delta=self.budget.delta, accountant=self.accountant)

    def discard_release(self, key: str) -> None:
        """Delete the stored value of release ``key`` once the method's own checkpoint holds
        what it needed (DP-FedAvg's model-sized sums); the ledger line, its sha256 and its
        charge stay. Replaying a discarded release is then an error."""
        if key not in self._releases:
            raise ConfigError("key", key, "the key of a release made in this run: " + ", ".join(self._releases))
        (self.run_dir / self._releases[key]["file"]).unlink(missing_ok=True)

    def _replay(self, record: dict, contributions, clip_norm: float) -> np.ndarray:
        key = record["key"]
        if not (self.run_dir / record["file"]).exists():
            raise LedgerError(f"release {key!r} was made (it is in the ledger and charged) but its stored value "
                              f"{record['file']} was discarded; resume from a checkpoint taken after it")
        if record["clip_norm"] != clip_norm:
            raise LedgerError(f"release {key!r} was made with clip_norm {record['clip_norm']}, now {clip_norm}")
        if isinstance(contributions, np.ndarray) and contributions.shape[1:] != tuple(record["shape"]):
            raise LedgerError(f"release {key!r} had shape {record['shape']}; "
                              f"now rows of shape {contributions.shape[1:]}")
        value = np.load(self.run_dir / record["file"])
        if _digest(value) != record["sha256"]:
            raise LedgerError(f"{record['file']} does not match the ledger's sha256 for release {key!r}")
        return value


def open_session(
    spec: MechanismSpec,
    *,
    noise_multiplier: float,
    budget: PrivacyBudget,
    run_dir: Path,
    seed: int | None,
    accountant: str = DEFAULT_ACCOUNTANT,
) -> Session:
    """A session on ``run_dir``, resuming its ledger if there is one.

    Refuses a noise multiplier whose planned ε exceeds the budget, and a ledger written for a
    different mechanism. ``seed=None`` draws noise from OS entropy (production; not reproducible).
    """
    if not isinstance(spec, MechanismSpec):
        raise ConfigError("spec", spec, "a MechanismSpec")
    if spec.kind != "gaussian":
        raise ConfigError("mechanism", spec.kind, "'gaussian' (sessions do not release tree-aggregation noise yet)")
    if not isinstance(budget, PrivacyBudget):
        raise ConfigError("budget", budget, "a PrivacyBudget")
    check_positive("noise_multiplier", noise_multiplier, allow_zero=True)
    check_choice("accountant", accountant, ACCOUNTANTS)
    if seed is not None:
        check_int("seed", seed)
    # An infinite budget has nothing to exceed (and PLD cannot discretise near-zero noise).
    if not math.isinf(budget.epsilon):
        planned = epsilon_for(spec, noise_multiplier=noise_multiplier, delta=budget.delta, accountant=accountant)
        if planned > budget.epsilon:
            raise ConfigError(
                "noise_multiplier", noise_multiplier,
                f"a value whose ε over {spec.rounds} rounds is <= the budget {budget.epsilon:g} at δ={budget.delta:g} "
                f"(it gives {planned:.4f} under {accountant!r})",
            )
    run_dir = Path(run_dir)
    (run_dir / "releases").mkdir(parents=True, exist_ok=True)
    ledger = run_dir / LEDGER_NAME
    drop_torn_tail(ledger)
    records = read_ledger(ledger)
    current = {"kind": spec.kind, "noise_multiplier": noise_multiplier, "sampling_rate": spec.sampling_rate}
    for record in records:
        for name, value in current.items():
            if record.get(name) != value:
                raise LedgerError(
                    f"{ledger} holds release {record.get('key')!r} with {name}={record.get(name)!r}, this session has "
                    f"{value!r}; resume with the same settings or use a new run folder"
                )
    if len(records) > spec.rounds:
        raise LedgerError(f"{ledger} holds {len(records)} releases, more than the {spec.rounds} rounds planned")
    return Session(spec, noise_multiplier=noise_multiplier, budget=budget, run_dir=run_dir, seed=seed,
                   accountant=accountant, records=records)


def _uniform(salt: int, round_index: int, client_id) -> float:
    digest = hashlib.sha256(f"{salt}:{round_index}:{client_id}".encode()).digest()
    return (int.from_bytes(digest[:8], "little") >> 11) / 2.0**53


def _file_stem(key: str) -> str:
    """A file name for ``key``: readable, and unique through a hash of the exact key."""
    readable = re.sub(r"[^A-Za-z0-9._-]", "_", key)[:80].lstrip(".")
    return f"{readable}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def _digest(value: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(value, dtype="<f8").tobytes()).hexdigest()


def _write_array(path: Path, value: np.ndarray) -> None:
    """Write ``value`` atomically and durably (temp file, fsync, rename, fsync the folder)."""
    temp = path.with_name(path.name + ".tmp")
    with open(temp, "wb") as handle:
        np.save(handle, value)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")
