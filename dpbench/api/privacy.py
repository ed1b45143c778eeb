"""How methods declare and use their DP mechanism.

A method never computes ε. Before it runs it declares a ``MechanismSpec``; the runner asks the
shared accountant for the noise multiplier that meets the suite's (ε, δ) and hands the method a
``PrivacySession`` through which every noisy release goes (noise drawn, ledgered, then returned).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from dpbench.api.config import check_choice, check_fraction, check_int
from dpbench.errors import ConfigError

MECHANISM_KINDS = ("gaussian", "tree_aggregation")
NOISE_MODES = ("seeded", "secure")
"""``seeded``: reproducible, simulation only (the seed and a release give the sum back);
``secure``: OS CSPRNG, nothing stored from which the noise could be derived."""


@dataclass(frozen=True, kw_only=True)
class MechanismSpec:
    """``rounds`` releases of a clipped sum plus Gaussian noise of std σ·clip_norm, each over
    clients Poisson-sampled at ``sampling_rate`` (1.0 = every client every round). A run is
    complete only once it has made exactly ``rounds`` releases.

    ``kind="tree_aggregation"`` is DP-FTRL's tree of prefix sums over the rounds, restarted every
    ``rounds_per_tree`` rounds (a new tree: fresh node noise and a fresh assignment of every
    client to one of its rounds; ``None``: one tree over all rounds).
    """

    rounds: int
    sampling_rate: float = 1.0
    kind: str = "gaussian"
    rounds_per_tree: int | None = None

    def __post_init__(self):
        check_int("rounds", self.rounds, minimum=1)
        check_fraction("sampling_rate", self.sampling_rate)
        check_choice("kind", self.kind, MECHANISM_KINDS)
        if self.rounds_per_tree is not None:
            if self.kind != "tree_aggregation":
                raise ConfigError("rounds_per_tree", self.rounds_per_tree, "None unless kind='tree_aggregation'")
            check_int("rounds_per_tree", self.rounds_per_tree, minimum=1)

    def tree_sizes(self) -> tuple[int, ...]:
        """Rounds in each tree, in order (the last may be shorter); ``()`` unless a tree release."""
        if self.kind != "tree_aggregation":
            return ()
        return tree_sizes(self.rounds, self.rounds_per_tree)


def tree_sizes(rounds: int, rounds_per_tree: int | None) -> tuple[int, ...]:
    """Rounds in each tree of ``rounds`` rounds restarted every ``rounds_per_tree`` (``None``: one tree)."""
    size = rounds_per_tree or rounds
    return tuple(min(size, rounds - start) for start in range(0, rounds, size))


@dataclass(frozen=True, kw_only=True)
class PrivacyBudget:
    """The suite's target (ε, δ); ε = 0 and ε = ∞ mark the two reference rows."""

    epsilon: float
    delta: float

    def __post_init__(self):
        eps_ok = isinstance(self.epsilon, (int, float)) and not isinstance(self.epsilon, bool)
        if not eps_ok or math.isnan(self.epsilon) or self.epsilon < 0:
            raise ConfigError("privacy.epsilon", self.epsilon, "a number > 0 (or 0 / inf for reference rows)")
        delta_ok = isinstance(self.delta, (int, float)) and not isinstance(self.delta, bool)
        if not delta_ok or not 0 < self.delta < 1:
            raise ConfigError("privacy.delta", self.delta, "a number in (0, 1), typically below 1/num_clients")

    @property
    def label(self) -> str:
        return "inf" if math.isinf(self.epsilon) else f"{self.epsilon:g}"


class PrivacySession(Protocol):
    """A run's handle on the shared privacy layer (implemented in ``dpbench.privacy``)."""

    spec: MechanismSpec
    noise_multiplier: float

    def cohort(self, round_index: int) -> list[str]:
        """The clients taking part in round ``round_index``, drawn by the session at the
        declared sampling rate (deterministic per run seed in ``seeded`` noise mode)."""

    def release_clipped_sum(self, key: str, contributions: np.ndarray | Iterator[np.ndarray], *,
                            clip_norm: float, clients: Sequence[str]) -> np.ndarray:
        """Clip each row of ``contributions`` (one (clients, d) array, or an iterator of row
        batches to bound memory) to L2 norm ``clip_norm`` (non-finite rows become zero), sum in
        float64, add N(0, (σ·clip_norm)²) noise, ledger the release and return it. Release
        ``i`` takes rows only from ``cohort(i)``: ``clients`` names each row's client. A
        ``key`` released before (a resumed run) returns the stored value without iterating
        the batches: no new noise, no new charge."""

    def discard_release(self, key: str) -> None:
        """Delete release ``key``'s stored value (not its ledger line or charge) once a method
        checkpoint holds what it needed; bounds disk for model-sized releases."""

    def epsilon_spent(self) -> float:
        """ε of every release in the ledger so far, at the suite's δ."""
