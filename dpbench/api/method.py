"""The method contract: turn private federated text into a synthetic set or a trained model."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

from dpbench.api.config import NoOptions

if TYPE_CHECKING:
    from dpbench.api.artifacts import Artifact
    from dpbench.api.context import RunContext
    from dpbench.api.dataset import MethodData
    from dpbench.api.privacy import MechanismSpec

REFERENCE_EPSILON = {"epsilon_zero": 0.0, "epsilon_infinity": math.inf, "synthetic_public": 0.0}
"""The kinds of built-in reference row, which release nothing, and the ε each stands for."""


class Method(ABC):
    """A DP method plugin.

    ``mechanism`` declares what the method will release so the shared accountant can calibrate
    its noise to the suite's (ε, δ) before ``run`` starts; ``run`` then makes every noisy
    release through ``ctx.privacy``. Methods never compute ε.

    ``reference`` is set only by the built-in reference rows (``REFERENCE_EPSILON``):
    ``"epsilon_zero"`` (no private data, no synthetic text), ``"synthetic_public"`` (no private
    data: the shared generator's public-seeded text) and ``"epsilon_infinity"`` (private data
    used without noise).
    """

    version: ClassVar[str] = "1"
    config_class: ClassVar[type] = NoOptions
    reference: ClassVar[str | None] = None
    citation: ClassVar[str] = ""
    """the BibTeX entry of the paper the method implements: ``dpbench show`` and the boards
    print it"""
    trains_downstream_model: ClassVar[bool] = False
    """True for a method that trains the evaluator's own model and returns ``TrainedModel``: the
    runner resolves that model before ``run`` and hands it over as ``ctx.initial_model()``."""

    def __init__(self, config=None):
        self.config = config if config is not None else self.config_class()

    def mechanism(self, data: MethodData) -> MechanismSpec | None:
        """The DP mechanism ``run`` will use on ``data``; ``None`` only for reference rows."""
        return None

    @abstractmethod
    def run(self, data: MethodData, ctx: RunContext) -> Artifact:
        """Do the work; resume from ``ctx.checkpoint_dir`` if an earlier attempt left state."""

    def release_agreement(self, noisy, clean) -> dict[str, float]:
        """Benchmark only: how often a release ``noisy`` (a numpy vector) leads this method to
        the decision its noise-free sum ``clean`` would (e.g. the share of a top-k selection
        kept). A seeded session calls it after each release and writes the answer to the run's
        diagnostics; ``run`` never sees it. Default: nothing to add to the generic measures."""
        return {}

    def audit_mechanism(self):
        """The noisy aggregate this method releases, as a ``dpbench.privacy.audit`` mechanism,
        so ``dpbench audit`` can test it empirically; ``None`` if the method releases nothing."""
        return None
