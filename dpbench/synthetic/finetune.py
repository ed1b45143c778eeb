"""LoRA adapters on the shared generator and the completions they are trained on: what POPri's
DPO and PE+SFT's fine-tuning share."""

from __future__ import annotations

import functools
import warnings

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def lora_config(model, *, r: int, alpha: int):
    """peft's ``LoraConfig`` of rank ``r`` and scale ``alpha`` on whichever attention and MLP
    projections ``model`` has, dropout 0 (so a step draws nothing at random)."""
    from peft import LoraConfig

    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, bias="none",
                      target_modules=[t for t in LORA_TARGETS if t in present], task_type="CAUSAL_LM")


def trl_completion(text: str, prompt_style: str):
    """``text`` as trl takes a completion after a prompt of ``prompt_style``: an assistant
    message after a chat prompt, the text after a space after a plain one."""
    if prompt_style == "chat":
        return [{"role": "assistant", "content": text}]
    return " " + text


def prompt_cached_forward(model, input_ids, attention_mask=None, labels=None, *, copies: int = 1, **kwargs):
    """trl's fused forward (``model(..., labels=labels, fused_lm_head=True)``) on a batch of
    prompt + completion rows (right-padded, the loss on the completion only) with each prompt's
    first ``p - 1`` tokens run once into a KV cache (gradients flow through it) and only the
    completions, each led by its prompt's last token, run on top of it and reach the LM head. On
    a CPU trl's own forward scores every position, prompt included (it keeps only labelled ones
    on Triton devices). With ``copies`` > 1 the batch is that many blocks of rows on the same
    prompts (DPO's ``[chosen; rejected]``) and each prompt runs once for all of them. The
    per-token outputs come back in the batch's own layout, so trl's loss and metrics apply
    unchanged. Anything else takes trl's forward: a batch without that shape (prompts differ
    between blocks, a prompt of one token, a completion not at the end), one without an
    attention mask (packed) or with inputs beyond ids, mask and labels, or a model training with
    activation checkpointing (which keeps no cache)."""
    import torch

    def trl_forward():
        return model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, fused_lm_head=True, **kwargs)

    if (attention_mask is None or labels is None or set(kwargs) - {"use_cache"}
            or (model.training and getattr(model, "is_activation_checkpointing", False))):
        return trl_forward()
    n, width = input_ids.size(0) // copies, input_ids.size(1)
    pos = torch.arange(width, device=input_ids.device)
    completion, lengths = labels != -100, attention_mask.sum(1)
    starts = torch.where(completion.any(1), completion.int().argmax(1), lengths)  # prompt lengths
    prompt_mask = pos < starts[:n, None]
    blocks = range(1, copies)
    if not (n and input_ids.size(0) == n * copies and bool((starts > 1).all())
            and all(torch.equal(starts[:n], starts[b * n:(b + 1) * n]) for b in blocks)
            and torch.equal(completion, (pos >= starts[:, None]) & (pos < lengths[:, None]))
            and torch.equal(attention_mask.bool(), pos < lengths[:, None])
            and all(bool(((input_ids[:n] == input_ids[b * n:(b + 1) * n]) | ~prompt_mask).all()) for b in blocks)):
        return trl_forward()

    cached = int(starts.max()) - 1  # prompt tokens before the last one, right-padded
    cache_mask = (pos[:cached] < starts[:n, None] - 1).long()
    # through the model itself (its autocast wrapper), keeping one position's logits only
    cache = model(input_ids=input_ids[:n, :cached], attention_mask=cache_mask, use_cache=True, logits_to_keep=1).cache
    if cache is None:  # a model that keeps none: the completions alone would lose their prompts
        return trl_forward()
    if copies > 1:
        cache.batch_select_indices(torch.arange(n, device=input_ids.device).repeat(copies))
    steps = torch.arange(int((lengths - starts).max()) + 1, device=input_ids.device)
    index = starts[:, None] - 1 + steps  # the prompt's last token, then the completion
    valid = steps < (lengths - starts + 1)[:, None]
    gathered = index.clamp(max=width - 1)
    out = model(input_ids=input_ids.gather(1, gathered), position_ids=index,
                attention_mask=torch.cat([cache_mask.repeat(copies, 1), valid.long()], 1), cache=cache,
                labels=labels.gather(1, gathered).masked_fill(~valid, -100), fused_lm_head=True, **kwargs)

    def place(value):  # (rows, completion) -> (rows, width - 1): token t's output sits at t - 1
        if value is None or value.dim() != 2:
            return value
        full = value.new_zeros(copies * n, width - 1 + value.size(1))
        return full.scatter(1, index[:, :-1], value)[:, :width - 1]

    return type(out)(**{key: place(value) for key, value in out.items()})


class _PromptCached:
    """A model whose fused-head calls go through ``prompt_cached_forward``."""

    def __init__(self, model, copies: int):
        self.model, self.copies = model, copies

    def __call__(self, *, fused_lm_head=False, **kwargs):
        if fused_lm_head:
            return prompt_cached_forward(self.model, copies=self.copies, **kwargs)
        return self.model(**kwargs)


def prompt_cached(model, *, copies: int = 1):
    """``model`` for a trainer's ``compute_loss``: its fused-head calls through ``prompt_cached_forward``."""
    return _PromptCached(model, copies)


@functools.cache
def prompt_cached_sft_trainer():
    """trl's ``SFTTrainer`` with the forward of ``prompt_cached_forward``: the same loss and
    gradients, with the prompts kept out of the LM head (on a CPU, for PE+SFT's ~240-token
    prompts and ≤ 64-token completions, 1.3x faster a step: benchmarks/sft.py). Activation
    checkpointing (trl's default) keeps no cache, so it warns and every step takes trl's forward."""
    from trl import SFTTrainer

    class PromptCachedSFTTrainer(SFTTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if self.args.activation_checkpointing:
                warnings.warn("activation checkpointing keeps no KV cache: every step takes trl's own forward "
                              "(set activation_checkpointing=False)", stacklevel=2)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            return super().compute_loss(prompt_cached(model), inputs, return_outputs, num_items_in_batch)

    return PromptCachedSFTTrainer
