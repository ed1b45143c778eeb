"""A tiny random-init chat Llama and a hashing embedder (as in dpbench-popri's tests): PE's
whole loop in seconds."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

CHAT_TEMPLATE = (
    "{% for m in messages %}<|endoftext|>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|endoftext|>assistant:{% endif %}"
)
TOY_PLUGINS = Path(__file__).resolve().parents[3] / "tests" / "plugins"


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from dpbench.evaluation.lm import train_tokenizer

    folder = tmp_path_factory.mktemp("tiny-llama")
    corpus = [" ".join(f"w{(i * 7 + j) % 40}" for j in range(12)) for i in range(200)]
    corpus += ["Please rephrase the following paragraph in a casual way: Reply with the rephrased paragraph only."]
    tok = train_tokenizer(corpus, 400)
    tok.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


class HashingEmbedder:
    """Bag of hashed words, unit norm: deterministic, instant, no model."""

    dimension = 32

    def __init__(self, model="hashing", *, batch_size=64, device="cpu"):
        self.name = model

    def identity(self):
        return {"model": "hashing-test-embedder"}

    def encode(self, texts):
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in zip(out, texts):
            for word in text.split():
                row[int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dimension] += 1
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return np.divide(out, norms, out=np.zeros_like(out), where=norms > 0)


@pytest.fixture
def hashing_embedder(monkeypatch):
    import dpbench.models.embedding as embedding

    monkeypatch.setattr(embedding, "Embedder", HashingEmbedder)
    return HashingEmbedder


@pytest.fixture
def toy_plugin(monkeypatch):
    """dpbench's toy dataset and evaluator plugin (tests/plugins/toy.py), for one test."""
    monkeypatch.syspath_prepend(str(TOY_PLUGINS))
    import toy

    from dpbench.plugins import registered

    with registered(toy, name="toy"):
        yield toy


@pytest.fixture
def pe_plugin():
    import dpbench_pe

    from dpbench.plugins import pm, registered

    if pm.get_plugin("pe") is None:
        with registered(dpbench_pe, name="pe"):
            yield
    else:
        yield
