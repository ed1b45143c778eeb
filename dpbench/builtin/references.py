"""The two reference rows every leaderboard needs (default plugin).

``public_only`` (ε = 0) hands the evaluator nothing to fine-tune on, so it scores the
downstream model that saw public text only. ``nonprivate`` (ε = ∞) hands it the real private
training texts. Together they give the paper's "gap closed":
(acc − acc_ε=0) / (acc_ε=∞ − acc_ε=0).
"""

from __future__ import annotations

from dpbench.api import Method, MethodData, RunContext, SyntheticTexts
from dpbench.hookspecs import hookimpl


class PublicOnly(Method):
    """ε = 0: no private data used."""

    reference = "epsilon_zero"

    def run(self, data: MethodData, ctx: RunContext) -> SyntheticTexts:
        return SyntheticTexts(texts=())


class NonPrivate(Method):
    """ε = ∞: the private training texts themselves, without any noise."""

    reference = "epsilon_infinity"

    def run(self, data: MethodData, ctx: RunContext) -> SyntheticTexts:
        return SyntheticTexts(texts=data.training_texts())


@hookimpl
def register_methods(register):
    register("public_only", PublicOnly)
    register("nonprivate", NonPrivate)
