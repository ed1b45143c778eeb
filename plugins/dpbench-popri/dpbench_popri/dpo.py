"""One round of DPO with trl on a LoRA adapter that carries over across rounds.

Each round trl gets the *plain* base model plus a ``peft_config``, so its reference model is
the base with the adapter disabled (POPri's reference), not last round's policy; the carried
adapter weights and optimizer state are then loaded into the fresh wrapper, which makes the
rounds one on-policy iterative DPO run.
"""

from __future__ import annotations

from pathlib import Path

from dpbench.api import atomic_write, write_json
from dpbench_popri.config import PopriOptions

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
COMPLETION_MARGIN = 4
"""tokens beyond the completion itself: an end-of-turn marker, EOS, re-tokenization slack"""


def pair_tokens(tokenizer, prompt, completion_tokens: int) -> int:
    """An upper bound on prompt + completion tokens of a DPO pair on ``prompt`` with
    completions of at most ``completion_tokens`` generator tokens. trl keeps the start of a
    longer sequence, so a ``max_length`` below this trains on cut completions (or drops the
    pair) without a word."""
    from dpbench.toolkit import prompt_token_ids

    return len(prompt_token_ids(tokenizer, prompt)) + completion_tokens + COMPLETION_MARGIN


def lora_config(options: PopriOptions, model):
    from peft import LoraConfig

    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    return LoraConfig(r=options.lora_r, lora_alpha=options.lora_alpha, lora_dropout=0.0, bias="none",
                      target_modules=[t for t in LORA_TARGETS if t in present], task_type="CAUSAL_LM")


def dpo_config(options: PopriOptions, *, output_dir: Path, first_round: bool, seed: int, device: str):
    """trl's DPOConfig with every default that differs from TrainingArguments set explicitly."""
    from trl import DPOConfig

    return DPOConfig(
        output_dir=str(output_dir), per_device_train_batch_size=options.pairs_per_step, gradient_accumulation_steps=1,
        num_train_epochs=options.epochs_per_round, learning_rate=options.learning_rate,
        lr_scheduler_type="constant_with_warmup", warmup_steps=options.warmup_steps if first_round else 0,
        beta=options.beta, loss_type=["sigmoid"], max_length=options.max_length, bf16=options.bf16,
        gradient_checkpointing=False, logging_steps=1, save_strategy="no", report_to="none", seed=seed,
        data_seed=seed, disable_tqdm=True, use_cpu=device == "cpu", dataloader_num_workers=0,
    )


def train_round(*, options: PopriOptions, base_model, tokenizer, pairs: list[dict], previous: Path | None,
                out_dir: Path, seed: int, device: str) -> dict:
    """Train the adapter one round on ``pairs``; save ``adapter/`` and ``optimizer.pt`` in ``out_dir``."""
    import torch
    from datasets import Dataset
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import PrinterCallback
    from trl import DPOTrainer

    trainer = DPOTrainer(
        model=base_model, ref_model=None, processing_class=tokenizer, train_dataset=Dataset.from_list(pairs),
        args=dpo_config(options, output_dir=out_dir / "trainer", first_round=previous is None, seed=seed,
                        device=device),
        peft_config=lora_config(options, base_model),
    )
    # trl drops pairs whose prompt fills max_length and cuts longer ones: record both
    kept = trainer.train_dataset
    lengths = [len(e["prompt_ids"]) + max(len(e["chosen_ids"]), len(e["rejected_ids"])) for e in kept]
    trainer.remove_callback(PrinterCallback)  # per-step logs go to dpo.json and the run log, not stdout
    if previous is not None:
        set_peft_model_state_dict(trainer.model, load_file(previous / "adapter" / "adapter_model.safetensors"))
        trainer.create_optimizer()
        trainer.optimizer.load_state_dict(torch.load(previous / "optimizer.pt", weights_only=True))
    trainer.train()
    trainer.model.save_pretrained(out_dir / "adapter")
    with atomic_write(out_dir / "optimizer.pt", "wb") as handle:
        torch.save(trainer.optimizer.state_dict(), handle)
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    accuracies = [e["rewards/accuracies"] for e in trainer.state.log_history if "rewards/accuracies" in e]
    stats = {"steps": trainer.state.global_step, "loss_first": losses[0] if losses else None,
             "loss_last": losses[-1] if losses else None,
             "reward_accuracy_last": accuracies[-1] if accuracies else None,
             "pairs_dropped": len(pairs) - len(kept), "pairs_cut": sum(n > options.max_length for n in lengths),
             "longest_pair_tokens": max(lengths, default=0)}
    write_json(out_dir / "dpo.json", stats)
    return stats
