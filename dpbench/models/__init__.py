"""Models: the name resolver, text generators and sentence embedders.

Importing this package is cheap: torch, transformers, sentence-transformers and vLLM are
imported only inside the functions that need them.
"""

from dpbench.models.embedding import Embedder, embed_cached, embed_clients, embed_split
from dpbench.models.generation import (
    Generator,
    SamplingParams,
    TransformersGenerator,
    VLLMGenerator,
    make_generator,
)
from dpbench.models.resolve import (
    NAMED_MODELS,
    ModelError,
    load_causal_lm,
    load_tokenizer,
    model_cache_dir,
    model_identity,
    resolve_model,
)

__all__ = [
    "Embedder", "embed_cached", "embed_clients", "embed_split",
    "Generator", "SamplingParams", "TransformersGenerator", "VLLMGenerator", "make_generator",
    "NAMED_MODELS", "ModelError", "load_causal_lm", "load_tokenizer", "model_cache_dir", "model_identity",
    "resolve_model",
]
