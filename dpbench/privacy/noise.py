"""The one place dpbench draws DP noise, and the clipped sum it is added to.

Two sources (the suite's ``privacy.noise``): ``seeded`` noise comes from a numpy PCG64
generator keyed by the run seed (stream ``"privacy-noise"``) and the release key, so runs
reproduce and a resumed run draws the same noise for its remaining releases as an
uninterrupted one — for benchmarks only, since the seed and a stored release give the exact
sum back. ``secure`` noise comes from the operating system's CSPRNG (``os.urandom``, Box–Muller
in float64) and is never derivable from anything stored. Either way the guarantee is
idealised real-arithmetic DP on float64; it is not hardened against floating-point attacks
(Mironov 2012; Jin et al. 2022, arXiv 2112.05307) or summation-order effects (Casacuberta et
al. 2022, arXiv 2207.10635).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import numpy as np

from dpbench.api.config import check_positive
from dpbench.api.context import derive_seed
from dpbench.errors import ConfigError

NOISE_STREAM = "privacy-noise"

def noise_generator(seed: int | None, key: str):
    """The generator for release ``key`` of a run seeded ``seed``: keyed by release, not by
    order of use; ``SecureNormal`` when ``seed`` is None (secure noise)."""
    if seed is None:
        return SecureNormal()
    return np.random.default_rng(derive_seed(derive_seed(seed, NOISE_STREAM), key))


class SecureNormal:
    """Gaussian draws from the OS CSPRNG: Box–Muller on 53-bit uniforms from ``os.urandom``,
    in chunks so model-sized releases stay within memory. 53-bit uniforms cap |z| at ≈ 8.57,
    a tail of probability ≈ 1e-17, far below any δ used."""

    CHUNK = 1 << 20

    def normal(self, loc: float, scale: float, size) -> np.ndarray:
        n = int(np.prod(size, dtype=np.int64))
        out = np.empty(n, dtype=np.float64)
        for start in range(0, n, self.CHUNK):
            m = min(self.CHUNK, n - start)
            u = np.frombuffer(os.urandom(16 * m), dtype="<u8").reshape(2, m) >> np.uint64(11)
            u1 = (u[0].astype(np.float64) + 1.0) / 2.0**53  # (0, 1]: the log is finite
            u2 = u[1].astype(np.float64) / 2.0**53
            out[start:start + m] = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
        return (loc + scale * out).reshape(size)


def gaussian_noise(rng: np.random.Generator, *, std: float, shape: tuple[int, ...]) -> np.ndarray:
    """i.i.d. N(0, std²) noise in float64: the only DP noise draw in dpbench."""
    check_positive("noise std", std, allow_zero=True)
    return rng.normal(0.0, std, size=shape).astype(np.float64, copy=False)


def clip_rows(contributions, *, clip_norm: float) -> np.ndarray:
    """Each row scaled to L2 norm at most ``clip_norm``, in float64.

    A row with any NaN or ±inf entry becomes the zero vector *before* clipping (sensitivity
    stays ``clip_norm``; a NaN would otherwise slip through ``min(1, C/‖x‖)``). Norms are taken
    on rows scaled by their largest entry, so huge finite rows clip instead of overflowing.
    """
    check_positive("clip_norm", clip_norm)
    try:
        rows = np.array(contributions, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError("contributions", type(contributions).__name__,
                          "a numeric array of shape (clients, dimension)") from None
    if rows.ndim != 2 or rows.shape[1] == 0:
        raise ConfigError("contributions", f"shape {rows.shape}", "shape (clients, dimension) with dimension >= 1")
    rows[~np.isfinite(rows).all(axis=1)] = 0.0
    peak = np.abs(rows).max(axis=1, initial=0.0)[:, None]
    nonzero = peak > 0
    unit_norm = np.linalg.norm(np.divide(rows, peak, out=np.zeros_like(rows), where=nonzero), axis=1)[:, None]
    with np.errstate(divide="ignore", over="ignore"):
        factor = np.divide(clip_norm / np.where(nonzero, peak, 1.0), unit_norm, out=np.ones_like(peak), where=nonzero)
    return rows * np.minimum(factor, 1.0)


def clipped_sum(contributions, *, clip_norm: float) -> np.ndarray:
    """Σ clip(row) in float64 over ``contributions``: one (clients, d) array-like, or an
    iterator (a generator) of such row batches, so a release over many clients or a large ``d``
    (model deltas) never holds every row at once."""
    batches = contributions if isinstance(contributions, Iterator) else (contributions,)
    total = None
    for batch in batches:
        part = clip_rows(batch, clip_norm=clip_norm).sum(axis=0)
        if total is not None and part.shape != total.shape:
            raise ConfigError("contributions", f"a batch of rows of length {part.shape[0]}",
                              f"rows of length {total.shape[0]}, like the first batch")
        total = part if total is None else total + part
    if total is None:
        raise ConfigError("contributions", "no batches", "at least one array of shape (clients, dimension); "
                          "pass shape (0, dimension) when no client took part, as "
                          "ctx.clients.rows(..., width=dimension) does")
    return total


def noisy_clipped_sum(contributions, *, clip_norm: float, noise_multiplier: float,
                      rng: np.random.Generator) -> np.ndarray:
    """Σ clip(row) + N(0, (σ·clip_norm)²): one noise draw for the whole vector."""
    total, noise = clipped_sum_and_noise(contributions, clip_norm=clip_norm, noise_multiplier=noise_multiplier,
                                         rng=rng)
    return total + noise


def clipped_sum_and_noise(contributions, *, clip_norm: float, noise_multiplier: float,
                          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Σ clip(row) and the N(0, (σ·clip_norm)²) noise drawn for it, apart: ``noisy_clipped_sum``
    adds them; the session also measures the noise against the sum (``release_diagnostics``)."""
    total = clipped_sum(contributions, clip_norm=clip_norm)
    return total, gaussian_noise(rng, std=noise_multiplier * clip_norm, shape=total.shape)


def release_diagnostics(total: np.ndarray, noise: np.ndarray) -> dict[str, float | None]:
    """How much of the clipped sum ``total`` a release ``total + noise`` still carries:
    ‖sum‖, ‖noise‖, the cosine of the release with the sum and, over three or more
    coordinates, the Spearman correlation of their orders (what a ranking or a top-k
    selection reads off the release). For benchmarks only: functions of the noise-free sum
    are not private."""
    from scipy.stats import spearmanr

    value = total + noise
    signal, noise_norm, norm = (float(np.linalg.norm(v)) for v in (total, noise, value))
    cosine = float(value @ total / (norm * signal)) if norm and signal else None
    spearman = None
    if value.size >= 3 and np.ptp(total) > 0 and np.ptp(value) > 0:
        # a noise-free release has its sum's order: not ranked (a model-sized argsort per round)
        spearman = float(spearmanr(value, total).statistic) if noise.any() else 1.0
    return {"signal_norm": signal, "noise_norm": noise_norm, "cosine": cosine, "spearman": spearman}


def tree_nodes(prefix: int) -> set[tuple[int, int]]:
    """The completed tree nodes ``(level, j)`` (node ``(l, j)`` covers releases
    ``j·2^l … (j+1)·2^l − 1``) whose sum is the first ``prefix`` releases: one per set bit."""
    nodes, start = set(), 0
    for level in reversed(range(prefix.bit_length())):
        if prefix >> level & 1:
            nodes.add((level, start >> level))
            start += 1 << level
    return nodes


def tree_increment(index: int, node_noise: Callable[[tuple[int, int]], np.ndarray], *,
                   shape: tuple[int, ...]) -> np.ndarray:
    """Release ``index``'s share of a tree's prefix noise: the noise of the nodes covering the
    first ``index + 1`` releases minus that of the nodes covering the first ``index``, each
    node's noise from ``node_noise(node)`` (which must give a node the same draw every time)."""
    now, before = tree_nodes(index + 1), tree_nodes(index)
    increment = np.zeros(shape)
    for node in sorted(now - before):
        increment += node_noise(node)
    for node in sorted(before - now):
        increment -= node_noise(node)
    return increment
