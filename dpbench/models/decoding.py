"""dpbench's decode loop for Llama-family models: what ``model.generate`` computes, at a
fraction of its cost on a CPU.

At 135M parameters a decode step is mostly overhead and memory traffic, not matrix work:
transformers' generate pads prompts to the longest, builds masks and positions, grows every
layer's KV cache by concatenation, copies a prompt's cache into each of its samples and runs
its logits processors each step. This loop prefills each *distinct* prompt once, in packs of
~2k tokens (projections packed end to end without padding, causal attention within each
prompt), keeps that prompt cache once, in the model's dtype, for all of the prompt's samples
(each step reads a prompt's keys once for all its rows), decodes with fused QKV
projections into a preallocated per-row cache written in place, draws from the output layer
128 rows at a time, and drops finished rows from the batch. On a CPU the MLP's activation and
gating and both residual additions run inside the products (oneDNN post-ops) instead of as
passes of their own. LoRA adapters (PEFT) are folded into the
weights with PEFT's own ``get_delta_weight``, so no merged checkpoint is ever written. The
arithmetic is the model's (RMSNorm in float32, the model's rotary embedding, SiLU MLP,
softmax attention; bf16 results rounded once where the model rounds twice): greedy decoding
gives transformers' tokens, and sampled texts come from the same distribution.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
HEAD_ROWS = 128  # rows through the output layer and the sampler at once: at 256, logits leave the cache (2x slower)
PREFILL_TOKENS = 2048  # a prefill pass's tokens: its activations stay in cache (1.3x faster than 8k at once)


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

    def silu(self, x):
        """``silu(x @ weight.T)``, the activation applied to the product before it is rounded."""
        import torch

        if self.packed is None:
            return torch.nn.functional.silu(torch.nn.functional.linear(x, self.weight))
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, None, "swish", [], "")

    def times(self, x, other):
        """``(x @ weight.T) * other`` in one pass over the product."""
        return self._binary(x, other, "mul")

    def plus(self, x, other):
        """``(x @ weight.T) + other`` in one pass over the product (a residual connection)."""
        return self._binary(x, other, "add")

    def _binary(self, x, other, operation: str):
        import torch

        if self.packed is None:
            product = torch.nn.functional.linear(x, self.weight)
            return product * other if operation == "mul" else product + other
        return torch.ops.mkldnn._linear_pointwise.binary(x, other, self.packed, None, operation)


def _base(model):
    """The ``LlamaForCausalLM`` inside a ``PeftModel`` (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@dataclass(frozen=True)
class _Layer:
    attention_norm: Any
    qkv: _Linear
    out: _Linear
    mlp_norm: Any
    gate: _Linear
    up: _Linear
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
            gate=_Linear(weights["gate_proj"]), up=_Linear(weights["up_proj"]), down=_Linear(weights["down_proj"]))

    def decode(self, prompts: Sequence[Sequence[int]], *, max_new_tokens: int, eos_ids: Sequence[int],
               draw: Callable, finished: Callable | None = None) -> list[list[int]]:
        """New tokens for each prompt (EOS included when drawn; nothing after it).

        ``draw(logits)`` -> one token per row (float32 logits of up to ``HEAD_ROWS`` active rows);
        ``finished(row_indices, tokens_so_far)`` -> the rows whose text is complete (stop strings).
        """
        import torch

        if any(len(p) == 0 for p in prompts):
            raise ValueError("a prompt without tokens has no next-token distribution to decode from")
        distinct = list(dict.fromkeys(tuple(p) for p in prompts))
        prefix = self._prefill(distinct)
        device = prefix.last.device
        index_of = {p: i for i, p in enumerate(distinct)}
        source = torch.tensor([index_of[tuple(p)] for p in prompts], device=device)  # each row's prompt
        shape = (len(prompts), self.kv_heads, max_new_tokens, self.head_dim)
        keys = [torch.empty(shape, device=device) for _ in self.layers]  # the rows' own tokens, float32
        values = [torch.empty(shape, device=device) for _ in self.layers]
        positions = prefix.lengths[source]  # the next token's position
        active = torch.arange(len(prompts))  # original index of each row still decoding (on the CPU)
        groups = _Groups(source, len(distinct))
        out: list[list[int]] = [[] for _ in prompts]
        eos = torch.tensor(list(eos_ids), device=device)
        last = prefix.last[source]
        for step in range(max_new_tokens):
            tokens = torch.cat([draw(self.head(rows).float()) for rows in last.split(HEAD_ROWS)])
            done = torch.isin(tokens, eos)
            for i, token in zip(active.tolist(), tokens.tolist(), strict=True):
                out[i].append(token)
            if finished is not None:
                stopped = finished(active.tolist(), [out[i] for i in active.tolist()])
                if stopped:
                    done |= torch.isin(active, torch.tensor(sorted(stopped))).to(device)
            if step == max_new_tokens - 1 or bool(done.all()):
                break
            if done.any():
                keep = (~done).nonzero().view(-1)
                active, tokens, positions, source = active[keep.cpu()], tokens[keep], positions[keep], source[keep]
                keys, values = [k[keep] for k in keys], [v[keep] for v in values]
                live = torch.unique(source)
                if len(live) <= 3 * len(prefix) // 4:  # drop finished prompts' caches now and then
                    prefix, source = prefix.select(live), torch.searchsorted(live, source)
                groups = _Groups(source, len(prefix))
            last = self._step(tokens, positions, prefix, groups, keys, values, step)
            positions = positions + 1
        return out

    def _prefill(self, prompts: Sequence[tuple[int, ...]]) -> _Prefix:
        """Every distinct prompt through the model once, in packs of about ``PREFILL_TOKENS``
        tokens of prompts of similar lengths (less padding in the packs' attention): the
        prompts' keys, values and last normalised hidden states, in ``prompts``' order."""
        import torch

        device, dtype = self.base.model.embed_tokens.weight.device, self.base.model.embed_tokens.weight.dtype
        lengths = torch.tensor([len(p) for p in prompts], device=device)
        count, width, kv_heads, dim = len(prompts), int(lengths.max()), self.kv_heads, self.head_dim
        keys = [torch.zeros(count, kv_heads, dim, width, dtype=dtype, device=device) for _ in self.layers]
        values = [torch.zeros(count, kv_heads, width, dim, dtype=dtype, device=device) for _ in self.layers]
        order, start = sorted(range(count), key=lambda i: len(prompts[i])), 0
        last = torch.empty(count, self.base.config.hidden_size, dtype=dtype, device=device)
        for pack in _packs([prompts[i] for i in order], PREFILL_TOKENS):
            rows = torch.tensor(order[start : start + len(pack)], device=device)
            last[rows] = self._prefill_pack(pack, rows, keys, values)
            start += len(pack)
        bias = torch.zeros(count, 1, 1, width, device=device).masked_fill_(
            (torch.arange(width, device=device) >= lengths[:, None]).view(count, 1, 1, width), -math.inf)
        return _Prefix(keys, values, bias, lengths, last)

    def _prefill_pack(self, prompts: Sequence[tuple[int, ...]], rows, keys, values):
        """``prompts`` through the model (projections over their tokens packed end to end
        without padding, attention over them right-padded to the longest), their keys and values
        written into rows ``rows`` of ``keys`` ``[P, KV, D, W]`` and ``values`` ``[P, KV, W, D]``
        (one per layer); returns their last tokens' normalised hidden states."""
        import torch
        from torch.nn.functional import scaled_dot_product_attention

        device = self.base.model.embed_tokens.weight.device
        lengths = torch.tensor([len(p) for p in prompts], device=device)
        total, heads, dim = int(lengths.sum()), self.heads, self.head_dim
        starts = lengths.cumsum(0) - lengths
        prompt_of = torch.repeat_interleave(torch.arange(len(prompts), device=device), lengths)
        positions = torch.arange(total, device=device) - starts[prompt_of]
        width = int(lengths.max())
        hidden = self.base.model.embed_tokens(torch.tensor([t for p in prompts for t in p], device=device))
        cos, sin = self._rotation(hidden, positions)
        for layer, k_cache, v_cache in zip(self.layers, keys, values, strict=True):
            q, k, v = (_padded(x, prompt_of, positions, len(prompts), width).transpose(1, 2)  # [P, heads, width, D]
                       for x in self._attention_inputs(layer, hidden, cos, sin))
            k_cache[rows, ..., :width], v_cache[rows, :, :width] = k.transpose(-1, -2), v
            # right-padded and causal: no prompt token sees the padding after it
            attended = scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True).transpose(1, 2)[
                prompt_of, positions]
            hidden = self._mlp(layer, layer.out.plus(attended.reshape(total, heads * dim), hidden))
        last = hidden[starts + lengths - 1]
        return self._norm(last, self.base.model.norm.weight)

    def _step(self, tokens, positions, prefix: _Prefix, groups: _Groups, keys, values, index: int):
        """One decode step: write each layer's new key/value at ``index``, return the rows'
        normalised hidden states (the output layer's input)."""
        batch, heads, dim = len(tokens), self.heads, self.head_dim
        hidden = self.base.model.embed_tokens(tokens)
        cos, sin = self._rotation(hidden, positions)
        bias = prefix.bias[groups.source]
        for layer, prompt_k, prompt_v, k_cache, v_cache in zip(self.layers, prefix.keys, prefix.values, keys, values,
                                                               strict=True):
            q, k_cache[:, :, index], v_cache[:, :, index] = self._attention_inputs(layer, hidden, cos, sin)
            attended = _attend(q, groups, prompt_k, prompt_v, bias, k_cache[:, :, : index + 1],
                               v_cache[:, :, : index + 1])
            hidden = self._mlp(layer, layer.out.plus(attended.reshape(batch, heads * dim), hidden))
        return self._norm(hidden, self.base.model.norm.weight)

    def _rotation(self, hidden, positions):
        """The rotary embedding's cosines and sines ``[N, 1, D]`` at ``positions``, the sines'
        first half negated (``rotate_half``'s sign, so ``_rotate`` needs no negation)."""
        import torch

        cos, sin = self.base.model.rotary_emb(hidden, positions.view(1, -1))
        half = self.head_dim // 2
        sin = torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)
        return cos.view(len(positions), 1, self.head_dim), sin.view(len(positions), 1, self.head_dim)

    def _attention_inputs(self, layer: _Layer, hidden, cos, sin):
        """One layer's queries ``[N, H, D]``, keys and values ``[N, KV, D]`` for ``hidden``
        ``[N, hidden]`` (queries and keys rotated together)."""
        heads, kv_heads, dim = self.heads, self.kv_heads, self.head_dim
        qkv = layer.qkv(self._norm(hidden, layer.attention_norm))
        qk = _rotate(qkv[:, : (heads + kv_heads) * dim].view(len(hidden), heads + kv_heads, dim), cos, sin)
        return qk[:, :heads], qk[:, heads:], qkv[:, (heads + kv_heads) * dim :].view(len(hidden), kv_heads, dim)

    def _mlp(self, layer: _Layer, hidden):
        """``hidden`` plus the layer's SiLU MLP of it (activation, gating and residual fused into
        the products)."""
        normed = self._norm(hidden, layer.mlp_norm)
        return layer.down.plus(layer.up.times(normed, layer.gate.silu(normed)), hidden)

    def _norm(self, hidden, weight):
        """Llama's RMSNorm, as the model computes it (statistics in float32, normalised in
        float32, rounded to the model's dtype, then scaled), in fewer passes over ``hidden``."""
        import torch
        from torch.linalg import vector_norm

        mean_square = vector_norm(hidden, dim=-1, keepdim=True, dtype=torch.float32).square_() / hidden.shape[-1]
        return weight * (hidden * torch.rsqrt(mean_square + self.eps)).to(hidden.dtype)


@dataclass(frozen=True)
class _Prefix:
    """The distinct prompts' part of the KV cache, shared by every row sampled from a prompt:
    per layer keys ``[P, KV, D, W]`` (transposed, as attention multiplies by them) and values
    ``[P, KV, W, D]``, contiguous, in the model's dtype, each prompt
    from position 0, right-padded to the longest; ``bias`` ``[P, 1, 1, W]`` (-inf at padding),
    ``lengths`` and the last tokens' normalised hidden states ``last`` ``[P, hidden]``."""

    keys: list
    values: list
    bias: Any
    lengths: Any
    last: Any

    def __len__(self) -> int:
        return len(self.lengths)

    def select(self, prompts) -> _Prefix:
        """Only ``prompts`` (indices), in that order."""
        return _Prefix([k[prompts] for k in self.keys], [v[prompts] for v in self.values], self.bias[prompts],
                       self.lengths[prompts], self.last[prompts])


class _Groups:
    """The active rows laid out by prompt: ``slot[r]`` is row ``r``'s cell in a ``[P, S]`` grid
    (``S``: the most rows any prompt has), so each prompt's cached keys are read once for all
    of its rows."""

    def __init__(self, source, prompts: int):
        import torch

        self.source, self.prompts = source, prompts
        counts = torch.bincount(source, minlength=prompts)
        self.width = max(int(counts.max()), 1)
        order = torch.argsort(source, stable=True)
        rank = torch.empty_like(source)
        rank[order] = torch.arange(len(source), device=source.device) - (counts.cumsum(0) - counts)[source[order]]
        self.slot = source * self.width + rank
        # rows already in grid order (each prompt's rows together, as many for each): no scatter
        self.in_order = len(source) == prompts * self.width and bool(
            (self.slot == torch.arange(len(source), device=source.device)).all())

    def to_grid(self, rows):
        """``[B, KV, G, X]`` per row -> ``[P, KV, S * G, X]`` per prompt (zeros in empty cells)."""
        batch, kv_heads, group, size = rows.shape
        grid = rows
        if not self.in_order:
            grid = rows.new_zeros(self.prompts * self.width, kv_heads, group, size)
            grid[self.slot] = rows
        return grid.view(self.prompts, self.width, kv_heads, group, size).transpose(1, 2).reshape(
            self.prompts, kv_heads, self.width * group, size)

    def to_rows(self, grid, group: int):
        """The inverse of ``to_grid``."""
        prompts, kv_heads, _, size = grid.shape
        cells = grid.view(prompts, kv_heads, self.width, group, size).transpose(1, 2)
        cells = cells.reshape(prompts * self.width, kv_heads, group, size)
        return cells if self.in_order else cells[self.slot]


def _attend(query, groups: _Groups, prompt_keys, prompt_values, prompt_bias, keys, values):
    """Attention of one new query per row over its prompt's cached keys and its own: queries
    ``[B, H, D]``, the prompts' keys ``[P, KV, D, W]`` and values ``[P, KV, W, D]`` (with
    ``prompt_bias`` ``[B, 1, 1, W]``, -inf at padding), the rows' ``[B, KV, T, D]`` in float32;
    query head ``h`` reads key/value head ``h // (H / KV)``, as Llama's ``repeat_kv``. The prompt
    part's products run in its caches' dtype (the model's: half the bytes in bf16), the rows'
    own in float32 (bf16 products would copy their sliced caches), one softmax over both in
    float32 (as the model's eager attention), the result in the query's dtype. Small batched
    matrix products: at one query per row this is several times faster on a CPU than
    ``scaled_dot_product_attention`` with a mask, and the prompt part reads each prompt's keys
    once for all of its rows."""
    import torch

    batch, heads, dim = query.shape
    kv_heads, width = prompt_keys.shape[1], prompt_keys.shape[3]
    group, scale = heads // kv_heads, dim**-0.5
    grouped = query.reshape(batch, kv_heads, group, dim) * scale  # scaled before the products: fewer passes
    on_prompt = groups.to_rows(torch.matmul(groups.to_grid(grouped.to(prompt_keys.dtype)), prompt_keys), group)
    on_own = torch.matmul(grouped.float(), keys.transpose(-1, -2))
    weights = torch.softmax(torch.cat([on_prompt + prompt_bias, on_own], dim=-1), dim=-1)  # float32 (the bias's)
    from_prompt = groups.to_rows(torch.matmul(groups.to_grid(weights[..., :width].to(prompt_values.dtype)),
                                              prompt_values), group)
    attended = from_prompt + torch.matmul(weights[..., width:], values)  # float32
    return attended.reshape(batch, heads, dim).to(query.dtype)


def _padded(tokens, prompt_of, positions, prompts: int, width: int):
    """Packed ``[T, ...]`` -> ``[prompts, width, ...]``: each prompt's tokens from position 0, zeros after."""
    padded = tokens.new_zeros(prompts, width, *tokens.shape[1:])
    padded[prompt_of, positions] = tokens
    return padded


def _packs(prompts: Sequence[tuple[int, ...]], tokens: int) -> list[Sequence[tuple[int, ...]]]:
    """Consecutive runs of ``prompts`` of at most ``tokens`` tokens each (a longer prompt alone)."""
    packs, start, size = [], 0, 0
    for i, prompt in enumerate(prompts):
        if i > start and size + len(prompt) > tokens:
            packs.append(prompts[start:i])
            start, size = i, 0
        size += len(prompt)
    return [*packs, prompts[start:]]


def left_padded(sequences: Sequence[Sequence[int]], pad_id: int, *, device):
    """Token ids padded on the left to the longest sequence, and the attention mask (0 at padding)."""
    import torch

    width = max(len(s) for s in sequences)
    ids = torch.tensor([[pad_id] * (width - len(s)) + list(s) for s in sequences], device=device)
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in sequences], device=device)
    return ids, mask


def _rotate(x, cos, sin):
    """Rotary position embedding (Llama's ``rotate_half`` convention; ``sin`` from ``_rotation``,
    its first half negated)."""
    import torch

    half = x.shape[-1] // 2
    return torch.addcmul(x * cos, torch.cat((x[..., half:], x[..., :half]), dim=-1), sin)


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
