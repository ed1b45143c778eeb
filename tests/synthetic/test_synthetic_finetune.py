"""The prompt-cached SFT path against stock trl on a tiny random Llama, in fp32: same loss, same
LoRA gradients (which flow through the prompt's cache), same per-token outputs; batches it
cannot take go to trl's own forward. (POPri's DPO tests cover ``copies=2``.)"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

RTOL, ATOL = 1e-4, 1e-6
"""fp32; the two paths differ only in the order of floating-point sums. A gradient tensor's
absolute tolerance is RTOL times its largest entry."""


def _records():
    """Chat prompts and completions of different lengths (one completion a single word), so
    both the prompts and the completions are padded differently in one batch."""
    def user(words):
        return [{"role": "user", "content": " ".join(f"w{i % 40}" for i in words)}]

    def reply(words):
        return [{"role": "assistant", "content": " ".join(f"w{i % 40}" for i in words)}]

    return [{"prompt": user(range(3, 30)), "completion": reply(range(5))},
            {"prompt": user(range(11, 17)), "completion": reply(range(20, 36))},
            {"prompt": user(range(1, 14)), "completion": reply([2])}]


def _trainer(tiny_llama, tmp_path, *, stock, checkpointing=False):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from dpbench.models.resolve import load_tokenizer
    from dpbench.testing import randomize_lora
    from dpbench.toolkit import lora_config, prompt_cached_sft_trainer

    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    with torch.no_grad():  # sharper next-token distributions: log-probs that depend on the context
        base.lm_head.weight.mul_(30)
    trainer = (SFTTrainer if stock else prompt_cached_sft_trainer())(
        model=base, processing_class=load_tokenizer(str(tiny_llama)), train_dataset=Dataset.from_list(_records()),
        peft_config=lora_config(base, r=2, alpha=4),
        args=SFTConfig(output_dir=str(tmp_path / ("stock" if stock else "cached")), per_device_train_batch_size=3,
                       max_length=128, completion_only_loss=True, packing=False,
                       activation_checkpointing=checkpointing, bf16=False, use_cpu=True, report_to="none", seed=0,
                       disable_tqdm=True))
    randomize_lora(trainer.model)
    return trainer


def test_prompt_cached_sft_loss_gradients_and_metrics_equal_stock_trl(tiny_llama, tmp_path):
    from dpbench.testing import assert_gradients_close, loss_and_gradients

    stock_trainer, cached_trainer = (_trainer(tiny_llama, tmp_path, stock=stock) for stock in (True, False))
    stock_loss, stock_grads, batch = loss_and_gradients(stock_trainer)
    loss, grads, cached_batch = loss_and_gradients(cached_trainer)
    stock_metrics, metrics = stock_trainer._metrics["train"], cached_trainer._metrics["train"]

    assert torch.equal(batch["input_ids"], cached_batch["input_ids"])
    completion = batch["labels"] != -100
    assert len(set(completion.sum(1).tolist())) == 3 and len(set(completion.int().argmax(1).tolist())) == 3
    torch.testing.assert_close(loss, stock_loss, rtol=RTOL, atol=ATOL)
    assert_gradients_close(grads, stock_grads, rtol=RTOL)
    for key in ("entropy", "mean_token_accuracy"):
        assert metrics[key] == pytest.approx(stock_metrics[key], rel=RTOL), key


def test_prompt_cached_forward_equals_trl_and_needs_the_prompt(tiny_llama, tmp_path):
    """Per-token outputs equal trl's fused forward; a batch whose loss is not on a suffix of
    each row takes trl's forward; and the completions scored without their prompts differ far
    beyond the tolerance, so a path that dropped the prompt's cache would fail."""
    from dpbench.testing import log_probs_without_prompts
    from dpbench.toolkit import prompt_cached_forward

    trainer = _trainer(tiny_llama, tmp_path, stock=True)
    batch = trainer.data_collator(list(trainer.train_dataset))
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    model = trainer.model
    stock = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
    cached = prompt_cached_forward(model, ids, mask, labels, use_cache=False)
    for key in ("log_probs", "entropy"):  # what SFTTrainer's fused head computes, beside is_top1
        torch.testing.assert_close(cached[key], stock[key], rtol=RTOL, atol=ATOL, msg=key)
    assert torch.equal(cached["is_top1"], stock["is_top1"])

    holes = labels.clone()
    holes[0, int((labels[0] != -100).int().argmax()) + 1] = -100  # a gap inside the first completion
    fallback = prompt_cached_forward(model, ids, mask, holes)
    assert torch.equal(fallback["log_probs"],
                       model(input_ids=ids, attention_mask=mask, labels=holes, fused_lm_head=True)["log_probs"])

    alone = log_probs_without_prompts(model, ids, mask, labels)
    full = stock["log_probs"].sum(1).detach()
    assert ((alone - full).abs() > 10 * (ATOL + RTOL * full.abs())).all()


def _forward_calls(trainer) -> set[tuple[bool, int]]:
    """What ``trainer.train()`` runs through the model: (through the fused LM head, input width)
    of every call."""
    base = trainer.model.get_base_model()
    calls, forward = set(), base.forward

    def recording(*args, fused_lm_head=False, **kwargs):
        calls.add((fused_lm_head, kwargs["input_ids"].size(1)))
        return forward(*args, fused_lm_head=fused_lm_head, **kwargs)

    base.forward = recording
    trainer.train()
    return calls


def test_training_takes_the_prompt_cached_path(tiny_llama, tmp_path):
    """In ``train()`` (where the Trainer switches on what its config asks for) each step runs the
    prompts but their last tokens, then, through the LM head, the completions only, each led by
    its prompt's last token."""
    trainer = _trainer(tiny_llama, tmp_path, stock=False)
    labels = trainer.data_collator(list(trainer.train_dataset))["labels"]
    completion = labels != -100
    prompt, longest = int(completion.int().argmax(1).max()) - 1, int(completion.sum(1).max()) + 1
    assert _forward_calls(trainer) == {(False, prompt), (True, longest)}


def test_with_activation_checkpointing_it_warns_and_takes_trls_forward(tiny_llama, tmp_path):
    """Activation checkpointing keeps no KV cache: the trainer says so, and each step takes trl's
    forward on the whole batch, without a prompt pass thrown away."""
    with pytest.warns(UserWarning, match="activation checkpointing keeps no KV cache"):
        trainer = _trainer(tiny_llama, tmp_path, stock=False, checkpointing=True)
    width = trainer.data_collator(list(trainer.train_dataset))["input_ids"].size(1)
    assert _forward_calls(trainer) == {(True, width)}
