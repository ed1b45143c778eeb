"""Client feedback for POPri, as one matrix multiply.

Each client scores every synthetic sample s by Σ_j cos(s, e_j) over its own texts e_j. Since
Σ_j cos(s, e_j) = ŝ · (Σ_j ê_j), a client reduces to one vector (the sum of its L2-normalised
embeddings) and all clients' scores are ``client_sums @ samples.T``. Each score vector is
centred and scaled to unit L2 norm (sensitivity 1); degenerate clients (no texts, constant
scores, non-finite values) contribute the zero vector. The noisy sum is released by the shared
privacy layer, never here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from dpbench.toolkit import normalise_rows


def client_sums(embeddings: Mapping[str, np.ndarray], client_ids: Sequence[str], dim: int) -> np.ndarray:
    """One row per client: the sum of its normalised text embeddings (zeros for an empty client)."""
    rows = np.zeros((len(client_ids), dim))
    for row, cid in zip(rows, client_ids, strict=True):
        texts = embeddings.get(cid)
        if texts is not None and len(texts):
            row[:] = normalise_rows(texts).sum(axis=0)
    return rows


def centred_unit_scores(scores: np.ndarray) -> np.ndarray:
    """Each row minus its mean, scaled to unit norm; constant or non-finite rows become zero."""
    scores = np.asarray(scores, dtype=np.float64)
    finite = np.isfinite(scores).all(axis=1, keepdims=True)
    centred = np.where(finite, scores - np.where(finite, scores, 0).mean(axis=1, keepdims=True), 0.0)
    return normalise_rows(centred)


def client_step(inputs: Sequence[Mapping[str, np.ndarray]], payload: Mapping[str, np.ndarray],
                configs: Sequence[Mapping]) -> np.ndarray:
    """What each client computes in a round (the client runtime's step): its centred unit scores
    of ``payload["samples"]`` (the candidates' embeddings) from ``inputs[i]["sum"]``, the sum of
    its own normalised text embeddings."""
    return centred_unit_scores(np.vstack([i["sum"] for i in inputs]) @ normalise_rows(payload["samples"]).T)


def score_per_client_loop(sample_embeddings: np.ndarray, embeddings: Mapping[str, np.ndarray],
                          client_ids: Sequence[str]) -> np.ndarray:
    """The reference code's approach: one cosine-similarity call per client, which renormalises
    the sample matrix every time. Kept to check the matrix-multiply path against and to
    benchmark it (``benchmarks/popri_scoring.py``)."""
    rows = []
    for cid in client_ids:
        texts = embeddings.get(cid)
        if texts is None or not len(texts):
            rows.append(np.zeros(len(sample_embeddings)))
            continue
        score = (normalise_rows(sample_embeddings) @ normalise_rows(texts).T).sum(axis=1)
        centred = score - score.mean()
        rows.append(centred / np.linalg.norm(centred) if score.std() > 0 else np.zeros(len(sample_embeddings)))
    return np.array(rows)
