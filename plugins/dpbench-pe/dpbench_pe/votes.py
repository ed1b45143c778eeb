"""Client-level nearest-neighbour votes and the selection from their noisy sum.

Each private text votes for its k nearest candidates (cosine on unit embeddings, which ranks
as L2 does); a client's vote counts are divided by their own L2 norm (the ``pe`` library's
``vote_normalization_level="client"``), so adding or removing one client moves the summed
histogram by at most 1. An empty client gives the zero vector. The noisy sum is released by
the shared privacy layer, never here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dpbench.toolkit import normalise_rows


def nearest(similarities: np.ndarray, k: int) -> np.ndarray:
    """Column indices of each row's ``k`` largest entries, shape (rows, k)."""
    if not 1 <= k <= similarities.shape[1]:
        raise ValueError(f"cannot vote for {k} nearest of {similarities.shape[1]} candidates")
    if k == 1:
        return similarities.argmax(axis=1)[:, None]
    return np.argpartition(-similarities, k - 1, axis=1)[:, :k]


def client_votes(candidates: np.ndarray, client_texts: Sequence[np.ndarray], *, k: int = 1) -> np.ndarray:
    """One unit-norm vote vector per client (clients × candidates); zero rows for empty clients.

    ``candidates`` and each client's text matrix are unit-norm embeddings.
    """
    counts = np.zeros((len(client_texts), len(candidates)))
    lengths = np.array([len(t) for t in client_texts], dtype=np.int64)
    if lengths.sum():
        texts = np.concatenate([np.asarray(t, dtype=np.float64) for t in client_texts if len(t)])
        ids = nearest(texts @ np.asarray(candidates, dtype=np.float64).T, k)
        owner = np.repeat(np.arange(len(client_texts)), lengths)
        np.add.at(counts, (np.repeat(owner, k), ids.ravel()), 1.0)
    return normalise_rows(counts)


def client_step(inputs: Sequence[dict], payload: dict, configs: Sequence[dict]) -> np.ndarray:
    """What each client computes in a round (the client runtime's step): its unit vote vector
    over ``payload["candidates"]`` from its own ``inputs[i]["texts"]`` (``k`` is every client's)."""
    return client_votes(payload["candidates"], [i["texts"] for i in inputs], k=configs[0]["k"])


def select(noisy: np.ndarray, size: int, *, threshold: float = 0.0, mode: str = "rank",
           rng: np.random.Generator | None = None) -> np.ndarray:
    """Indices of ``size`` candidates from the noisy histogram.

    ``rank``: the largest noisy counts (ties keep candidate order); thresholding is skipped, as
    it would only turn every count below H into a tie won by position (the carried-over
    parents). ``sample``: drawn with replacement in proportion to max(noisy - H, 0); uniformly
    if every count is zero.
    """
    noisy = np.asarray(noisy, dtype=np.float64)
    if mode == "rank":
        return np.argsort(-noisy, kind="stable")[:size]
    counts = np.maximum(noisy - threshold, 0.0)
    if rng is None:
        raise ValueError("sample selection needs an rng")
    total = counts.sum()
    p = counts / total if total > 0 else None
    return rng.choice(len(counts), size=size, replace=True, p=p)
