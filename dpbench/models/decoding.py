"""dpbench's decode loop for Llama-family models: what ``model.generate`` computes, at a
fraction of its per-step cost on a CPU.

At 135M parameters a decode step is mostly overhead, not matrix work: transformers' generate
builds masks and positions, grows every layer's KV cache by concatenation and runs its
logits processors each step. This loop prefills each *distinct* prompt once with the model's
own forward (samples of one prompt share its KV cache), then decodes with fused QKV and
gate/up projections, a preallocated KV cache written in place, and drops finished rows
from the batch. LoRA adapters (PEFT) are folded into the fused weights with PEFT's own
``get_delta_weight``, so no merged checkpoint is ever written. The arithmetic is the model's
(RMSNorm in float32, the model's rotary embedding, SiLU MLP, SDPA): greedy decoding gives
transformers' tokens, and sampled texts come from the same distribution.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def unsupported(model) -> str | None:
    """Why the loop cannot decode ``model`` (``None`` when it can)."""
    from peft.tuners.lora import LoraLayer

    base = _base(model)
    config = getattr(base, "config", None)
    if getattr(config, "model_type", None) != "llama":
        return f"model type {getattr(config, 'model_type', None)!r} is not llama"
    if config.attention_bias or config.mlp_bias or config.hidden_act != "silu" or config.pretraining_tp != 1:
        return "biases, a non-SiLU activation or tensor-parallel slices"
    for module in base.modules():
        if isinstance(module, LoraLayer):
            active = [a for a in module.active_adapters if a in module.lora_A]
            if any(module.use_dora.get(a) for a in active) or any(a in module.lora_embedding_A for a in active):
                return "DoRA or embedding LoRA adapters"
    return None


class _Linear:
    """``x @ weight.T`` for a weight fixed for the whole decode. On a CPU the weight is
    reordered once into oneDNN's blocked layout (what ``torch.compile`` does when it freezes
    weights): a plain bf16 ``linear`` reorders it on every call, which at a decode step's few
    rows costs more than the product itself, and at 32 rows oneDNN's float32 product on the
    blocked weight runs ~2x faster than ``linear``'s (benchmarks/results/generation_loop-*.json)."""

    def __init__(self, weight):
        import torch

        self.weight, self.packed = weight, None
        if weight.device.type == "cpu" and weight.dtype in (torch.bfloat16, torch.float32):
            try:
                self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, 64)
            except (AttributeError, RuntimeError):  # a torch built without oneDNN
                pass

    def __call__(self, x):
        import torch

        if self.packed is None:
            return torch.nn.functional.linear(x, self.weight)
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, None, "none", [], "")


def _base(model):
    """The ``LlamaForCausalLM`` inside a ``PeftModel`` (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@dataclass(frozen=True)
class _Layer:
    attention_norm: Any
    qkv: _Linear
    out: _Linear
    mlp_norm: Any
    gate_up: _Linear
    down: _Linear


class LlamaDecoder:
    """Decodes batches of prompts with ``model`` (a ``LlamaForCausalLM``, or a ``PeftModel``
    whose active LoRA adapter is applied unless adapters are disabled when this is built)."""

    def __init__(self, model):
        reason = unsupported(model)
        if reason:
            raise ValueError(f"dpbench's decode loop cannot run this model: {reason}")
        self.model = model
        self.base = _base(model)
        config = self.base.config
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.eps = config.rms_norm_eps
        self.layers = [self._fuse(layer) for layer in self.base.model.layers]
        self.head = _Linear(_weight(self.base.lm_head))

    def _fuse(self, layer) -> _Layer:
        import torch

        weights = {name: _weight(getattr(layer.self_attn if name[0] in "qkvo" else layer.mlp, name))
                   for name in PROJECTIONS}
        return _Layer(
            attention_norm=layer.input_layernorm.weight,
            qkv=_Linear(torch.cat([weights["q_proj"], weights["k_proj"], weights["v_proj"]])),
            out=_Linear(weights["o_proj"]), mlp_norm=layer.post_attention_layernorm.weight,
            gate_up=_Linear(torch.cat([weights["gate_proj"], weights["up_proj"]])), down=_Linear(weights["down_proj"]))

    def decode(self, prompts: Sequence[Sequence[int]], *, max_new_tokens: int, pad_id: int,
               eos_ids: Sequence[int], draw: Callable, finished: Callable | None = None) -> list[list[int]]:
        """New tokens for each prompt (EOS included when drawn; nothing after it).

        ``draw(logits)`` -> one token per row (float32 logits of the active rows);
        ``finished(row_indices, tokens_so_far)`` -> the rows whose text is complete (stop strings).
        """
        import torch

        distinct = list(dict.fromkeys(tuple(p) for p in prompts))
        cache, mask, logits = self._prefill(distinct, pad_id)
        row_of = {p: i for i, p in enumerate(distinct)}
        rows = torch.tensor([row_of[tuple(p)] for p in prompts])
        batch, width = len(prompts), mask.shape[1]
        total, device = width + max_new_tokens, logits.device
        keys, values = [], []  # float32, as attention kernels accumulate: one rounding fewer than bf16
        for layer in cache.layers:
            shape = (batch, self.kv_heads, total, self.head_dim)
            k, v = torch.empty(shape, device=device), torch.empty(shape, device=device)
            k[:, :, :width], v[:, :, :width] = layer.keys[rows], layer.values[rows]
            keys.append(k)
            values.append(v)
        visible = torch.zeros(batch, 1, 1, total, dtype=torch.bool, device=device)
        visible[:, 0, 0, :width] = mask[rows].bool()
        positions = mask[rows].sum(-1)  # each row's prompt length: the next token's position
        active = torch.arange(batch)  # original index of each row still decoding
        out: list[list[int]] = [[] for _ in prompts]
        eos = torch.tensor(list(eos_ids), device=device)
        logits = logits[rows]
        for step in range(max_new_tokens):
            tokens = draw(logits)
            done = torch.isin(tokens, eos)
            for i, token in zip(active.tolist(), tokens.tolist(), strict=True):
                out[i].append(token)
            if finished is not None:
                stopped = finished(active.tolist(), [out[i] for i in active.tolist()])
                if stopped:
                    done |= torch.isin(active, torch.tensor(sorted(stopped)))
            if step == max_new_tokens - 1 or bool(done.all()):
                break
            if done.any():
                keep = (~done).nonzero().view(-1)
                active, tokens, positions, visible = active[keep], tokens[keep], positions[keep], visible[keep]
                keys, values = [k[keep] for k in keys], [v[keep] for v in values]
            logits = self._step(tokens, positions, keys, values, width + step, visible)
            positions = positions + 1
        return out

    def _prefill(self, prompts: Sequence[tuple[int, ...]], pad_id: int):
        """The model's own forward over the left-padded distinct prompts: its KV cache, the
        prompts' attention mask and each prompt's next-token logits."""
        from transformers import DynamicCache

        ids, mask = left_padded(prompts, pad_id, device=next(self.base.parameters()).device)
        cache = DynamicCache(config=self.base.config)
        logits = self.model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp_min(0),
                            cache=cache, use_cache=True, logits_to_keep=1).logits[:, -1].float()
        return cache, mask, logits

    def _step(self, tokens, positions, keys, values, index: int, visible):
        """One decode step: write each layer's new key/value at ``index``, return float32 logits."""
        import torch
        from torch.nn.functional import silu

        batch, heads, kv_heads, dim = len(tokens), self.heads, self.kv_heads, self.head_dim
        visible[..., index] = True
        bias = torch.zeros(batch, 1, 1, index + 1, device=visible.device).masked_fill_(
            ~visible[..., : index + 1], -math.inf)
        hidden = self.base.model.embed_tokens(tokens)
        cos, sin = self.base.model.rotary_emb(hidden, positions.view(batch, 1))
        for layer, k_cache, v_cache in zip(self.layers, keys, values, strict=True):
            qkv = layer.qkv(self._norm(hidden, layer.attention_norm))
            q = qkv[:, : heads * dim].view(batch, heads, dim)
            k_cache[:, :, index] = _rotate(qkv[:, heads * dim : (heads + kv_heads) * dim].view(batch, kv_heads, dim),
                                           cos, sin)
            v_cache[:, :, index] = qkv[:, (heads + kv_heads) * dim :].view(batch, kv_heads, dim)
            attended = _attend(_rotate(q, cos, sin), k_cache[:, :, : index + 1], v_cache[:, :, : index + 1], bias)
            hidden = hidden + layer.out(attended.reshape(batch, heads * dim))
            gate, up = layer.gate_up(self._norm(hidden, layer.mlp_norm)).chunk(2, dim=-1)
            hidden = hidden + layer.down(silu(gate) * up)
        return self.head(self._norm(hidden, self.base.model.norm.weight)).float()

    def _norm(self, hidden, weight):
        """Llama's RMSNorm (statistics in float32, as the model computes them)."""
        import torch

        x = hidden.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return weight * x.to(hidden.dtype)


def _attend(query, keys, values, bias):
    """Attention of one new query per row over the float32 cache: queries ``[B, H, D]``, keys
    and values ``[B, KV, T, D]`` (query head ``h`` reads key/value head ``h // (H / KV)``, as
    Llama's ``repeat_kv``), ``bias`` ``[B, 1, 1, T]`` (-inf at padding); all in float32, the
    result in the query's dtype. Two small batched matrix products: at one query per row this
    is several times faster on a CPU than ``scaled_dot_product_attention`` with a mask."""
    import torch

    batch, heads, dim = query.shape
    kv_heads = keys.shape[1]
    grouped = query.float().reshape(batch, kv_heads, heads // kv_heads, dim)
    weights = torch.softmax(torch.matmul(grouped, keys.transpose(-1, -2)) * dim**-0.5 + bias, dim=-1)
    return torch.matmul(weights, values).reshape(batch, heads, dim).to(query.dtype)


def left_padded(sequences: Sequence[Sequence[int]], pad_id: int, *, device):
    """Token ids padded on the left to the longest sequence, and the attention mask (0 at padding)."""
    import torch

    width = max(len(s) for s in sequences)
    ids = torch.tensor([[pad_id] * (width - len(s)) + list(s) for s in sequences], device=device)
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in sequences], device=device)
    return ids, mask


def _rotate(x, cos, sin):
    """Rotary position embedding (Llama's ``rotate_half`` convention)."""
    import torch

    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


def _weight(module):
    """A projection's weight with its active LoRA adapters folded in (in float32, then cast back)."""
    from peft.tuners.lora import LoraLayer

    if not isinstance(module, LoraLayer):
        return module.weight
    weight = module.get_base_layer().weight
    active = [] if module.disable_adapters else [a for a in module.active_adapters if a in module.lora_A]
    if not active:
        return weight
    merged = weight.float()
    for adapter in active:
        merged = merged + module.get_delta_weight(adapter).float()
    return merged.to(weight.dtype)
