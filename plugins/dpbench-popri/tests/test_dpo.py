"""The shared-prompt DPO path against stock trl on a tiny random Llama, in fp32: same loss, same
LoRA gradients (which flow through the prompt's cache), same reference log-probabilities (the
base model's, not the policy's)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

RTOL, ATOL = 1e-4, 1e-6
"""fp32; the two paths differ only in the order of floating-point sums. A gradient tensor's
absolute tolerance is RTOL times its largest entry (entries near zero carry the same absolute
rounding as the large ones)."""


def _pairs():
    """Chat pairs with prompts of different lengths and chosen/rejected of different lengths
    (one completion a single word), so both halves of the batch are padded."""
    def user(words):
        return [{"role": "user", "content": " ".join(f"w{i % 40}" for i in words)}]

    def reply(words):
        return [{"role": "assistant", "content": " ".join(f"w{i % 40}" for i in words)}]

    return [{"prompt": user(range(3, 30)), "chosen": reply(range(5)), "rejected": reply(range(7, 19))},
            {"prompt": user(range(11, 17)), "chosen": reply(range(20, 36)), "rejected": reply([2])},
            {"prompt": user(range(1, 14)), "chosen": reply(range(9, 12)), "rejected": reply(range(30, 39))}]


def _base(tiny_llama):
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    with torch.no_grad():  # sharper next-token distributions: log-probs that depend on the context
        base.lm_head.weight.mul_(30)
    return base


def _trainer(tiny_llama, tmp_path, *, stock):
    from datasets import Dataset
    from trl import DPOTrainer

    from dpbench.models.resolve import load_tokenizer
    from dpbench.testing import randomize_lora
    from dpbench.toolkit import lora_config
    from dpbench_popri.config import PopriOptions
    from dpbench_popri.dpo import dpo_config, shared_prompt_trainer

    options = PopriOptions(model=str(tiny_llama), lora_r=2, lora_alpha=4, pairs_per_step=3, max_length=128,
                           bf16=False)  # fp32 on every machine: `auto` turns on bf16 where it is native
    base = _base(tiny_llama)
    trainer = (DPOTrainer if stock else shared_prompt_trainer())(
        model=base, processing_class=load_tokenizer(str(tiny_llama)), train_dataset=Dataset.from_list(_pairs()),
        args=dpo_config(options, output_dir=tmp_path / ("stock" if stock else "shared"), first_round=True, seed=0,
                        device="cpu", stock=stock),
        peft_config=lora_config(base, r=options.lora_r, alpha=options.lora_alpha))
    randomize_lora(trainer.model)
    return trainer


def test_shared_prompt_loss_and_gradients_equal_stock_trl(tiny_llama, tmp_path):
    from dpbench.testing import assert_gradients_close, loss_and_gradients

    stock_loss, stock_grads, batch = loss_and_gradients(_trainer(tiny_llama, tmp_path, stock=True))
    shared = _trainer(tiny_llama, tmp_path, stock=False)
    loss, grads, shared_batch = loss_and_gradients(shared)

    assert torch.equal(batch["input_ids"], shared_batch["input_ids"])
    assert len(set(batch["completion_mask"].sum(1).tolist())) == 6  # every completion padded differently
    torch.testing.assert_close(loss, stock_loss, rtol=RTOL, atol=ATOL)
    assert_gradients_close(grads, stock_grads, rtol=RTOL)

    # the precomputed reference is the base model (adapter disabled), not the policy
    from trl.trainer.utils import use_adapter

    def logps(model):
        labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
        with torch.no_grad():
            return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels,
                         fused_lm_head=True).log_probs.sum(1)

    with use_adapter(shared.model, None):
        reference = logps(shared.model)
    precomputed = torch.cat([shared_batch["ref_chosen_logps"], shared_batch["ref_rejected_logps"]])
    torch.testing.assert_close(precomputed, reference, rtol=RTOL, atol=ATOL)
    assert ((logps(shared.model) - reference).abs() > 10 * (ATOL + RTOL * reference.abs())).all()  # not the policy


def test_shared_forward_equals_trl_forward_and_needs_the_prompt(tiny_llama, tmp_path):
    """Per-token outputs of the shared-prompt forward (log-probs and the metrics' entropy, mean
    logit, top-1) equal trl's fused forward on the same batch; a batch that does not share its
    prompts falls back to trl's forward; and the completions' log-probs without the prompt are
    far outside the tolerance, so a path that dropped the prompt's cache would fail."""
    from dpbench.testing import log_probs_without_prompts
    from dpbench.toolkit import prompt_cached_forward

    trainer = _trainer(tiny_llama, tmp_path, stock=True)
    batch = trainer.data_collator(list(trainer.train_dataset))
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    model = trainer.model
    stock = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels,
                  fused_lm_head=True)
    shared = prompt_cached_forward(model, batch["input_ids"], batch["attention_mask"], labels, copies=2)
    for key in ("log_probs", "entropy", "mean_logits"):
        torch.testing.assert_close(shared[key], stock[key], rtol=RTOL, atol=ATOL, msg=key)
    assert torch.equal(shared["is_top1"], stock["is_top1"])

    # a batch whose halves do not share prompts takes trl's own forward
    swapped = batch["input_ids"].clone()
    swapped[3, 0] = swapped[3, 0] + 1
    fallback = prompt_cached_forward(model, swapped, batch["attention_mask"], labels, copies=2)
    assert torch.equal(fallback["log_probs"], model(input_ids=swapped, attention_mask=batch["attention_mask"],
                                                    labels=labels, fused_lm_head=True)["log_probs"])

    # without the prompt (each completion after its prompt's last token only) the log-probs differ
    alone = log_probs_without_prompts(model, batch["input_ids"], batch["attention_mask"], labels)
    full = stock["log_probs"].sum(1).detach()
    assert ((alone - full).abs() > 10 * (ATOL + RTOL * full.abs())).all()


def test_with_bf16_every_pass_runs_under_the_trainers_autocast(tiny_llama, tmp_path):
    """The prompt pass goes through the model like the completion pass, so under ``bf16`` both
    run in autocast (the prompt's cache is not silently computed in fp32)."""
    from dpbench.models.resolve import load_tokenizer
    from dpbench_popri.config import PopriOptions
    from dpbench_popri.dpo import train_round

    dtypes = []
    base = _base(tiny_llama)
    base.model.layers[0].self_attn.q_proj.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    options = PopriOptions(model=str(tiny_llama), lora_r=2, lora_alpha=4, pairs_per_step=3, max_length=128, bf16=True)
    train_round(options=options, base_model=base, tokenizer=load_tokenizer(str(tiny_llama)), pairs=_pairs(),
                previous=None, out_dir=tmp_path, seed=0, device="cpu")
    assert dtypes == [torch.bfloat16] * 4  # reference (prompt, completions), then one training step


@pytest.mark.parametrize("bf16", [False, True])
def test_the_held_out_check_scores_the_carried_policy_and_changes_no_training(tiny_llama, tmp_path, monkeypatch,
                                                                             bf16):
    """From round 1 on, the carried policy's DPO loss on the round's pairs is measured before it
    trains on them: with one step over all the pairs that is the step's own loss; the adapter
    trained after the check is the one trained without it (in bf16 too, where the check's
    ``evaluate`` leaves accelerate's autocast wrapper on the model)."""
    import math

    from safetensors.torch import load_file

    import dpbench_popri.dpo as dpo
    from dpbench.models.resolve import load_tokenizer
    from dpbench_popri.config import PopriOptions

    options = PopriOptions(model=str(tiny_llama), lora_r=2, lora_alpha=4, pairs_per_step=3, max_length=128,
                           learning_rate=1e-2, bf16=bf16)

    def train(previous, out_dir):
        return dpo.train_round(options=options, base_model=_base(tiny_llama), tokenizer=load_tokenizer(str(tiny_llama)),
                               pairs=_pairs(), previous=previous, out_dir=out_dir, seed=0, device="cpu")

    assert "held_out_loss" not in train(None, tmp_path / "round0")  # its policy is the reference
    checked = train(tmp_path / "round0", tmp_path / "checked")
    assert checked["held_out_loss"] == pytest.approx(checked["loss_first"], rel=1e-2 if bf16 else 1e-5)
    assert abs(checked["held_out_loss"] - math.log(2)) > 1e-4 and 0 <= checked["held_out_reward_accuracy"] <= 1
    alone = dpo.held_out_check(options=options, base_model=_base(tiny_llama), tokenizer=load_tokenizer(str(tiny_llama)),
                               pairs=_pairs(), trained=tmp_path / "round0", out_dir=tmp_path / "alone", device="cpu")
    assert alone == pytest.approx({k: checked[k] for k in ("held_out_loss", "held_out_reward_accuracy")}, rel=1e-6)
    monkeypatch.setattr(dpo, "_held_out", lambda trainer: {})
    plain = train(tmp_path / "round0", tmp_path / "plain")
    assert plain["loss_last"] == checked["loss_last"]
    weights = [load_file(tmp_path / name / "adapter" / "adapter_model.safetensors") for name in ("checked", "plain")]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_the_dpo_config_turns_activation_checkpointing_off_under_its_current_name(tmp_path):
    """trl defaults checkpointing on (it would stop the prompt's cache and cost ~20 % a step); the
    config turns it off by transformers' current name, so no round warns of the deprecated one."""
    import warnings

    from dpbench_popri.config import PopriOptions
    from dpbench_popri.dpo import dpo_config

    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        args = dpo_config(PopriOptions(), output_dir=tmp_path, first_round=True, seed=0, device="cpu")
    assert args.activation_checkpointing is False and args.gradient_checkpointing is False
