"""Monitoring of synthetic texts against the validation split, on unit-norm embeddings.

No privacy is spent: the validation split is never a client's data.
"""

from __future__ import annotations

import numpy as np


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FID between Gaussian fits of two embedding sets (needs many samples to be stable)."""
    import warnings

    from scipy import linalg

    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():  # rank-deficient covariances are expected with few samples
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        root = linalg.sqrtm(cov_a @ cov_b)
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b - 2 * np.real(root)))


def mean_pairwise_cosine(unit: np.ndarray) -> float:
    """Diversity: mean cosine over distinct pairs of unit-norm rows (higher = less diverse)."""
    n = len(unit)
    if n < 2:
        return float("nan")
    gram = unit @ unit.T
    return float((gram.sum() - np.trace(gram)) / (n * (n - 1)))


def round_metrics(samples: np.ndarray, validation: np.ndarray) -> dict[str, float]:
    """Quality and diversity of one checkpoint's samples (unit-norm embeddings) vs validation."""
    centroid_s, centroid_v = samples.mean(axis=0), validation.mean(axis=0)
    return {
        "validation_fid": frechet_distance(samples, validation),
        "validation_mean_distance": float(np.sum((centroid_s - centroid_v) ** 2)),
        "validation_centroid_cosine": float(centroid_s @ centroid_v
                                            / (np.linalg.norm(centroid_s) * np.linalg.norm(centroid_v))),
        "validation_nearest_cosine": float((samples @ validation.T).max(axis=1).mean()),
        "mean_pairwise_cosine": mean_pairwise_cosine(samples),
    }
