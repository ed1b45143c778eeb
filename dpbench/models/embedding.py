"""Sentence embeddings (sentence-transformers), L2-normalised, batched, cached by content.

``embed_cached`` stores each (model, dataset fingerprint, split) matrix once in the suite
cache as ``embeddings.npy``, so private data is embedded once per runs folder however many runs
use it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from dpbench.api.config import check_int
from dpbench.cache import texts_key

if TYPE_CHECKING:
    from dpbench.api.dataset import FederatedTextData, MethodData
    from dpbench.cache import SuiteCache

DEFAULT_EMBEDDER = "all-minilm-l6-v2"
EMBEDDING_CODE_VERSION = "1"  # bump when encode() output could change


class Embedder:
    """A sentence-transformers model; loaded on first use.

    ``model``: a named model (default ``all-minilm-l6-v2``, offline), a local folder or a hub
    id. ``batch_size``: texts per forward pass.
    """

    def __init__(self, model: str = DEFAULT_EMBEDDER, *, batch_size: int = 64, device: str = "cpu"):
        check_int("batch_size", batch_size, minimum=1)
        self.name, self.batch_size, self.device = model, batch_size, device
        self._model = None

    @property
    def model(self):
        if self._model is None:
            from pathlib import Path

            from sentence_transformers import SentenceTransformer

            from dpbench.models.resolve import resolve_model

            target = resolve_model(self.name)
            self._model = SentenceTransformer(target, device=self.device, local_files_only=Path(target).is_dir())
        return self._model

    @property
    def dimension(self) -> int:
        return int(self.model.get_embedding_dimension())

    def identity(self) -> dict:
        """What cache keys of these embeddings contain."""
        from dpbench.models.resolve import model_identity

        return {**model_identity(self.name), "code": EMBEDDING_CODE_VERSION}

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """A float32 matrix, one unit-norm row per text (an empty list gives shape (0, dim))."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        matrix = self.model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        matrix = np.asarray(matrix, dtype=np.float32)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        return matrix / np.maximum(norms, 1e-12)


def embed_cached(
    embedder: Embedder,
    texts: Sequence[str],
    *,
    cache: SuiteCache,
    dataset_fingerprint: str,
    split: str,
) -> np.ndarray:
    """``embedder.encode(texts)``, computed once per (model, dataset fingerprint, split).

    The texts' own hash is part of the key too, so a caller passing other texts under the
    same split name never gets a stale matrix.
    """
    key = {
        "embedder": embedder.identity(),
        "dataset": dataset_fingerprint,
        "split": split,
        "texts": texts_key(texts),
        "count": len(texts),
    }

    def build(folder):
        np.save(folder / "embeddings.npy", embedder.encode(texts))

    folder = cache.get_or_build("embeddings", key, build)
    return np.load(folder / "embeddings.npy")


SPLITS = ("train", "validation", "test", "public")


def embed_split(
    embedder: Embedder, data: MethodData | FederatedTextData, split: str, *, cache: SuiteCache
) -> np.ndarray:
    """Embeddings of one split of ``data``; ``train`` is ``data.training_texts()`` (clients in
    sorted order, as ``embed_clients`` slices them)."""
    if split not in SPLITS:
        from dpbench.errors import ConfigError

        raise ConfigError("split", split, "one of " + ", ".join(SPLITS))
    texts = data.training_texts() if split == "train" else getattr(data, split)
    return embed_cached(embedder, texts, cache=cache, dataset_fingerprint=_fingerprint(data), split=split)


def embed_clients(
    embedder: Embedder, data: MethodData | FederatedTextData, *, cache: SuiteCache
) -> dict[str, np.ndarray]:
    """Each client's embedding matrix (rows in the client's text order), from one cached pass."""
    matrix = embed_split(embedder, data, "train", cache=cache)
    out, start = {}, 0
    for cid in sorted(data.clients):
        n = len(data.clients[cid])
        out[cid] = matrix[start : start + n]
        start += n
    return out


def _fingerprint(data) -> str:
    """``FederatedTextData.fingerprint()``, or an equivalent hash for ``MethodData`` (methods
    never see the test split, so its fingerprint covers clients, validation and public)."""
    if hasattr(data, "fingerprint"):
        return data.fingerprint()
    digest = hashlib.sha256()
    for part in (sorted((k, list(v)) for k, v in data.clients.items()), list(data.validation), list(data.public)):
        digest.update(json.dumps(part, ensure_ascii=False).encode())
    return "m" + digest.hexdigest()[:15]
