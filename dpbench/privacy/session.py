"""The runner's privacy handle: the round's cohort, noisy clipped sums, and the ledger behind them.

The session owns sampling: it draws each round's cohort from the run's client population,
and a release accepts rows only from clients of that round's cohort (release ``i`` belongs to
round ``i``), so a method cannot declare one sampling rate and release at another. Every
release is written to ``run_dir/releases/`` and charged in ``run_dir/ledger.jsonl`` (fsynced)
before it is returned, so nothing unledgered can be used or logged. A key already in the
ledger (a resumed run) returns the stored value: no new noise, no new charge.

Tree aggregation (``kind="tree_aggregation"``, DP-FTRL; Kairouz et al., ICML 2021): each
client takes part in exactly one round of each tree (a keyed hash of the tree and its id picks
the round: no sampling, and no client's round depends on another's), and release ``t`` is round
``t``'s clipped sum plus the *increment* of its tree's prefix noise: the prefix sums of a tree's
releases are then the true prefix sums plus the noise of the ⌈log₂⌉ completed tree nodes that
cover them, each node N(0, (σ·clip_norm)²) drawn once from the session's noise stream (keyed by
tree and node). The tree restarts every ``rounds_per_tree`` rounds: new nodes, a new assignment,
its own ledger charge. Every release has the same clip norm and shape. Seeded nodes and round
assignments are re-derived from the seed; in secure mode the assignment's key is kept in
``TREE_SALT`` and each node in ``TREE_NOISE`` only while a later release still needs it, so a
killed run resumes with the rounds and nodes it already used.

Noise modes: ``seeded`` keys the noise by run seed and release, so runs reproduce and a
resumed run draws what an uninterrupted one would — a simulation mode, since anyone with the
seed and a stored release can subtract the noise. A seeded session also writes, per release,
how much of the noise-free sum the release carries (``DIAGNOSTICS_NAME``: norms of sum and
noise, cosine, rank correlation) for the board; the method never sees it. ``secure`` draws
noise and cohorts from the operating system's CSPRNG and stores nothing they could be
derived from.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import secrets
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from dpbench.api.config import check_choice, check_int, check_positive
from dpbench.api.context import derive_seed
from dpbench.api.privacy import NOISE_MODES, MechanismSpec, PrivacyBudget
from dpbench.errors import ConfigError, PrivacyMisuseError
from dpbench.files import atomic_write
from dpbench.privacy.accountant import ACCOUNTANTS, DEFAULT_ACCOUNTANT, epsilon_for, epsilon_of_charges
from dpbench.privacy.ledger import (
    LEDGER_NAME,
    RELEASES,
    TOMBSTONE,
    LedgerError,
    append_record,
    check_ledger,
    read_ledger,
    release_charges,
    release_digest,
)
from dpbench.privacy.noise import (
    clipped_sum,
    clipped_sum_and_noise,
    gaussian_noise,
    noise_generator,
    release_diagnostics,
    tree_increment,
    tree_nodes,
)

SAMPLING_STREAM = "privacy-sampling"
TREE_NOISE = "tree-noise"
"""secure tree nodes a later release still needs (the others are deleted as soon as they are not):
secret noise at rest"""
TREE_SALT = "tree-salt"
"""a secure tree's round-assignment key, kept so a resumed run assigns every client the same round"""
DIAGNOSTICS_NAME = "diagnostics.jsonl"
"""per release of a seeded run, how much of the noise-free sum it carries (benchmark only)"""


class BudgetExceededError(PrivacyMisuseError):
    """A release beyond the rounds the noise multiplier was calibrated for."""


class Session:
    """A ``PrivacySession`` over one run folder (one session at a time); build it with ``open_session``."""

    def __init__(self, spec: MechanismSpec, *, noise_multiplier: float, budget: PrivacyBudget, run_dir: Path,
                 clients: tuple[str, ...], seed: int | None, accountant: str, records: list[dict],
                 agreement: Callable[[np.ndarray, np.ndarray], dict] | None = None,
                 report: Callable[[int, dict], None] | None = None):
        self.spec = spec
        self.noise_multiplier = noise_multiplier
        self.budget = budget
        self.run_dir = run_dir
        self.accountant = accountant
        self._population = clients
        self._seed = seed  # None in secure mode; in seeded mode it determines the noise
        self._sampling_salt = derive_seed(seed, SAMPLING_STREAM) if seed is not None else secrets.token_hex(32)
        if spec.kind == "tree_aggregation" and seed is None:  # one round per client and tree, across resumes
            self._sampling_salt = _kept_salt(run_dir / TREE_SALT, self._sampling_salt)
        self._cohorts: dict[int, frozenset[str]] = {}
        self._records = list(records)  # what is charged: every ledger line
        self._releases = {r["key"]: r for r in records}
        self._agreement = agreement  # the method's release_agreement, for the diagnostics only
        self._report = report  # where each diagnostics line goes live (publishers), besides its file
        if spec.kind == "tree_aggregation":
            self._forget_nodes(len(self._records))

    @property
    def records(self) -> list[dict]:
        """The ledger lines this session holds (resumed ones included)."""
        return list(self._records)

    def cohort(self, round_index: int) -> list[str]:
        """The clients taking part in round ``round_index``, sorted: each client of the run
        independently with probability ``spec.sampling_rate``, decided by a keyed hash of
        (round, client id): data-independent and unaffected by other clients."""
        check_int("round_index", round_index, minimum=0)
        if round_index >= self.spec.rounds:
            raise PrivacyMisuseError(f"round_index {round_index}: the mechanism declared {self.spec.rounds} rounds")
        if self.spec.kind == "tree_aggregation":  # every client in exactly one round of each tree
            tree, position, size = self._tree_slot(round_index)
            return [cid for cid in self._population if _tree_round(self._sampling_salt, tree, cid, size) == position]
        rate = self.spec.sampling_rate
        if rate == 1:
            return list(self._population)
        return [cid for cid in self._population if _uniform(self._sampling_salt, round_index, cid) < rate]

    def release_clipped_sum(self, key: str, contributions: np.ndarray | Iterator[np.ndarray], *,
                            clip_norm: float, clients: Sequence[str]) -> np.ndarray:
        """Σ clip(row) + N(0, (σ·clip_norm)²), stored and ledgered before it is returned.

        ``contributions`` has one row per client of ``clients`` (in that order), which must be
        distinct members of ``cohort(i)`` for this release's number ``i``; shape (0, d) when
        nobody takes part (the noise is still released and charged). It may also be an
        iterator of row batches, which a resumed release never iterates. Rows with NaN/inf
        become zero.
        """
        if not isinstance(key, str) or not key:
            raise ConfigError("key", key, "a non-empty string naming the release")
        check_positive("clip_norm", clip_norm)
        if key in self._releases:
            return self._replay(self._releases[key], contributions, clip_norm)
        index = len(self._records)
        if index >= self.spec.rounds:
            raise BudgetExceededError(
                f"release {key!r} would be number {index + 1}, but the noise multiplier "
                f"{self.noise_multiplier:g} was calibrated for {self.spec.rounds} releases"
            )
        contributors = self._check_contributors(key, index, clients)
        counted = _CountedRows(contributions)
        tree = self.spec.kind == "tree_aggregation"
        if tree:
            total, noise = clipped_sum(counted, clip_norm=clip_norm), None
        else:
            total, noise = clipped_sum_and_noise(counted, clip_norm=clip_norm, noise_multiplier=self.noise_multiplier,
                                                 rng=noise_generator(self._seed, key))
        if counted.rows != len(contributors):
            raise PrivacyMisuseError(f"release {key!r}: {counted.rows} rows for {len(contributors)} clients; "
                                     f"pass one row per client, in the order of clients=")
        if tree:
            noise = self._tree_increment(key, index, clip_norm=clip_norm, shape=total.shape)
        value = total + noise
        file = f"{RELEASES}/{_file_stem(key)}.npy"
        with atomic_write(self.run_dir / file, "wb") as handle:
            np.save(handle, value)
        record = {
            "index": index,
            "key": key,
            "kind": self.spec.kind,
            "noise_multiplier": self.noise_multiplier,
            "sampling_rate": self.spec.sampling_rate,
            "clip_norm": clip_norm,
            "noise_std": self.noise_multiplier * clip_norm,
            "shape": list(value.shape),
            "file": file,
            "sha256": release_digest(value),
            "time": _now(),
        }
        if tree:
            record["tree"] = self._tree_slot(index)[0]
        note = None
        if self._seed is not None:  # seeded runs are simulations; a secure run keeps nothing of the clean sum
            note = {"key": key, "index": index, "clients": len(contributors), **release_diagnostics(total, noise)}
            if self._agreement is not None:
                note["agreement"] = self._agreement(value, total)
            _append_note(self.run_dir / DIAGNOSTICS_NAME, note)
        append_record(self.run_dir / LEDGER_NAME, record, expected=self._records)
        self._records.append(record)
        self._releases[key] = record
        if tree:
            self._forget_nodes(index + 1)
        if note is not None and self._report is not None:
            self._report(index, {"release": note})
        return value

    def epsilon_spent(self) -> float:
        """ε at the budget's δ of every release ledgered so far (resumed ones included)."""
        charges = release_charges(self._records)
        return epsilon_of_charges(charges, delta=self.budget.delta, accountant=self.accountant)

    def discard_release(self, key: str) -> None:
        """Delete the stored value of release ``key`` once the method's own checkpoint holds
        what it needed (DP-FedAvg's model-sized sums), leaving a tombstone; the ledger line, its
        sha256 and its charge stay. Replaying a discarded release is then an error."""
        if key not in self._releases:
            raise ConfigError("key", key, "the key of a release made in this run: " + ", ".join(self._releases))
        path = self.run_dir / self._releases[key]["file"]
        path.with_name(path.name + TOMBSTONE).touch()
        path.unlink(missing_ok=True)

    def _tree_slot(self, index: int) -> tuple[int, int, int]:
        """(tree, position in it, its rounds) of round ``index``."""
        sizes = self.spec.tree_sizes()
        tree = index // sizes[0]
        return tree, index - tree * sizes[0], sizes[tree]

    def _tree_increment(self, key: str, index: int, *, clip_norm: float, shape: tuple[int, ...]) -> np.ndarray:
        """Release ``index``'s tree's prefix noise after it minus the one before it."""
        first = next((r for r in self._records if r["kind"] == "tree_aggregation"), None)
        if first is not None and (first["clip_norm"], tuple(first["shape"])) != (clip_norm, shape):
            raise PrivacyMisuseError(
                f"release {key!r}: every release of a tree has the clip norm and shape of the first "
                f"({first['clip_norm']}, {tuple(first['shape'])}); got ({clip_norm}, {shape})")
        std = self.noise_multiplier * clip_norm
        tree, position, _ = self._tree_slot(index)
        return tree_increment(position, lambda node: self._tree_node(tree, node, std=std, shape=shape), shape=shape)

    def _forget_nodes(self, released: int) -> None:
        """Delete the kept secure nodes that no release after the first ``released`` needs: all
        but those of the current tree covering them (what the next increment subtracts), all once
        a tree is complete, and any kept for a release that never reached the ledger."""
        folder = self.run_dir / TREE_NOISE
        if not folder.is_dir():
            return
        keep = set()
        if released < self.spec.rounds:
            tree, position, _ = self._tree_slot(released)
            keep = {_node_name(tree, node) for node in tree_nodes(position)}
        for file in folder.iterdir():
            if file.stem not in keep:
                file.unlink()
        if not any(folder.iterdir()):
            folder.rmdir()

    def _tree_node(self, tree: int, node: tuple[int, int], *, std: float, shape: tuple[int, ...]) -> np.ndarray:
        """Node ``(level, j)`` of tree ``tree``: drawn once per run (seeded: from its key;
        secure: kept under ``TREE_NOISE`` from its first use on)."""
        name = _node_name(tree, node)
        if self._seed is not None:
            return gaussian_noise(noise_generator(self._seed, name), std=std, shape=shape)
        path = self.run_dir / TREE_NOISE / f"{name}.npy"
        if path.exists():
            value = np.load(path)
            if value.shape != shape:
                raise LedgerError(f"{path} holds a tree node of shape {value.shape}; the tree's releases have {shape}")
            return value
        value = gaussian_noise(noise_generator(None, name), std=std, shape=shape)
        path.parent.mkdir(exist_ok=True)
        with atomic_write(path, "wb") as handle:
            np.save(handle, value)
        return value

    def _check_contributors(self, key: str, index: int, clients) -> list[str]:
        if isinstance(clients, (str, bytes)) or not isinstance(clients, Sequence):
            raise ConfigError("clients", clients, "the ids of the clients whose rows are released, a list from "
                              "cohort(round)")
        contributors = list(clients)
        if len(set(contributors)) != len(contributors):
            raise PrivacyMisuseError(f"release {key!r}: a client appears twice in clients=")
        if index not in self._cohorts:
            self._cohorts[index] = frozenset(self.cohort(index))
        outside = [c for c in contributors if c not in self._cohorts[index]]
        if outside:
            shown = ", ".join(map(repr, outside[:5])) + (f" and {len(outside) - 5} more" if len(outside) > 5 else "")
            raise PrivacyMisuseError(
                f"release {key!r} is release {index} of the run, so its rows must come from cohort({index}) "
                f"(rate {self.spec.sampling_rate:g}); {shown} are not in it")
        return contributors

    def _replay(self, record: dict, contributions, clip_norm: float) -> np.ndarray:
        key = record["key"]
        path = self.run_dir / record["file"]
        if not path.exists():
            raise LedgerError(f"release {key!r} was made (it is in the ledger and charged) but its stored value "
                              f"{record['file']} was discarded; resume from a checkpoint taken after it")
        if record["clip_norm"] != clip_norm:
            raise PrivacyMisuseError(f"release {key!r} was made with clip_norm {record['clip_norm']}, now {clip_norm}")
        if isinstance(contributions, np.ndarray) and contributions.shape[1:] != tuple(record["shape"]):
            raise PrivacyMisuseError(f"release {key!r} had shape {record['shape']}; "
                                     f"now rows of shape {contributions.shape[1:]}")
        value = np.load(path)
        if release_digest(value) != record["sha256"]:
            raise LedgerError(f"{record['file']} does not match the ledger's sha256 for release {key!r}")
        return value


def _append_note(path: Path, note: dict) -> None:
    """Append a diagnostics line, synced *before* its release's ledger line, so every ledgered
    release has its note; a release stopped before its ledger line is made again (same seeded
    noise, same note; readers keep the last note per key, of releases in the ledger). After a
    torn last line the note starts on a line of its own."""
    torn = False
    if path.exists() and path.stat().st_size:
        with open(path, "rb") as handle:
            handle.seek(-1, 2)
            torn = handle.read(1) != b"\n"
    with open(path, "a") as handle:
        handle.write(("\n" if torn else "") + json.dumps(note) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


class _CountedRows:
    """Row batches passed through to the clipped sum, counting the rows."""

    def __init__(self, contributions):
        self.rows = 0
        self._batches = contributions if isinstance(contributions, Iterator) else iter((contributions,))

    def __iter__(self):
        return self

    def __next__(self):
        batch = next(self._batches)
        self.rows += len(batch) if np.ndim(batch) > 0 else 0  # the clipped sum refuses a 0-d batch
        return batch


def open_session(
    spec: MechanismSpec,
    *,
    noise_multiplier: float,
    budget: PrivacyBudget,
    run_dir: Path,
    clients: Sequence[str],
    noise: str = "seeded",
    seed: int | None = None,
    accountant: str = DEFAULT_ACCOUNTANT,
    agreement: Callable[[np.ndarray, np.ndarray], dict] | None = None,
    report: Callable[[int, dict], None] | None = None,
) -> Session:
    """A session on ``run_dir`` over the client population ``clients``, resuming its ledger;
    ``agreement(noisy, clean)`` (the method's ``release_agreement``) joins the diagnostics, and
    ``report(index, {"release": line})`` gets each diagnostics line as it is written.

    Refuses a noise multiplier whose planned ε exceeds the budget, and a ledger that is not
    sound (``check_ledger``) for this mechanism. ``noise="seeded"`` needs the run ``seed``;
    ``noise="secure"`` refuses one (see the module docstring).
    """
    if not isinstance(spec, MechanismSpec):
        raise ConfigError("spec", spec, "a MechanismSpec")
    if spec.kind == "tree_aggregation" and spec.sampling_rate != 1:
        raise ConfigError("sampling_rate", spec.sampling_rate, "1 for tree aggregation: each client takes part in "
                          "exactly one round of the tree, chosen by the session (no sampling amplification)")
    if not isinstance(budget, PrivacyBudget):
        raise ConfigError("budget", budget, "a PrivacyBudget")
    check_positive("noise_multiplier", noise_multiplier, allow_zero=True)
    check_choice("accountant", accountant, ACCOUNTANTS)
    check_choice("privacy.noise", noise, NOISE_MODES)
    if noise == "seeded":
        check_int("seed", seed)
    elif seed is not None:
        raise ConfigError("seed", seed, "None: secure noise is never derived from a seed")
    population = tuple(sorted(str(c) for c in clients))
    if len(set(population)) != len(population):
        repeated = sorted({c for c in population if population.count(c) > 1})
        raise ConfigError("clients", repeated[:5], "distinct client ids")
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
    (run_dir / RELEASES).mkdir(parents=True, exist_ok=True)
    mechanism = {"kind": spec.kind, "rounds": spec.rounds, "sampling_rate": spec.sampling_rate,
                 "rounds_per_tree": spec.rounds_per_tree}
    problems = check_ledger(run_dir, mechanism=mechanism, noise_multiplier=noise_multiplier, complete=False)
    if problems:
        raise LedgerError(f"{run_dir / LEDGER_NAME} is not sound: " + "; ".join(problems))
    return Session(spec, noise_multiplier=noise_multiplier, budget=budget, run_dir=run_dir, clients=population,
                   seed=seed, accountant=accountant, records=read_ledger(run_dir / LEDGER_NAME),
                   agreement=agreement, report=report)


def _node_name(tree: int, node: tuple[int, int]) -> str:
    return f"tree-{tree}-node-{node[0]}-{node[1]}"


def _kept_salt(path: Path, fresh: str) -> str:
    """The salt stored at ``path``, or ``fresh`` stored there first: a secure tree's round
    assignment must survive a resume (a new salt would put clients in a second round of a tree)."""
    if not path.exists():
        with atomic_write(path, "w") as handle:
            handle.write(fresh)
    return path.read_text().strip()


def _tree_round(salt, tree: int, client_id, rounds: int) -> int:
    """The one round (of ``rounds``) of tree ``tree`` client ``client_id`` takes part in: a keyed
    hash of the tree and its id, so each tree assigns the clients afresh."""
    return min(int(_uniform(salt, f"tree-{tree}", client_id) * rounds), rounds - 1)


def _uniform(salt: int, round_index, client_id) -> float:
    digest = hashlib.sha256(f"{salt}:{round_index}:{client_id}".encode()).digest()
    return (int.from_bytes(digest[:8], "little") >> 11) / 2.0**53


def _file_stem(key: str) -> str:
    """A file name for ``key``: readable, and unique through a hash of the exact key."""
    readable = re.sub(r"[^A-Za-z0-9._-]", "_", key)[:80].lstrip(".")
    return f"{readable}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
