"""Sampled generation through ``NucleusSampler`` against transformers' own sampler, side by side.

SmolLM2-135M-Instruct in bf16, one chat prompt repeated, exactly 64 new tokens
(``min_new_tokens``), temperature 1, at top-p 1.0 (POPri's and PE's default) and 0.9. Both paths
call ``model.generate`` with the same inputs; only the draw differs (transformers: a sort of the
whole vocabulary for top-p, then an exponential draw per token; dpbench: a partial sort of the
top candidates, one uniform draw per row through the cumulative distribution, then greedy
decoding of the one-hot choice). For each top-p: tokens/s of transformers' sampler at batch 32
(the path before) and of the nucleus sampler at batch 32, 64 and 128, the ratio at batch 32
(``speedup``) and at the best batch (``speedup_best_batch``); at 0.9 also how often a row's
nucleus reached past the candidates.

Run with nothing else on the machine: ``.venv/bin/python benchmarks/sampling.py``; writes
``benchmarks/results/sampling.json``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
BATCH, NEW_TOKENS = 32, 64
BATCHES = (32, 64, 128)
TOP_PS = (1.0, 0.9)


def main() -> None:
    from transformers import LogitsProcessorList

    from dpbench.models import TransformersGenerator
    from dpbench.models.generation import NucleusSampler

    gen = TransformersGenerator("smollm2-135m-instruct", dtype="bfloat16")
    model, tok = gen.model, gen.tokenizer
    text = "the state of the union is strong and our economy grows " * 6
    ids = gen.prompt_ids([{"role": "user", "content": f"Write one new paragraph like this one:\n{text}"}])

    def inputs(batch: int) -> dict:
        return {"input_ids": torch.tensor([ids] * batch),
                "attention_mask": torch.ones(batch, len(ids), dtype=torch.long),
                "max_new_tokens": NEW_TOKENS, "min_new_tokens": NEW_TOKENS, "pad_token_id": tok.pad_token_id}

    class Counting(NucleusSampler):
        rows = larger = 0

        def __call__(self, input_ids, scores):
            probs = torch.softmax(scores.float() / self.temperature, dim=-1)
            Counting.rows += len(probs)
            Counting.larger += int((torch.topk(probs, self.candidates).values.sum(-1) < self.top_p).sum())
            return super().__call__(input_ids, scores)

    def native(top_p: float) -> float:
        torch.manual_seed(0)
        start = time.perf_counter()
        model.generate(**inputs(BATCH), do_sample=True, temperature=1.0, top_p=top_p, top_k=0)
        return time.perf_counter() - start

    def nucleus(top_p: float, batch: int, sampler=NucleusSampler) -> float:
        start = time.perf_counter()
        processor = sampler(temperature=1.0, top_p=top_p, generator=torch.Generator().manual_seed(0))
        model.generate(**inputs(batch), do_sample=False, logits_processor=LogitsProcessorList([processor]))
        return time.perf_counter() - start

    result = {"benchmark": "sampling", "model": "smollm2-135m-instruct", "dtype": "bfloat16",
              "prompt_tokens": len(ids), "new_tokens": NEW_TOKENS, "torch": torch.__version__,
              "threads": torch.get_num_threads(), "top_p": {}}
    with torch.inference_mode():
        native(1.0), nucleus(1.0, BATCH)  # warm-up
        for top_p in TOP_PS:
            rates = {"transformers_batch32": BATCH * NEW_TOKENS / min(native(top_p) for _ in range(2))}
            for batch in BATCHES:
                seconds = min(nucleus(top_p, batch) for _ in range(2))
                rates[f"nucleus_sampler_batch{batch}"] = batch * NEW_TOKENS / seconds
            best = max(BATCHES, key=lambda b: rates[f"nucleus_sampler_batch{b}"])
            row = {"tokens_per_s": {k: round(v, 1) for k, v in rates.items()},
                   "speedup": round(rates["nucleus_sampler_batch32"] / rates["transformers_batch32"], 2),
                   "best_batch": best,
                   "speedup_best_batch": round(rates[f"nucleus_sampler_batch{best}"]
                                               / rates["transformers_batch32"], 2)}
            if top_p < 1:
                nucleus(top_p, BATCH, Counting)
                row["rows_past_candidates"] = round(Counting.larger / Counting.rows, 4)
            result["top_p"][str(top_p)] = row
    result["speedup"] = result["top_p"]["1.0"]["speedup"]  # at the methods' default top-p
    print(json.dumps(result, indent=1))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sampling.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
