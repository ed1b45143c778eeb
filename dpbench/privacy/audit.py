"""Empirical privacy audit: a Clopper–Pearson lower bound on ε from repeated releases.

The audit runs one release of a method's mechanism many times on D and on D′ = D + a canary
client, scores each output by its projection on the canary's direction, and asks how well a
threshold on that score tells D′ from D (Jagielski et al. 2020, arXiv 2006.07709; Nasr et al.
2021, arXiv 2101.04535). A mechanism without a fixed direction (a release of several correlated
parts, such as a tree's) has it learnt: the linear discriminant of the selection half's outputs
(their mean difference against their pooled covariance), which finds any combination of the
outputs that carries the canary with less noise than claimed. The direction, threshold and
orientation are chosen on one half of the trials and certified on the other: with
Clopper–Pearson upper bounds FPR⁺, FNR⁺ (α/2 each),

    ε_LB = max(ln((1 − δ − FNR⁺) / FPR⁺), ln((1 − δ − FPR⁺) / FNR⁺))

holds with confidence 1 − α. ε_LB above the claimed ε proves a bug; below it proves nothing.
With n certification trials per side the bound cannot exceed ≈ ln(n / 3.7) (the ceiling). A
NaN output counts as +∞: any non-finite release is an unbounded leak.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from dpbench.api.config import check_choice, check_fraction, check_int, check_positive
from dpbench.api.context import derive_seed
from dpbench.api.privacy import MECHANISM_KINDS, MechanismSpec
from dpbench.errors import ConfigError, DpbenchError
from dpbench.privacy.accountant import compute_epsilon
from dpbench.privacy.noise import clipped_sum, gaussian_noise, noisy_clipped_sum, tree_increment

DEFAULT_TRIALS = 2000
DEFAULT_DELTA = 1e-5
MAX_THRESHOLDS = 1000  # candidate thresholds tried on the selection half


@dataclass(frozen=True, kw_only=True)
class AuditMechanism:
    """One noisy release of a method, in a form the audit can repeat.

    ``release(clients, rng)`` returns the released vector for the client contributions
    ``clients`` (a list), drawing all noise from ``rng``. The audit compares ``clients`` (D) with
    ``clients + [canary]`` (D′) through the score ⟨release, direction⟩ (``direction=None``: learnt
    on the selection half). ``noise_multiplier``, ``clip_norm``, ``rounds``, ``kind`` and
    ``rounds_per_tree`` are the method's claim: the release is the ``MechanismSpec`` of that kind
    and rounds at that σ.
    """

    name: str
    release: Callable[[list, np.random.Generator], np.ndarray]
    clients: tuple
    canary: object
    direction: np.ndarray | None
    noise_multiplier: float
    clip_norm: float
    rounds: int = 1
    kind: str = "gaussian"
    rounds_per_tree: int | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError("name", self.name, "a non-empty string")
        if not callable(self.release):
            raise ConfigError("release", self.release, "a callable release(clients, rng) -> np.ndarray")
        check_positive("noise_multiplier", self.noise_multiplier, allow_zero=True)
        check_positive("clip_norm", self.clip_norm)
        check_int("rounds", self.rounds, minimum=1)
        check_choice("kind", self.kind, MECHANISM_KINDS)
        MechanismSpec(rounds=self.rounds, kind=self.kind, rounds_per_tree=self.rounds_per_tree)  # validates
        if self.direction is not None:
            u = np.asarray(self.direction, dtype=np.float64)
            if u.ndim != 1 or not np.isfinite(u).all() or not math.isclose(np.linalg.norm(u), 1.0, rel_tol=1e-9):
                raise ConfigError("direction", self.direction, "a finite 1-D unit vector, or None to learn one")

    def claimed_epsilon(self, *, delta: float) -> float:
        """ε of the release at ``delta`` as dpbench accounts it (PLD, near-exact for a Gaussian)."""
        return compute_epsilon(noise_multiplier=self.noise_multiplier, sampling_rate=1.0, rounds=self.rounds,
                               delta=delta, mechanism=self.kind, rounds_per_tree=self.rounds_per_tree)


@dataclass(frozen=True, kw_only=True)
class AuditResult:
    """What an audit found; ``violated`` means ε_LB > claimed ε at confidence 1 − α."""

    mechanism: str
    trials: int
    """releases per side (half select the threshold, half certify it)"""
    delta: float
    alpha: float
    epsilon_claimed: float
    epsilon_lower_bound: float
    epsilon_ceiling: float
    """the largest bound these trials could certify"""
    seconds: float

    @property
    def violated(self) -> bool:
        return self.epsilon_lower_bound > self.epsilon_claimed


def clipped_sum_mechanism(
    *,
    noise_multiplier: float = 1.0,
    clip_norm: float = 1.0,
    num_clients: int = 10,
    dimension: int = 8,
    canary_scale: float = 50.0,
    name: str = "release_clipped_sum",
) -> AuditMechanism:
    """The shared ``release_clipped_sum`` path (POPri, DP-FedAvg) as an audit mechanism.

    D holds ``num_clients`` fixed random rows of norm about 1; the canary is ``canary_scale``
    clip norms along the first axis, far outside the clip ball. Audits are most sensitive at
    σ of 1–2, hence the default.
    """
    check_int("num_clients", num_clients)
    check_int("dimension", dimension, minimum=1)
    rows = np.random.default_rng(0).normal(size=(num_clients, dimension)) / math.sqrt(dimension)
    direction = np.eye(dimension)[0]
    release = functools.partial(_release_clipped_sum, dimension=dimension, clip_norm=clip_norm,
                                noise_multiplier=noise_multiplier)
    return AuditMechanism(name=name, release=release, clients=tuple(rows), canary=canary_scale * clip_norm * direction,
                          direction=direction, noise_multiplier=noise_multiplier, clip_norm=clip_norm)


def run_audit(
    mechanism: AuditMechanism,
    *,
    trials: int = DEFAULT_TRIALS,
    delta: float = DEFAULT_DELTA,
    alpha: float = 0.05,
    seed: int = 0,
) -> AuditResult:
    """Release ``trials`` times on D and on D′ and bound ε from below (see the module docstring)."""
    if not isinstance(mechanism, AuditMechanism):
        raise ConfigError("mechanism", mechanism, "an AuditMechanism")
    check_int("trials", trials, minimum=20)
    check_fraction("delta", delta, allow_one=False)
    check_fraction("alpha", alpha, allow_one=False)
    start = time.perf_counter()
    rng = np.random.default_rng(derive_seed(seed, "privacy-audit"))
    without = list(mechanism.clients)
    out_values = _outputs(mechanism, without, trials, rng)
    in_values = _outputs(mechanism, [*without, mechanism.canary], trials, rng)
    half = trials // 2
    direction = (mechanism.direction if mechanism.direction is not None
                 else discriminant(in_values[:half], out_values[:half]))
    in_scores, out_scores = _scores(in_values, direction), _scores(out_values, direction)
    sign, threshold = choose_threshold(in_scores[:half], out_scores[:half], delta=delta, alpha=alpha)
    bound = epsilon_lower_bound(sign * in_scores[half:], sign * out_scores[half:], threshold=threshold,
                                delta=delta, alpha=alpha)
    n = trials - half
    ceiling = float(_bounds(np.array([0]), n, np.array([0]), n, delta, alpha)[0])
    return AuditResult(mechanism=mechanism.name, trials=trials, delta=delta, alpha=alpha,
                       epsilon_claimed=mechanism.claimed_epsilon(delta=delta), epsilon_lower_bound=bound,
                       epsilon_ceiling=ceiling, seconds=time.perf_counter() - start)


def choose_threshold(in_scores: np.ndarray, out_scores: np.ndarray, *, delta: float, alpha: float) -> tuple[int, float]:
    """The orientation (±1) and threshold with the largest ε bound on these (selection) scores."""
    best = (-1.0, 1, math.inf)
    for sign in (1, -1):
        a, b = sign * in_scores, sign * out_scores
        candidates = np.unique(np.concatenate([a, b]))
        if len(candidates) > MAX_THRESHOLDS:
            candidates = candidates[np.linspace(0, len(candidates) - 1, MAX_THRESHOLDS).astype(int)]
        bounds = _bounds_at(a, b, candidates, delta, alpha)
        i = int(np.argmax(bounds))
        if bounds[i] > best[0]:
            best = (float(bounds[i]), sign, float(candidates[i]))
    return best[1], best[2]


def epsilon_lower_bound(in_scores: np.ndarray, out_scores: np.ndarray, *, threshold: float, delta: float,
                        alpha: float = 0.05) -> float:
    """The Clopper–Pearson ε bound of the test "canary present iff score ≥ threshold"."""
    return float(_bounds_at(np.asarray(in_scores), np.asarray(out_scores), np.array([threshold]), delta, alpha)[0])


def _release_clipped_sum(clients: Sequence, rng: np.random.Generator, *, dimension: int, clip_norm: float,
                         noise_multiplier: float) -> np.ndarray:
    rows = np.array(clients, dtype=np.float64).reshape(len(clients), dimension)
    return noisy_clipped_sum(rows, clip_norm=clip_norm, noise_multiplier=noise_multiplier, rng=rng)


def discriminant(in_values: np.ndarray, out_values: np.ndarray) -> np.ndarray:
    """The unit direction that best separates two sets of outputs under Gaussian noise: their
    mean difference against the pooled covariance (ridge 1e-9 of its mean variance, so a
    noise-free combination is found rather than refused)."""
    centred = np.vstack([in_values - in_values.mean(0), out_values - out_values.mean(0)])
    covariance = np.atleast_2d(np.cov(centred.T))
    covariance += 1e-9 * max(np.trace(covariance) / len(covariance), 1e-300) * np.eye(len(covariance))
    w = np.linalg.solve(covariance, in_values.mean(0) - out_values.mean(0))
    norm = np.linalg.norm(w)
    return w / norm if norm > 0 and np.isfinite(norm) else np.eye(len(w))[0]


def tree_aggregation_mechanism(
    *,
    noise_multiplier: float = 2.0,
    clip_norm: float = 1.0,
    rounds: int = 7,
    rounds_per_tree: int | None = None,
    num_clients: int = 10,
    canary_scale: float = 50.0,
    name: str = "tree aggregation release",
) -> AuditMechanism:
    """The session's tree-aggregation release (``tree_increment``) over ``rounds`` rounds, all of
    them, restarted every ``rounds_per_tree``: each client a (its position in each tree, value)
    pair, the canary ``canary_scale`` clip norms at position 0 of tree 0 (the round in the most
    tree nodes) and at position k of tree k, the output every round's clipped sum plus its
    tree's prefix-noise increment, each node drawn once per tree and trial. The score's
    direction is learnt (the rounds' noise is correlated), so a node whose noise is reused for
    another node (in its tree or a later one), or a noise-free combination of the releases, shows
    up as a lower bound above the claimed ε."""
    sizes = MechanismSpec(rounds=rounds, kind="tree_aggregation", rounds_per_tree=rounds_per_tree).tree_sizes()
    check_int("num_clients", num_clients)
    values = np.random.default_rng(0).normal(size=num_clients)
    clients = tuple((tuple((i + k) % size for k, size in enumerate(sizes)), float(v)) for i, v in enumerate(values))
    canary = (tuple(k % size for k, size in enumerate(sizes)), canary_scale * clip_norm)
    release = functools.partial(_release_tree, sizes=sizes, clip_norm=clip_norm, noise_multiplier=noise_multiplier)
    return AuditMechanism(name=name, release=release, clients=clients, canary=canary, direction=None,
                          noise_multiplier=noise_multiplier, clip_norm=clip_norm, rounds=rounds,
                          kind="tree_aggregation", rounds_per_tree=rounds_per_tree)


def _release_tree(clients: Sequence, rng: np.random.Generator, *, sizes: tuple[int, ...], clip_norm: float,
                  noise_multiplier: float) -> np.ndarray:
    out = []
    for tree, size in enumerate(sizes):
        draws: dict[tuple[int, int], np.ndarray] = {}

        def node(key: tuple[int, int], draws=draws) -> np.ndarray:
            if key not in draws:
                draws[key] = gaussian_noise(rng, std=noise_multiplier * clip_norm, shape=(1,))
            return draws[key]

        for position in range(size):
            rows = np.array([[value] for positions, value in clients if positions[tree] == position]).reshape(-1, 1)
            out.append((clipped_sum(rows, clip_norm=clip_norm) + tree_increment(position, node, shape=(1,)))[0])
    return np.array(out)


def _outputs(mechanism: AuditMechanism, clients: list, trials: int, rng: np.random.Generator) -> np.ndarray:
    """``trials`` releases on ``clients``, one row each."""
    first = np.asarray(mechanism.release(list(clients), rng), dtype=np.float64)
    expected = first.shape if mechanism.direction is None else np.shape(mechanism.direction)
    values = np.empty((trials, *expected))
    for i in range(trials):
        value = first if i == 0 else np.asarray(mechanism.release(list(clients), rng), dtype=np.float64)
        if value.shape != expected:
            raise DpbenchError(f"audit mechanism {mechanism.name!r} released shape {value.shape}, expected {expected}")
        values[i] = value
    return values


def _scores(values: np.ndarray, direction: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", over="ignore"):
        scores = values @ np.asarray(direction, dtype=np.float64)
    scores[np.isnan(scores)] = np.inf  # a non-finite release is an unbounded leak
    return scores


def _bounds_at(in_scores, out_scores, thresholds, delta, alpha) -> np.ndarray:
    """ε bounds for "in iff score ≥ t" at each threshold t."""
    fp = len(out_scores) - np.searchsorted(np.sort(out_scores), thresholds, side="left")
    fn = np.searchsorted(np.sort(in_scores), thresholds, side="left")
    return _bounds(fp, len(out_scores), fn, len(in_scores), delta, alpha)


def _bounds(fp, n_out, fn, n_in, delta, alpha) -> np.ndarray:
    fpr, fnr = _cp_upper(fp, n_out, alpha / 2), _cp_upper(fn, n_in, alpha / 2)
    with np.errstate(divide="ignore"):
        eps_a = np.log(np.maximum(1 - delta - fnr, 0.0)) - np.log(fpr)
        eps_c = np.log(np.maximum(1 - delta - fpr, 0.0)) - np.log(fnr)
    return np.maximum(np.maximum(eps_a, eps_c), 0.0)


def _cp_upper(k, n: int, a: float) -> np.ndarray:
    """One-sided Clopper–Pearson upper confidence bound (level 1 − a) on a binomial rate."""
    from scipy.stats import beta

    k = np.asarray(k)
    return np.where(k >= n, 1.0, beta.ppf(1 - a, k + 1, np.maximum(n - k, 1)))
