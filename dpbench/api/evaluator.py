"""The evaluator contract: score any method's artifact on the held-out test split."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from dpbench.api.config import NoOptions

if TYPE_CHECKING:
    from dpbench.api.artifacts import Artifact
    from dpbench.api.context import RunContext
    from dpbench.api.dataset import FederatedTextData, MethodData


@dataclass(frozen=True)
class MetricSpec:
    """One reported number and which way is better."""

    name: str
    higher_is_better: bool
    description: str = ""


class Evaluator(ABC):
    """An evaluator plugin. Bump ``version`` whenever a score could change: the leaderboard
    refuses to mix versions."""

    version: ClassVar[str] = "1"
    config_class: ClassVar[type] = NoOptions
    metrics: ClassVar[tuple[MetricSpec, ...]] = ()
    primary_metric: ClassVar[str] = ""

    def __init__(self, config=None):
        self.config = config if config is not None else self.config_class()

    @abstractmethod
    def evaluate(self, artifact: Artifact, data: FederatedTextData, ctx: RunContext) -> dict[str, float]:
        """Score ``artifact`` on ``data.test`` (select checkpoints on ``data.validation`` only)."""

    def validation_score(self, artifact: Artifact, data: MethodData, ctx: RunContext) -> float:
        """The primary metric of ``artifact`` measured on ``data.validation`` (test is never
        read), oriented so that higher is better: what a method chooses among its own
        candidates by (``RunContext.validation_score``) and what ``dpbench tune`` ranks settings by."""
        from dpbench.errors import DpbenchError

        raise DpbenchError(f"evaluator {type(self).__name__} cannot score on the validation split "
                           "(it does not implement Evaluator.validation_score)")

    def initial_model(self, data, ctx: RunContext) -> Path | None:
        """The downstream model a federated method starts from and returns as a
        ``TrainedModel`` (``None``: this evaluator only scores synthetic text)."""
        return None

    def metric(self, name: str) -> MetricSpec:
        return next(m for m in self.metrics if m.name == name)
