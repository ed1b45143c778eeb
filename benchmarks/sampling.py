"""Sampled generation through ``NucleusSampler`` against transformers' own top-p sampling, side by side.

SmolLM2-135M-Instruct in bf16, one chat prompt repeated, exactly 64 new tokens
(``min_new_tokens``), temperature 1, top-p 0.9 — POPri's and PE's setting. Both paths call
``model.generate`` with the same inputs; only the draw differs (transformers: full-vocabulary
sort and multinomial; dpbench: a partial sort of the top candidates and a draw over them, then
greedy decoding of the one-hot choice). Reports tokens/s of transformers' sampler at batch 32
(the path before) and of the nucleus sampler at batch 32, 64 and 128, their ratio at batch 32
(``speedup``) and at the best batch (``speedup_best_batch``), and how often a row's nucleus
reached past the candidates.

Run with nothing else on the machine: ``.venv/bin/python benchmarks/sampling.py``; writes
``benchmarks/results/sampling.json``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
BATCH, NEW_TOKENS, TOP_P = 32, 64, 0.9
BATCHES = (32, 64, 128)


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

    def native() -> float:
        torch.manual_seed(0)
        start = time.perf_counter()
        model.generate(**inputs(BATCH), do_sample=True, temperature=1.0, top_p=TOP_P, top_k=0)
        return time.perf_counter() - start

    def nucleus(batch: int, sampler=NucleusSampler) -> float:
        start = time.perf_counter()
        processor = sampler(temperature=1.0, top_p=TOP_P, generator=torch.Generator().manual_seed(0))
        model.generate(**inputs(batch), do_sample=False, logits_processor=LogitsProcessorList([processor]))
        return time.perf_counter() - start

    with torch.inference_mode():
        native(), nucleus(BATCH)  # warm-up
        rates = {"transformers_batch32": BATCH * NEW_TOKENS / min(native() for _ in range(2))}
        for batch in BATCHES:
            rates[f"nucleus_sampler_batch{batch}"] = batch * NEW_TOKENS / min(nucleus(batch) for _ in range(2))
        nucleus(BATCH, Counting)
    best = max(BATCHES, key=lambda b: rates[f"nucleus_sampler_batch{b}"])
    result = {"benchmark": "sampling", "model": "smollm2-135m-instruct", "dtype": "bfloat16",
              "prompt_tokens": len(ids), "new_tokens": NEW_TOKENS, "top_p": TOP_P, "torch": torch.__version__,
              "threads": torch.get_num_threads(), "tokens_per_s": {k: round(v, 1) for k, v in rates.items()},
              "speedup": round(rates["nucleus_sampler_batch32"] / rates["transformers_batch32"], 2),
              "best_batch": best,
              "speedup_best_batch": round(rates[f"nucleus_sampler_batch{best}"] / rates["transformers_batch32"], 2),
              "rows_past_candidates": round(Counting.larger / Counting.rows, 4)}
    print(json.dumps(result, indent=1))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sampling.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
