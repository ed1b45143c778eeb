"""pytest fixtures over ``dpbench.testing``: in a plugin's ``conftest.py``,
``from dpbench.testing.fixtures import hashing_embedder, tiny_llama``."""

from __future__ import annotations

from pathlib import Path

import pytest

from dpbench.testing import HashingEmbedder, tiny_chat_llama


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    """The folder of a ``tiny_chat_llama``, built once per test session."""
    return tiny_chat_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture
def hashing_embedder(monkeypatch):
    """``HashingEmbedder`` in place of the sentence-transformers embedder, for one test."""
    import dpbench.models.embedding as embedding

    monkeypatch.setattr(embedding, "Embedder", HashingEmbedder)
    return HashingEmbedder
