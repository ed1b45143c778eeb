"""The reference rows a leaderboard measures methods against (default plugin).

``public_only`` (ε = 0) hands the evaluator nothing to fine-tune on, so it scores the
downstream model that saw public text only. ``nonprivate`` (ε = ∞) hands it the real private
training texts. Together they give the paper's "gap closed":
(acc − acc_ε=0) / (acc_ε=∞ − acc_ε=0). ``synthetic_public`` (ε = 0) hands it what the shared
generator writes from public-seeded prompts alone, so a board can tell what a synthetic-text
method's private signal added to what its prompts and generator give anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

from dpbench.api import Method, MethodData, RunContext, SyntheticTexts
from dpbench.api.config import check_int
from dpbench.hookspecs import hookimpl
from dpbench.synthetic.options import GeneratorOptions
from dpbench.synthetic.prompts import stop_strings


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


@dataclass(frozen=True)
class SyntheticPublicOptions(GeneratorOptions):
    """The shared generator options (set them as the synthetic methods on the board do) and M."""

    samples: int = 256
    """M, the texts returned: the synthetic methods' output size on the same board"""

    def __post_init__(self):
        super().__post_init__()
        check_int("samples", self.samples, minimum=1)


class SyntheticPublic(Method):
    """ε = 0: ``samples`` texts from the shared generator, one per prompt of random public seed
    texts (the prompts, sampling and post-processing of the synthetic methods), no private data."""

    reference = "synthetic_public"
    version = "2"  # 2: the decode loop's packed prefill and shared prompt cache (other draws)
    config_class = SyntheticPublicOptions

    def run(self, data: MethodData, ctx: RunContext) -> SyntheticTexts:
        o = self.config
        prompts = o.public_prompts(data.public, count=o.samples, rng=ctx.rng("synthetic-public-prompts"))
        generator = o.generator(ctx.device)
        try:
            with ctx.phase(f"sampling {o.samples} texts from public prompts"):
                texts = o.complete(generator, prompts, stop=stop_strings(o.prompt_style),
                                   seed=ctx.seed_for("synthetic-public-generate"))
        finally:
            generator.close()
        return SyntheticTexts(texts=tuple(texts))


@hookimpl
def register_methods(register):
    register("public_only", PublicOnly)
    register("synthetic_public", SyntheticPublic)
    register("nonprivate", NonPrivate)
