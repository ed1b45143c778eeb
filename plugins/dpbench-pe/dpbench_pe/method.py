"""Private Evolution (PE) for text with client-level DP, as a dpbench method.

Aug-PE (Xie, Lin, Backurs, Gopi, Yu, Inan, Nori, Jiang, Zhang, Lee, Li, Yekhanin, ICML 2024,
arXiv 2403.01749; code AI-secure/aug-pe) in the federated form of microsoft/DPSDA's ``pe``
library (``vote_normalization_level="client"``). RANDOM_API writes N_syn·L candidates from
prompts of random public seed texts; each iteration every sampled client's texts vote for
their nearest candidates, the shared privacy layer releases the Gaussian-noised sum of the
clients' unit-norm vote vectors, the top N_syn (or a draw ∝ thresholded counts) are kept,
and VARIATION_API adds L−1 paraphrases of each in a random tone. The output is the last
iteration's selected set.

Deliberate choices: votes normalised per client (sensitivity 1 under add/remove one client,
as POPri's scores); POPri's generator, embedder and seed prompt, so only the algorithm
differs from POPri; optional Poisson client sampling (the accountant's assumption; ``pe``
lets every client vote); candidates kept by position (duplicate strings keep their own
counts); an empty paraphrase falls back to its parent text; per-iteration monitoring of the
selected set on the validation split (no privacy spent); the initial population is N_syn·L
independent RANDOM_API samples (Aug-PE draws N_syn and adds L−1 variations of each: the same
count, less diverse).
"""

from __future__ import annotations

import time

import numpy as np

from dpbench.api import MechanismSpec, Method, MethodData, RunContext, SyntheticTexts
from dpbench.toolkit import normalise_rows, round_metrics, stop_strings
from dpbench_pe import votes
from dpbench_pe.config import PeOptions
from dpbench_pe.prompts import TONES, variation_prompt, variation_stop
from dpbench_pe.votes import select

CLIENT_INPUTS = "pe-texts"
"""each client's unit text embeddings, placed once with the client runtime"""


class PrivateEvolution(Method):
    """Federated Private Evolution for text (see the module docstring)."""

    version = "4"  # 4: the decode loop's packed prefill and shared prompt cache (same distribution, other draws)
    citation = """\
@inproceedings{xie2024augpe,
  title = {Differentially Private Synthetic Data via Foundation Model {APIs} 2: Text},
  author = {Xie, Chulin and Lin, Zinan and Backurs, Arturs and Gopi, Sivakanth and Yu, Da and Inan, Huseyin A. and
            Nori, Harsha and Jiang, Haotian and Zhang, Huishuai and Lee, Yin Tat and Li, Bo and Yekhanin, Sergey},
  booktitle = {Proceedings of the 41st International Conference on Machine Learning},
  series = {Proceedings of Machine Learning Research},
  volume = {235},
  year = {2024},
  eprint = {2403.01749},
  archivePrefix = {arXiv}
}
"""
    config_class = PeOptions

    def mechanism(self, data: MethodData) -> MechanismSpec:
        return MechanismSpec(rounds=self.config.iterations, sampling_rate=self.config.sampling_rate)

    def run(self, data: MethodData, ctx: RunContext) -> SyntheticTexts:
        o = self.config
        o.check_public_seeds(data.public)
        from dpbench.toolkit import Embedder, embed_clients, embed_split

        embedder = Embedder(o.embedder, device=ctx.device)
        ctx.clients.place(CLIENT_INPUTS, {cid: {"texts": texts}
                                          for cid, texts in embed_clients(embedder, data, cache=ctx.cache).items()})
        validation = embed_split(embedder, data, "validation", cache=ctx.cache) if data.validation else None
        apis = _Apis(o, data.public, ctx)

        history, selected = [], []
        for t in ctx.track(range(o.iterations), "PE iterations"):
            folder = f"iteration{t:03d}"
            candidates = ctx.load_state(f"{folder}/candidates.json")
            if candidates is None:
                with ctx.phase(f"iteration {t + 1}/{o.iterations}: generating candidates"):
                    candidates = (apis.random(o.synthetic_samples * (o.variations_per_sample + 1)) if t == 0
                                  else selected + apis.variations(selected, t))  # the selected are kept
                ctx.save_state(f"{folder}/candidates.json", candidates)
            record = ctx.load_state(f"{folder}/iteration.json")
            if record is None:
                with ctx.phase(f"iteration {t + 1}/{o.iterations}: voting on {len(candidates)} candidates"):
                    record = self._iterate(t, candidates, embedder, validation, ctx)
                ctx.save_state(f"{folder}/iteration.json", record)
            selected = [candidates[i] for i in record["selected"]]
            history.append(record["monitor"])
            ctx.report(t, record["monitor"])
        ctx.save_state("monitor.json", {"history": history})
        apis.close()
        return SyntheticTexts(texts=tuple(selected))

    def _iterate(self, t, candidates, embedder, validation, ctx) -> dict:
        """One DP iteration: embed, vote (each client on its own texts), release, select, monitor."""
        o = self.config
        t0 = time.perf_counter()
        embedded = normalise_rows(embedder.encode(candidates))
        participants = ctx.privacy.cohort(t)
        votes = ctx.clients.rows("dpbench_pe.votes:client_step", participants, inputs=CLIENT_INPUTS,
                                 payload={"candidates": embedded}, config={"k": o.nearest_neighbors},
                                 batch=o.vote_batch_clients, width=len(candidates))
        noisy = ctx.privacy.release_clipped_sum(f"pe-iteration-{t}", votes, clip_norm=1.0, clients=participants)
        chosen = select(noisy, o.synthetic_samples, threshold=o.histogram_threshold, mode=o.selection,
                        rng=ctx.rng(f"pe-select-{t}"))
        monitor = {"iteration": t}
        if validation is not None and len(validation):
            monitor.update(round_metrics(embedded[chosen], validation))
        histogram = {"noisy_max": float(noisy.max()), "noisy_sum": float(noisy.sum()),
                     "above_threshold": int((noisy > o.histogram_threshold).sum()),
                     "distinct_selected": len(set(candidates[i] for i in chosen))}
        seconds = time.perf_counter() - t0
        ctx.log.info("PE iteration %d: %s; histogram %s; %.1f s", t, _short(monitor), _short(histogram), seconds)
        return {"selected": [int(i) for i in chosen], "monitor": monitor, "histogram": histogram, "seconds": seconds}

    def release_agreement(self, noisy, clean) -> dict[str, float]:
        """Of the ``synthetic_samples`` candidates with the largest noisy votes, the share that
        are also among the largest noise-free ones, and the noise-free vote mass they capture
        against the best possible (rank selection, whatever ``selection`` is)."""
        size = min(self.config.synthetic_samples, len(clean))
        picked, ideal = votes.select(noisy, size), votes.select(clean, size)  # not the run's own select
        best = float(np.asarray(clean)[ideal].sum())
        return {"top_k_overlap": len(set(picked.tolist()) & set(ideal.tolist())) / size,
                "vote_mass_captured": float(np.asarray(clean)[picked].sum()) / best if best > 0 else None}

    def audit_mechanism(self):
        """PE's release (nearest-neighbour votes -> per-client unit norm -> noisy sum) for ``dpbench audit``."""
        from dpbench_pe.audit import pe_audit_mechanism

        return pe_audit_mechanism()


class _Apis:
    """RANDOM_API and VARIATION_API over one generator, loaded on first use."""

    def __init__(self, options: PeOptions, public, ctx: RunContext):
        self.o, self.public, self.ctx = options, public, ctx
        self._generator = None

    def random(self, n: int) -> list[str]:
        """``n`` texts, each from the toolkit's prompt (POPri's) of random public seed texts."""
        prompts = self.o.public_prompts(self.public, count=n, rng=self.ctx.rng("pe-random-prompts"))
        return self._generate(prompts, stop_strings(self.o.prompt_style), "pe-random-generate")

    def variations(self, parents: list[str], t: int) -> list[str]:
        """L−1 paraphrases of each parent in a random tone, fold by fold; an empty one is its parent."""
        o = self.o
        folds = o.variations_per_sample
        tones = self.ctx.rng(f"pe-tones-{t}").integers(len(TONES), size=folds * len(parents))
        sources = parents * folds
        prompts = [variation_prompt(text, TONES[i], o.prompt_style) for text, i in zip(sources, tones, strict=True)]
        texts = self._generate(prompts, variation_stop(o.prompt_style), f"pe-variation-{t}")
        return [text or source for text, source in zip(texts, sources, strict=True)]

    def _generate(self, prompts, stop, stream: str) -> list[str]:
        o = self.o
        if self._generator is None:
            self._generator = o.generator(self.ctx.device)
        return o.complete(self._generator, prompts, stop=stop, seed=self.ctx.seed_for(stream))

    def close(self) -> None:
        if self._generator is not None:
            self._generator.close()


def _short(stats: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in stats.items())
