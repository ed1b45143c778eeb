"""Sampled generation through ``NucleusSampler`` against transformers' own top-p sampling, side by side.

SmolLM2-135M-Instruct in bf16, batch 32 of one chat prompt, exactly 64 new tokens
(``min_new_tokens``), temperature 1, top-p 0.9 — POPri's and PE's setting. Both runs call
``model.generate`` with the same inputs; only the draw differs (transformers: full-vocabulary
sort and multinomial; dpbench: a partial sort of the top candidates and a draw over them, then
greedy decoding of the one-hot choice). Reports tokens/s of each, their ratio (``speedup``) and
how often a row's nucleus reached past the candidates.

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


def main() -> None:
    from transformers import LogitsProcessorList

    from dpbench.models import TransformersGenerator
    from dpbench.models.generation import NucleusSampler

    gen = TransformersGenerator("smollm2-135m-instruct", dtype="bfloat16")
    model, tok = gen.model, gen.tokenizer
    text = "the state of the union is strong and our economy grows " * 6
    ids = gen.prompt_ids([{"role": "user", "content": f"Write one new paragraph like this one:\n{text}"}])
    inputs = {"input_ids": torch.tensor([ids] * BATCH), "attention_mask": torch.ones(BATCH, len(ids), dtype=torch.long),
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
        model.generate(**inputs, do_sample=True, temperature=1.0, top_p=TOP_P, top_k=0)
        return time.perf_counter() - start

    def nucleus(sampler=NucleusSampler) -> float:
        start = time.perf_counter()
        processor = sampler(temperature=1.0, top_p=TOP_P, generator=torch.Generator().manual_seed(0))
        model.generate(**inputs, do_sample=False, logits_processor=LogitsProcessorList([processor]))
        return time.perf_counter() - start

    with torch.inference_mode():
        native(), nucleus()  # warm-up
        seconds = {"transformers": min(native() for _ in range(2)), "nucleus_sampler": min(nucleus() for _ in range(2))}
        nucleus(Counting)
    tokens = BATCH * NEW_TOKENS
    result = {"benchmark": "sampling", "model": "smollm2-135m-instruct", "dtype": "bfloat16", "batch": BATCH,
              "prompt_tokens": len(ids), "new_tokens": NEW_TOKENS, "top_p": TOP_P, "torch": torch.__version__,
              "threads": torch.get_num_threads(),
              "tokens_per_s": {k: round(tokens / v, 1) for k, v in seconds.items()},
              "speedup": round(seconds["transformers"] / seconds["nucleus_sampler"], 2),
              "rows_past_candidates": round(Counting.larger / Counting.rows, 4)}
    print(json.dumps(result, indent=1))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sampling.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
