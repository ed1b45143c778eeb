"""Preference pairs from the noisy scores, by sample position (never by string)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Pair:
    prompt: int
    chosen: int
    """index into the round's flat sample list"""
    rejected: int


def preference_pairs(noisy_scores: np.ndarray, *, samples_per_prompt: int, reject_rank: int) -> list[Pair]:
    """For each prompt's block of ``samples_per_prompt`` scores: chosen = the best, rejected =
    the sample at 0-based ``reject_rank``. Ties keep sample order (stable sort), so identical
    texts keep their own scores and positions."""
    scores = np.asarray(noisy_scores, dtype=np.float64)
    if scores.ndim != 1 or len(scores) % samples_per_prompt:
        raise ValueError(f"{len(scores)} scores do not split into prompts of {samples_per_prompt} samples")
    if not 0 < reject_rank < samples_per_prompt:
        raise ValueError(f"reject_rank {reject_rank} must be in 1..{samples_per_prompt - 1}")
    blocks = scores.reshape(-1, samples_per_prompt)
    order = np.argsort(-blocks, axis=1, kind="stable")
    offsets = np.arange(len(blocks)) * samples_per_prompt
    return [Pair(prompt=p, chosen=int(offsets[p] + order[p, 0]), rejected=int(offsets[p] + order[p, reject_rank]))
            for p in range(len(blocks))]
