"""bfloat16 against float32 matrix products on this CPU, at the shapes generation and training use.

What ``bf16: auto`` rests on (``dpbench.models.precision``): on a CPU that computes bf16 natively
(AVX512-BF16, AMX) bf16 products are several times faster than float32; elsewhere oneDNN
emulates them and they are several times slower. Shapes: SmolLM2-135M's gate and up
projections taken together (576 → 3072) at 32 rows (a decode step at batch 32) and 2,048 rows (a prefill or a
training batch). Best of five.

``.venv/bin/python benchmarks/precision.py`` writes ``results/precision-<machine>.json``, where
``<machine>`` is ``native-bf16-<cpu>`` or ``no-native-bf16-<cpu>`` (``precision.machine_tag``).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import torch

from dpbench.models.precision import cpuinfo, native_bf16

RESULTS = Path(__file__).resolve().parent / "results"
SHAPES = {"decode_batch32": (32, 576, 3072), "prefill_2048_rows": (2048, 576, 3072)}


def gflops(rows: int, inner: int, out: int, dtype: torch.dtype) -> float:
    x, w = torch.randn(rows, inner, dtype=dtype), torch.randn(out, inner, dtype=dtype)
    torch.nn.functional.linear(x, w)  # warm-up
    repeats = max(3, 200_000_000 // (rows * inner * out))
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(repeats):
            torch.nn.functional.linear(x, w)
        best = min(best, (time.perf_counter() - start) / repeats)
    return 2 * rows * inner * out / best / 1e9


def machine_tag() -> str:
    """``native-bf16-<cpu>`` or ``no-native-bf16-<cpu>``: speeds differ between CPU models that
    both compute bf16 natively (an AMD EPYC and an Intel Xeon here), so each keeps its own file."""
    model = re.sub(r"\(r\)|\(tm\)|processor", "", (cpuinfo().get("model name") or "cpu").lower())
    cpu = re.sub(r"[^a-z0-9]+", "-", model)
    return f"{'native' if native_bf16('cpu') else 'no-native'}-bf16-{cpu.strip('-')}"


def main() -> None:
    rows = {}
    for name, shape in SHAPES.items():
        f32, bf16 = gflops(*shape, torch.float32), gflops(*shape, torch.bfloat16)
        rows[name] = {"float32_gflops": round(f32, 1), "bfloat16_gflops": round(bf16, 1),
                      "bf16_over_fp32": round(bf16 / f32, 2)}
    result = {"benchmark": "precision", "cpu": cpuinfo().get("model name"), "native_bf16": native_bf16("cpu"),
              "auto_resolves_to": "bfloat16" if native_bf16("cpu") else "float32",
              "torch": torch.__version__, "threads": torch.get_num_threads(), "shapes": rows,
              "date": time.strftime("%Y-%m-%d %H:%M")}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"precision-{machine_tag()}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
