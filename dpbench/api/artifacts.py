"""What a method hands to the evaluator."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SyntheticTexts:
    """A synthetic text set; the evaluator fine-tunes its downstream model on it.

    An empty set means "no fine-tuning" (the ε = 0 public-only reference).
    """

    texts: tuple[str, ...]


@dataclass(frozen=True)
class TrainedModel:
    """A downstream model a federated method trained itself, saved under ``path`` in the
    evaluator's own format (the one the evaluator's ``initial_model`` handed out)."""

    path: Path


Artifact = SyntheticTexts | TrainedModel
