"""The mechanics of the next-token evaluator: tokenizer, encoding, model, training, scoring.

Kept apart from the plugin class so federated methods can reuse them (train the evaluator's
model with the same tokenization and batching) and tests can check each piece.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

BOS_EOS = "<|endoftext|>"
PAD = "<|pad|>"
IGNORE = -100


# Tokenizer -------------------------------------------------------------------------------------

def train_tokenizer(texts: Sequence[str], vocab_size: int):
    """A byte-level BPE tokenizer (GPT-2 style) trained on ``texts``.

    ``<|endoftext|>`` is both BOS and EOS (as in GPT-2 and the paper's evaluator); ``<|pad|>``
    pads. Byte-level, so any text encodes without unknown tokens.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS_EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS_EOS, eos_token=BOS_EOS, pad_token=PAD)


def encode_texts(tokenizer, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids of ``BOS + text + EOS`` for each text, cut to ``max_length`` tokens.

    The text is tokenized once, from the raw string — the same ids as
    ``tokenizer(bos + text + eos, max_length=max_length, truncation=True)``. (The paper's
    released evaluator tokenized, then re-tokenized the token strings as "words", which
    inserts spurious tokens and inflates accuracy; see docs/evaluator.md.) A text longer than the
    window loses its end, EOS included, as with the paper's call.
    """
    if not texts:
        return []
    body = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    return [([bos] + list(ids) + [eos])[:max_length] for ids in body]


@dataclass
class Batch:
    input_ids: object  # torch.LongTensor (B, T)
    attention_mask: object
    labels: object  # input ids with padding replaced by -100


def collate(rows: Sequence[Sequence[int]], pad_id: int, device: str = "cpu") -> Batch:
    """Right-pad ``rows`` to the longest; padded label positions are -100 (never scored)."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    labels = ids.masked_fill(mask == 0, IGNORE)
    return Batch(ids.to(device), mask.to(device), labels.to(device))


# Model -------------------------------------------------------------------------------------------

def build_model(tokenizer, *, n_layer: int, n_embd: int, n_head: int, max_length: int, seed: int):
    """A randomly initialised GPT-2-shape causal LM sized to ``tokenizer``."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=max_length,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GPT2LMHeadModel(config)


# Training ----------------------------------------------------------------------------------------

def batch_order(n: int, steps: int, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Index batches for ``steps`` steps: shuffled passes over ``n`` items, one after the other.

    Every step has exactly ``batch_size`` items whatever ``n`` is (small sets repeat), which is
    what makes the training budget the same for every method.
    """
    buffer = np.empty(0, dtype=np.int64)
    for _ in range(steps):
        while len(buffer) < batch_size:
            buffer = np.concatenate([buffer, rng.permutation(n)])
        yield buffer[:batch_size]
        buffer = buffer[batch_size:]


def lr_at(step: int, steps: int, lr: float, schedule: str, warmup: int) -> float:
    """Learning rate before optimizer step ``step`` (0-based)."""
    if schedule == "constant":
        return lr
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def train(
    model,
    encoded: Sequence[Sequence[int]],
    *,
    pad_id: int,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    schedule: str = "constant",
    warmup: int = 0,
    weight_decay: float = 0.01,
    bf16: bool = False,
    device: str = "cpu",
    on_step: Callable[[int, float], None] | None = None,
    steps_iter: Callable[[Iterator[int]], Iterator[int]] | None = None,
) -> None:
    """``steps`` AdamW steps on ``encoded`` (mean token cross-entropy, padding masked).

    Deterministic for a fixed ``seed`` on CPU: batch order from a numpy generator, dropout
    from a torch generator seeded inside ``fork_rng`` (the caller's RNG state is untouched).
    ``on_step(step, loss)`` runs after each step (1-based), e.g. to evaluate and keep the best
    checkpoint; ``steps_iter`` wraps the step loop (progress bars).
    """
    import torch

    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    order = batch_order(len(encoded), steps, batch_size, np.random.default_rng(seed))
    loop: Iterator[int] = iter(range(steps))
    if steps_iter is not None:
        loop = steps_iter(loop)
    with torch.random.fork_rng(devices=[device] if torch.device(device).type == "cuda" else []):
        torch.manual_seed(seed)
        for step in loop:
            idx = next(order)
            batch = collate([encoded[i] for i in idx], pad_id, device)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, steps, lr, schedule, warmup)
            with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
                loss = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            if on_step is not None:
                model.eval()
                on_step(step + 1, float(loss.detach()))
                model.train()
    model.eval()


# Scoring -----------------------------------------------------------------------------------------

@dataclass
class Counts:
    """Sums over target tokens; metrics are their ratios (token micro-averages)."""

    correct: int = 0
    correct_top5: int = 0
    nll: float = 0.0
    tokens: int = 0

    def add(self, other: Counts) -> None:
        self.correct += other.correct
        self.correct_top5 += other.correct_top5
        self.nll += other.nll
        self.tokens += other.tokens

    def metrics(self) -> dict[str, float]:
        if self.tokens == 0:
            return {"accuracy": float("nan"), "top5_accuracy": float("nan"), "cross_entropy": float("nan")}
        return {
            "accuracy": self.correct / self.tokens,
            "top5_accuracy": self.correct_top5 / self.tokens,
            "cross_entropy": self.nll / self.tokens,
        }


def count_predictions(logits, labels) -> Counts:
    """Next-token counts: position t predicts label t+1; positions whose target is -100 are
    skipped. Every target after BOS counts, EOS included. Only the kept positions' logits are
    converted to float32 (padding is up to half of a batch)."""
    import torch

    target = labels[:, 1:]
    keep = target != IGNORE
    if not bool(keep.any()):
        return Counts()
    pred, target = logits[:, :-1, :][keep].float(), target[keep]
    top5 = pred.topk(min(5, pred.shape[-1]), dim=-1).indices
    nll = torch.nn.functional.cross_entropy(pred, target, reduction="sum")
    return Counts(
        correct=int((top5[:, 0] == target).sum()),
        correct_top5=int((top5 == target[:, None]).any(-1).sum()),
        nll=float(nll),
        tokens=int(keep.sum()),
    )


def score(model, encoded: Sequence[Sequence[int]], *, pad_id: int, batch_size: int = 64,
          bf16: bool = False, device: str = "cpu") -> dict[str, float]:
    """Top-1 / top-5 next-token accuracy and mean cross-entropy (nats) over all target tokens."""
    import torch

    model.to(device).eval()
    total = Counts()
    with torch.inference_mode():
        for start in range(0, len(encoded), batch_size):
            batch = collate(encoded[start : start + batch_size], pad_id, device)
            with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
            total.add(count_predictions(logits, batch.labels))
    return total.metrics() | {"tokens": total.tokens}
