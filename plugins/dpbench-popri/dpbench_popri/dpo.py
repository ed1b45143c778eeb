"""One round of DPO with trl on a LoRA adapter that carries over across rounds.

Each round trl gets the *plain* base model plus a ``peft_config``, so its reference model is
the base with the adapter disabled (POPri's reference), not last round's policy; the carried
adapter weights and optimizer state are then loaded into the fresh wrapper, which makes the
rounds one on-policy iterative DPO run.

By default (``stock=False``) each pair's prompt goes through the model once, for both of its
completions (``SharedPromptDPOTrainer``), and the reference log-probabilities are computed once
per pair before training (trl's ``precompute_ref_log_probs``): the same loss and gradients as
stock trl, at about half the compute for POPri's long chat prompts and short completions.
"""

from __future__ import annotations

import functools
from pathlib import Path

from dpbench.api import atomic_write, write_json
from dpbench_popri.config import PopriOptions

COMPLETION_MARGIN = 4
"""tokens beyond the completion itself: an end-of-turn marker, EOS, re-tokenization slack"""


def pair_tokens(tokenizer, prompt, completion_tokens: int) -> int:
    """An upper bound on prompt + completion tokens of a DPO pair on ``prompt`` with
    completions of at most ``completion_tokens`` generator tokens. trl keeps the start of a
    longer sequence, so a ``max_length`` below this trains on cut completions (or drops the
    pair) without a word."""
    from dpbench.toolkit import prompt_token_ids

    return len(prompt_token_ids(tokenizer, prompt)) + completion_tokens + COMPLETION_MARGIN


def dpo_config(options: PopriOptions, *, output_dir: Path, first_round: bool, seed: int, device: str,
               stock: bool = False):
    """trl's DPOConfig with every default that differs from TrainingArguments set explicitly;
    reference log-probabilities precomputed unless ``stock``."""
    from trl import DPOConfig

    from dpbench.toolkit import use_bf16

    return DPOConfig(
        output_dir=str(output_dir), per_device_train_batch_size=options.pairs_per_step,
        per_device_eval_batch_size=options.pairs_per_step, gradient_accumulation_steps=1,
        num_train_epochs=options.epochs_per_round, learning_rate=options.learning_rate,
        lr_scheduler_type="constant_with_warmup", warmup_steps=options.warmup_steps if first_round else 0,
        beta=options.beta, loss_type=["sigmoid"], max_length=options.max_length,
        bf16=use_bf16(options.bf16, device),
        activation_checkpointing=False, logging_steps=1, save_strategy="no", report_to="none", seed=seed,
        data_seed=seed, disable_tqdm=True, use_cpu=device == "cpu", dataloader_num_workers=0,
        precompute_ref_log_probs=not stock,
    )


@functools.cache
def shared_prompt_trainer():
    """``DPOTrainer`` whose policy and reference forwards go through the toolkit's
    ``prompt_cached_forward`` on ``[chosen; rejected]`` (``copies=2``): same loss and gradients,
    each prompt computed once per pair instead of twice, and only completions through the LM head."""
    from trl import DPOTrainer

    from dpbench.toolkit import prompt_cached

    class SharedPromptDPOTrainer(DPOTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            return super().compute_loss(prompt_cached(model, copies=2), inputs, return_outputs, num_items_in_batch)

        def compute_ref_log_probs(self, model, inputs):
            return super().compute_ref_log_probs(prompt_cached(model, copies=2), inputs)

    return SharedPromptDPOTrainer


def _held_out(trainer) -> dict[str, float]:
    """The carried policy's DPO loss and reward accuracy on this round's pairs before it trains
    on them: whether what earlier rounds learnt carries to new prompts (ln 2 and 0 for a policy
    no different from the reference). No gradient and no random draw, so training is unchanged
    (under bf16 ``evaluate`` leaves the model's forward in accelerate's autocast wrapper, which
    ``train`` applies anyway)."""
    trainer.eval_dataset = trainer.train_dataset  # with its precomputed reference log-probs
    metrics = trainer.evaluate()
    return {"held_out_loss": metrics["eval_loss"], "held_out_reward_accuracy": metrics["eval_rewards/accuracies"]}


def _trainer(*, options: PopriOptions, base_model, tokenizer, pairs: list[dict], previous: Path | None, out_dir: Path,
             seed: int, device: str, stock: bool):
    """trl's trainer on ``pairs`` with a fresh LoRA wrapper of ``base_model``, carrying the adapter
    and optimizer state saved in ``previous`` (a round's folder) when given."""
    import torch
    from datasets import Dataset
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import PrinterCallback
    from trl import DPOTrainer

    from dpbench.toolkit import lora_config

    trainer = (DPOTrainer if stock else shared_prompt_trainer())(
        model=base_model, ref_model=None, processing_class=tokenizer, train_dataset=Dataset.from_list(pairs),
        args=dpo_config(options, output_dir=out_dir / "trainer", first_round=previous is None, seed=seed,
                        device=device, stock=stock),
        peft_config=lora_config(base_model, r=options.lora_r, alpha=options.lora_alpha),
    )
    trainer.remove_callback(PrinterCallback)  # per-step logs go to dpo.json and the run log, not stdout
    if previous is not None:
        set_peft_model_state_dict(trainer.model, load_file(previous / "adapter" / "adapter_model.safetensors"))
        trainer.create_optimizer()
        trainer.optimizer.load_state_dict(torch.load(previous / "optimizer.pt", weights_only=True))
    return trainer


def train_round(*, options: PopriOptions, base_model, tokenizer, pairs: list[dict], previous: Path | None,
                out_dir: Path, seed: int, device: str, stock: bool = False) -> dict:
    """Train the adapter one round on ``pairs``; save ``adapter/`` and ``optimizer.pt`` in ``out_dir``.
    ``stock``: plain trl (each prompt run twice, the reference inside every step), for comparison."""
    import torch

    trainer = _trainer(options=options, base_model=base_model, tokenizer=tokenizer, pairs=pairs, previous=previous,
                       out_dir=out_dir, seed=seed, device=device, stock=stock)
    # trl drops pairs whose prompt fills max_length and cuts longer ones: record both
    kept = trainer.train_dataset
    lengths = [len(e["prompt_ids"]) + max(len(e["chosen_ids"]), len(e["rejected_ids"])) for e in kept]
    held_out = _held_out(trainer) if previous is not None else {}
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
             "longest_pair_tokens": max(lengths, default=0), **held_out}
    write_json(out_dir / "dpo.json", stats)
    return stats


def held_out_check(*, options: PopriOptions, base_model, tokenizer, pairs: list[dict], trained: Path, out_dir: Path,
                   device: str) -> dict[str, float]:
    """The DPO loss and reward accuracy on ``pairs`` of the policy a round saved in ``trained``,
    without training on them (the check ``train_round`` makes before each round after the first)."""
    trainer = _trainer(options=options, base_model=base_model, tokenizer=tokenizer, pairs=pairs, previous=trained,
                       out_dir=out_dir, seed=0, device=device, stock=False)
    return _held_out(trainer)
