"""Where one sampled ``generate`` call of SmolLM2-135M-Instruct spends its time (transformers, bf16).

Batch 32 of one chat prompt, exactly 64 new tokens (``min_new_tokens``), temperature 1, top-p 0.9,
as POPri and PE sample. Reports tokens/s, the time of one decode forward on its own, and the
``torch.profiler`` operators of a whole call by self CPU time, so a faster generation path can
aim at what costs most (e.g. top-p's full-vocabulary sort and multinomial sampling vs matmuls).

Run with nothing else on the machine: ``.venv/bin/python benchmarks/generation_profile.py``;
prints a table and writes ``benchmarks/results/generation_profile.json``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
BATCH, NEW_TOKENS, TOP_OPS = 32, 64, 12


def main() -> None:
    from torch.profiler import ProfilerActivity, profile

    from dpbench.models import TransformersGenerator

    gen = TransformersGenerator("smollm2-135m-instruct", dtype="bfloat16")
    model, tok = gen.model, gen.tokenizer
    text = "the state of the union is strong and our economy grows " * 6
    ids = gen.prompt_ids([{"role": "user", "content": f"Write one new paragraph like this one:\n{text}"}])
    input_ids = torch.tensor([ids] * BATCH)
    mask = torch.ones_like(input_ids)

    def sample() -> float:
        torch.manual_seed(0)
        start = time.perf_counter()
        with torch.inference_mode():
            model.generate(input_ids=input_ids, attention_mask=mask, do_sample=True, temperature=1.0, top_p=0.9,
                           top_k=0, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                           pad_token_id=tok.pad_token_id)
        return time.perf_counter() - start

    sample()  # warm-up
    seconds = min(sample() for _ in range(2))
    with torch.inference_mode():
        cache = model(input_ids=input_ids, attention_mask=mask, use_cache=True).past_key_values
        step_mask = torch.cat([mask, torch.ones(BATCH, 1, dtype=mask.dtype)], dim=1)
        start = time.perf_counter()
        for _ in range(5):
            model(input_ids=torch.zeros(BATCH, 1, dtype=torch.long), attention_mask=step_mask,
                  past_key_values=cache, use_cache=True)
        forward_s = (time.perf_counter() - start) / 5
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        sample()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    ops = [{"op": e.key, "self_s": round(e.self_cpu_time_total / 1e6, 3),
            "share": round(e.self_cpu_time_total / total, 3), "calls": e.count} for e in events[:TOP_OPS]]
    result = {"benchmark": "generation_profile", "model": "smollm2-135m-instruct", "dtype": "bfloat16",
              "batch": BATCH, "prompt_tokens": len(ids), "new_tokens": NEW_TOKENS, "torch": torch.__version__,
              "threads": torch.get_num_threads(), "seconds": round(seconds, 2),
              "tokens_per_s": round(BATCH * NEW_TOKENS / seconds, 1), "decode_forward_s": round(forward_s, 4),
              "forward_share_of_a_step": round(forward_s * NEW_TOKENS / seconds, 3), "ops": ops}
    print(f"{result['tokens_per_s']} tok/s; one decode forward {forward_s * 1e3:.1f} ms "
          f"({100 * result['forward_share_of_a_step']:.0f}% of a step)")
    for op in ops:
        print(f"  {op['op']:<55} {op['self_s']:>7.3f} s  {100 * op['share']:5.1f}%  x{op['calls']}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "generation_profile.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
