"""Stand-ins for tests of dpbench and its method plugins: a tiny random-init chat Llama (a
generator/policy in seconds), a tiny GPT-2 downstream model and a hashing embedder (no model at
all). Installing dpbench registers ``dpbench.testing.pytest_plugin``, whose fixtures hand these
(and the toy plugin, ``dpbench.testing.toy``) to any test; ``dpbench.testing.conformance``
checks a method against the plugin contract; ``randomize_lora``, ``loss_and_gradients`` and
``assert_gradients_close`` compare a trl trainer's loss and LoRA gradients with stock trl's."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}<|endoftext|>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|endoftext|>assistant:{% endif %}"
)
PROMPT_WORDS = ("Here are some example paragraphs: Write one new paragraph like these. Reply with the paragraph only.",
                "Please rephrase the following paragraph in a casual way: Reply with the rephrased paragraph only.")
TOY_CORPUS = tuple(" ".join(f"w{(i * 7 + j) % 40}" for j in range(12)) for i in range(200))
"""texts in the toy plugin's words ``w0..w39``, for the tokenizers of the tiny models"""


def tiny_chat_llama(folder: Path, *, hidden_size: int = 32, extra_texts: Sequence[str] = PROMPT_WORDS) -> Path:
    """Save a 2-layer random-init Llama with a chat template and a 400-token BPE vocabulary
    (toy words ``w0..w39`` plus ``extra_texts``) to ``folder``; returns ``folder``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from dpbench.evaluation.lm import train_tokenizer

    tok = train_tokenizer([*TOY_CORPUS, *extra_texts], 400)
    tok.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=512, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return Path(folder)


def tiny_downstream_gpt2(folder: Path, texts: Sequence[str] = TOY_CORPUS) -> Path:
    """Save a 1-layer random-init GPT-2 (about 23k parameters, 24 positions) and a 300-token
    byte-level BPE tokenizer trained on ``texts`` to ``folder``: the shape of the ``next_token``
    evaluator's initial model, for methods that train the downstream model themselves; returns
    ``folder``."""
    from dpbench.evaluation.lm import build_model, train_tokenizer

    tokenizer = train_tokenizer(texts, 300)
    build_model(tokenizer, n_layer=1, n_embd=32, n_head=2, max_length=24, seed=0).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Path(folder)


class HashingEmbedder:
    """Bag of hashed words, unit norm: deterministic, instant, no model. Has the interface of
    ``dpbench.models.embedding.Embedder`` (monkeypatch it in)."""

    dimension = 32

    def __init__(self, model="hashing", *, batch_size=64, device="cpu"):
        self.name = model

    def identity(self):
        return {"model": "hashing-test-embedder"}

    def encode(self, texts):
        import numpy as np

        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in zip(out, texts, strict=True):
            for word in text.split():
                row[int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dimension] += 1
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return np.divide(out, norms, out=np.zeros_like(out), where=norms > 0)


def randomize_lora(model, seed: int = 1) -> None:
    """Every LoRA weight of the PEFT ``model`` drawn from N(0, 1), seeded: a trained-looking
    adapter (a fresh one, LoRA B = 0, equals its base model, so DPO's policy would be its
    reference and no gradient would reach the other LoRA weights)."""
    import torch
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    generator = torch.Generator().manual_seed(seed)
    state = get_peft_model_state_dict(model)
    set_peft_model_state_dict(model, {k: torch.randn(v.shape, generator=generator) for k, v in sorted(state.items())})


def loss_and_gradients(trainer):
    """A trl trainer's loss on its whole training set as one batch, in training mode, and the
    gradients of its trainable parameters: ``(loss, {name: gradient}, batch)``."""
    batch = trainer.data_collator(list(trainer.train_dataset))
    trainer.model.train()
    with trainer.compute_loss_context_manager():
        loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.requires_grad}, batch


def assert_gradients_close(grads: dict, expected: dict, *, rtol: float) -> None:
    """The same non-empty set of parameters, every gradient non-zero and within ``rtol`` of the
    expected one, with an absolute tolerance of ``rtol`` times its largest entry (entries near
    zero carry the same absolute rounding as the large ones)."""
    import torch

    assert grads.keys() == expected.keys() and len(grads) > 0
    for name, grad in grads.items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(grad, expected[name], rtol=rtol, atol=rtol * expected[name].abs().max().item(),
                                   msg=name)


def log_probs_without_prompts(model, input_ids, attention_mask, labels):
    """Per row, the summed log-probability trl's fused forward gives its completion (the labelled
    suffix) scored after the prompt's last token alone: what a forward that lost the prompt's
    cache would compute."""
    import torch

    starts = (labels != -100).int().argmax(1)
    cut = [input_ids[i][(torch.arange(input_ids.size(1)) >= starts[i] - 1) & attention_mask[i].bool()]
           for i in range(len(input_ids))]
    width = max(map(len, cut))
    ids = torch.stack([torch.cat([c, c.new_zeros(width - len(c))]) for c in cut])
    mask = torch.stack([torch.arange(width) < len(c) for c in cut]).long()
    cut_labels = ids.masked_fill(mask == 0, -100)
    cut_labels[:, 0] = -100
    return model(input_ids=ids, attention_mask=mask, labels=cut_labels, fused_lm_head=True).log_probs.sum(1)
