"""POPri: private federated learning using preference-optimized synthetic data.

Hou, Wang, Zhu, Lazar, Fanti (ICML 2025,
arXiv 2504.16438); reference code meiyuw/POPri@2f0ac43. Each round the server samples J
candidates for each of N prompts from the current policy (base + LoRA adapter), clients score
them by cosine similarity to their own texts (centred, unit L2 norm: sensitivity 1), the
shared privacy layer releases the Gaussian-noised sum, and the best and the ``reject_rank``-th
sample of each prompt become a DPO pair. DPO trains the adapter against the base model; the
next round samples from base + adapter, never from a merged checkpoint.

Deviations from the reference code, each deliberate: Poisson client sampling (what the
accountant assumes), pairs by sample position (duplicate strings keep their own scores), zero
vectors for degenerate clients (no NaN), one matrix multiply for all clients' scores,
checkpoint selection on the validation split (never test), no unnoised diagnostics, and
monitoring statistics over all N·J candidates of a round (one sample per prompt, as the paper
does, is too few at CPU scale for stable statistics).
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path

import numpy as np

from dpbench.api import (
    ConfigError,
    DpbenchError,
    MechanismSpec,
    Method,
    MethodData,
    RunContext,
    SyntheticTexts,
    write_json,
)
from dpbench.toolkit import (
    build_prompt,
    clean,
    normalise_rows,
    round_metrics,
    stop_strings,
    trl_completion,
)
from dpbench_popri.config import PopriOptions
from dpbench_popri.pairs import preference_pairs
from dpbench_popri.scoring import client_sums

CLIENT_INPUTS = "popri-sums"
"""each client's sum of its normalised text embeddings, placed once with the client runtime"""


class Popri(Method):
    """POPri as a dpbench method (see the module docstring)."""

    version = "5"  # 5: the decode loop's packed prefill and shared prompt cache (same distribution, other draws)
    citation = """\
@inproceedings{pmlr-v267-hou25g,
  title = {Private Federated Learning using Preference-Optimized Synthetic Data},
  author = {Hou, Charlie and Wang, Mei-Yu and Zhu, Yige and Lazar, Daniel and Fanti, Giulia},
  booktitle = {Proceedings of the 42nd International Conference on Machine Learning},
  series = {Proceedings of Machine Learning Research},
  volume = {267},
  pages = {24025--24044},
  year = {2025},
  eprint = {2504.16438},
  archivePrefix = {arXiv}
}
"""
    config_class = PopriOptions

    def mechanism(self, data: MethodData) -> MechanismSpec:
        return MechanismSpec(rounds=self.config.rounds, sampling_rate=self.config.sampling_rate)

    def run(self, data: MethodData, ctx: RunContext) -> SyntheticTexts:
        o = self.config
        o.check_public_seeds(data.public)
        if not data.validation:
            raise DpbenchError("POPri monitors rounds on the validation split, which is empty")
        from dpbench.toolkit import Embedder, embed_clients, embed_split

        state = ctx.checkpoint_dir
        embedder = Embedder(o.embedder, device=ctx.device)
        client_ids = sorted(data.clients)
        sums = client_sums(embed_clients(embedder, data, cache=ctx.cache), client_ids, embedder.dimension)
        ctx.clients.place(CLIENT_INPUTS, {cid: {"sum": row} for cid, row in zip(client_ids, sums, strict=True)})
        validation = embed_split(embedder, data, "validation", cache=ctx.cache)
        generator = o.generator(ctx.device)
        self._check_dpo_length(data.public, generator.tokenizer)
        sample = functools.partial(self._sample, generator, data.public, ctx)

        history = []
        for r in ctx.track(range(o.rounds), "POPri rounds"):
            folder = _round_folder(state, r)
            folder.mkdir(exist_ok=True)
            record = f"{folder.name}/round.json"
            done = ctx.load_state(record)
            if done is not None:
                history.append(_with_held_out(done["monitor"], done["dpo"]))
                ctx.report(r, history[-1])
                continue
            t0 = time.perf_counter()
            with ctx.phase(f"round {r + 1}/{o.rounds}: sampling {o.prompts_per_round * o.samples_per_prompt} "
                           "candidates"):
                prompts, candidates = sample(f"round{r}", o.prompts_per_round, o.samples_per_prompt,
                                             _adapter(state, r), folder / "candidates.json")
            t1 = time.perf_counter()
            with ctx.phase(f"round {r + 1}/{o.rounds}: scoring on clients and releasing"):
                embedded = normalise_rows(embedder.encode(candidates))
                monitor = {"checkpoint": r, **round_metrics(embedded, validation)}
                participants = ctx.privacy.cohort(r)
                contributions = np.vstack(list(ctx.clients.rows(
                    "dpbench_popri.scoring:client_step", participants, inputs=CLIENT_INPUTS,
                    payload={"samples": embedded}, batch=o.score_batch_clients, width=len(candidates))))
                noisy = ctx.privacy.release_clipped_sum(f"popri-round-{r}", contributions, clip_norm=1.0,
                                                        clients=participants)

            t2 = time.perf_counter()
            pairs = preference_pairs(noisy, samples_per_prompt=o.samples_per_prompt, reject_rank=o.reject_rank)
            records = [self._pair_record(prompts[p.prompt], candidates[p.chosen], candidates[p.rejected])
                       for p in pairs]
            write_json(folder / "pairs.json", [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}
                                               for p in pairs], indent=None)
            with (ctx.phase(f"round {r + 1}/{o.rounds}: DPO on {len(records)} pairs"),
                  generator.released()):  # vLLM: weights to CPU, KV cache dropped, while DPO has the GPU
                dpo = self._train(records, previous=_adapter_round(state, r), out_dir=folder, ctx=ctx,
                                  round_index=r)
            seconds = {"generation": t1 - t0, "scoring": t2 - t1, "dpo": time.perf_counter() - t2}
            ctx.log.info("POPri round %d: %s; DPO %s; seconds %s", r, _short(monitor), _short(dpo), _short(seconds))
            ctx.save_state(record, {"monitor": monitor, "dpo": dpo, "seconds": seconds})
            history.append(_with_held_out(monitor, dpo))
            ctx.report(r, history[-1])

        final_folder = state / "final"
        final_folder.mkdir(exist_ok=True)
        if ctx.load_state("final/monitor.json") is None:
            with ctx.phase("sampling the last checkpoint's monitor candidates"):
                _, candidates = sample("monitor-final", o.prompts_per_round, o.samples_per_prompt,
                                       _adapter(state, o.rounds), final_folder / "monitor_candidates.json")
            metrics = round_metrics(normalise_rows(embedder.encode(candidates)), validation)
            ctx.save_state("final/monitor.json", {"checkpoint": o.rounds, **metrics})
        history.append(ctx.load_state("final/monitor.json"))
        ctx.report(o.rounds, history[-1])
        downstream = o.select == "best_validation_downstream"
        if downstream:
            self._score_checkpoints(history, sample, state, ctx)
        chosen = pick_checkpoint(history, o.select)
        ctx.save_state("monitor.json", {"history": history, "chosen_checkpoint": chosen, "rule": o.select})
        saved = final_folder / (_checkpoint_texts_name(chosen) if downstream else "synthetic.json")
        with ctx.phase(f"sampling {o.final_samples} texts from checkpoint {chosen}"):
            _, texts = sample("final", o.final_samples, 1, _adapter(state, chosen), saved)
        generator.close()
        return SyntheticTexts(texts=tuple(texts))

    def checkpoint_texts(self, data: MethodData, ctx: RunContext, *, state: Path, checkpoint: int,
                         saved: Path) -> list[str]:
        """The final texts a finished run (checkpoints in ``state``) would return had ``select``
        chosen ``checkpoint``: same prompts and seeds. Spends no privacy (the adapters are
        released already); for comparing checkpoints on validation after a run."""
        generator = self.config.generator(ctx.device)
        try:
            return self._sample(generator, data.public, ctx, "final", self.config.final_samples, 1,
                                _adapter(state, checkpoint), saved)[1]
        finally:
            generator.close()

    def round_pairs(self, data: MethodData, ctx: RunContext, *, state: Path, round_index: int) -> list[dict]:
        """The DPO pairs (prompt, chosen, rejected) round ``round_index`` of a finished run
        trained on, rebuilt from its saved candidates and choices (the prompts from the run's
        seed, ``ctx.seed``). Released already: for studying DPO after a run."""
        folder = _round_folder(state, round_index)
        prompts = self._prompts(data.public, ctx, f"round{round_index}", self.config.prompts_per_round)
        candidates = json.loads((folder / "candidates.json").read_text())
        return [self._pair_record(prompts[p["prompt"]], candidates[p["chosen"]], candidates[p["rejected"]])
                for p in json.loads((folder / "pairs.json").read_text())]

    def _score_checkpoints(self, history: list[dict], sample, state: Path, ctx: RunContext) -> None:
        """Add ``validation_downstream`` to each checkpoint's entry of ``history``: its final
        texts (the final sample's prompts and seeds) scored on validation by the suite's
        evaluator. Kept per checkpoint in ``final/downstream.json``, so a killed run resumes."""
        o = self.config
        scores = ctx.load_state("final/downstream.json", {})
        for stats in history:
            k = stats["checkpoint"]
            if str(k) not in scores:
                with ctx.phase(f"checkpoint {k}: {o.final_samples} texts scored on validation"):
                    t0 = time.perf_counter()
                    _, texts = sample("final", o.final_samples, 1, _adapter(state, k),
                                      state / "final" / _checkpoint_texts_name(k))
                    t1 = time.perf_counter()
                    score = ctx.validation_score(texts)
                scores[str(k)] = {"validation_downstream": score, "seconds": {
                    "generation": t1 - t0, "evaluation": time.perf_counter() - t1}}
                ctx.save_state("final/downstream.json", scores)
                ctx.log.info("POPri checkpoint %d: validation %.4g", k, score)
            stats["validation_downstream"] = scores[str(k)]["validation_downstream"]
            ctx.report(k, {"validation_downstream": stats["validation_downstream"]})

    def _sample(self, generator, public, ctx, stream, prompts, per_prompt, adapter, saved: Path):
        """``per_prompt`` completions for each of ``prompts`` fresh prompts; cached in ``saved``."""
        o = self.config
        built = self._prompts(public, ctx, stream, prompts)
        if saved.exists():
            return built, json.loads(saved.read_text())
        texts = o.complete(generator, [p for p in built for _ in range(per_prompt)], stop=stop_strings(o.prompt_style),
                           seed=ctx.seed_for(f"popri-generate-{stream}"), adapter=str(adapter) if adapter else None)
        write_json(saved, texts, indent=None)
        return built, texts

    def _prompts(self, public, ctx, stream: str, count: int) -> list:
        """The ``count`` public-seeded prompts of sampling stream ``stream`` (``round<r>`` or
        ``final``), the same for a run and anything rebuilding it from the run's seed."""
        return self.config.public_prompts(public, count=count, rng=ctx.rng(f"popri-prompts-{stream}"))

    def _check_dpo_length(self, public, tokenizer) -> None:
        """Refuse, before any budget is spent, a ``max_length`` that the longest possible pair
        (the longest public seed texts in one prompt, a full-length completion) exceeds."""
        from dpbench_popri.dpo import pair_tokens

        o = self.config
        lengths = [len(ids) for ids in tokenizer([clean(t) for t in public], add_special_tokens=False)["input_ids"]]
        longest = [public[i] for i in np.argsort(lengths, kind="stable")[-o.examples_per_prompt:]]
        needed = pair_tokens(tokenizer, build_prompt(longest, o.prompt_style), o.truncate_tokens)
        if needed > o.max_length:
            raise ConfigError("max_length", o.max_length,
                              f"at least {needed}: a prompt of the {o.examples_per_prompt} longest public texts "
                              f"plus a {o.truncate_tokens}-token completion needs that many, "
                              "and DPO would cut the completions")

    def _pair_record(self, prompt, chosen: str, rejected: str) -> dict:
        style = self.config.prompt_style
        return {"prompt": prompt, "chosen": trl_completion(chosen, style), "rejected": trl_completion(rejected, style)}

    def _train(self, records, *, previous, out_dir, ctx, round_index) -> dict:
        from dpbench.toolkit import load_causal_lm, load_tokenizer, use_bf16
        from dpbench_popri.dpo import train_round

        o = self.config
        bf16 = use_bf16(o.bf16, ctx.device)
        base = load_causal_lm(o.model, dtype="bfloat16" if bf16 and ctx.device == "cuda" else "float32",
                              device=ctx.device)
        return train_round(options=o, base_model=base, tokenizer=load_tokenizer(o.model), pairs=records,
                           previous=previous, out_dir=out_dir, seed=ctx.seed_for(f"popri-dpo-{round_index}") % 2**31,
                           device=ctx.device)

    def release_agreement(self, noisy, clean) -> dict[str, float]:
        """The share of prompts whose pair (chosen and rejected sample) and whose chosen sample
        the noisy scores pick as the noise-free scores would."""
        o = self.config
        picked, ideal = (preference_pairs(s, samples_per_prompt=o.samples_per_prompt, reject_rank=o.reject_rank)
                         for s in (noisy, clean))
        return {"pairs_as_noise_free": float(np.mean([a == b for a, b in zip(picked, ideal, strict=True)])),
                "chosen_as_noise_free": float(np.mean([a.chosen == b.chosen
                                                       for a, b in zip(picked, ideal, strict=True)]))}

    def audit_mechanism(self):
        """POPri's release (scores -> centre -> unit norm -> noisy sum) for ``dpbench audit``."""
        from dpbench_popri.audit import popri_audit_mechanism

        return popri_audit_mechanism()


def pick_checkpoint(history: list[dict[str, float]], rule: str) -> int:
    """Index of the checkpoint (0 = base) the final data comes from, by the configured rule."""
    if rule == "last":
        return len(history) - 1
    if rule == "best_validation_downstream":
        return int(np.argmax([h["validation_downstream"] for h in history]))
    if rule == "best_validation_fid":
        return int(np.argmin([h["validation_fid"] for h in history]))
    return int(np.argmax([h["validation_centroid_cosine"] for h in history]))


def _adapter_round(state: Path, checkpoint: int) -> Path | None:
    """The round folder that produced checkpoint ``checkpoint`` (0 = the base model: none);
    round ``r``'s DPO resumes from checkpoint ``r``."""
    return None if checkpoint == 0 else _round_folder(state, checkpoint - 1)


def _round_folder(state: Path, round_index: int) -> Path:
    """Where round ``round_index`` keeps its candidates, pairs, adapter and record."""
    return state / f"round{round_index:03d}"


def _adapter(state: Path, checkpoint: int) -> Path | None:
    """The LoRA adapter of checkpoint ``checkpoint`` (None: the base model)."""
    folder = _adapter_round(state, checkpoint)
    return None if folder is None else folder / "adapter"


def _with_held_out(monitor: dict, dpo: dict) -> dict:
    """Checkpoint r's monitor entry with round r's held-out DPO check (checkpoint r's policy on
    pairs it has not trained on), when the round made one."""
    return {**monitor, **{f"dpo_{k}": dpo[k] for k in ("held_out_loss", "held_out_reward_accuracy") if k in dpo}}


def _checkpoint_texts_name(checkpoint: int) -> str:
    """The file under ``final/`` that keeps checkpoint ``checkpoint``'s final texts when every
    checkpoint's are sampled (``best_validation_downstream``)."""
    return f"checkpoint{checkpoint}.json"


def _short(stats: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in stats.items())
