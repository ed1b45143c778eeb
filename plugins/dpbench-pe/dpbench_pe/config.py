"""Private Evolution's options. Defaults are a CPU-scaled setting for the 135M generator POPri
uses (about ten minutes on 2 cores); the paper's values (Aug-PE, Xie et al., ICML 2024, arXiv
2403.01749; open-model scripts of AI-secure/aug-pe) are given beside each field."""

from __future__ import annotations

from dataclasses import dataclass

from dpbench.api.config import check_choice, check_fraction, check_int, check_positive
from dpbench.errors import ConfigError

PROMPT_STYLES = ("chat", "list")
SELECTIONS = ("rank", "sample")


@dataclass(frozen=True)
class PeOptions:
    # generator and embedder: POPri's, so only the algorithm differs
    model: str = "smollm2-135m-instruct"
    """generator for both APIs; paper: gpt2 (open-model setting); POPri: Llama-3-8B"""
    backend: str = "transformers"
    """transformers (CPU/GPU) or vllm (GPU)"""
    bf16: bool = False
    """bfloat16 generation (~1.6x faster on CPUs with AVX512-BF16)"""
    generation_batch_size: int = 32
    embedder: str = "all-minilm-l6-v2"
    """paper: sentence-t5-base (PubMed), stsb-roberta-base-v2 (Yelp); PrE-Text and POPri: all-MiniLM-L6-v2"""

    # the evolution
    iterations: int = 3
    """T DP iterations (noisy releases); paper: 10"""
    synthetic_samples: int = 128
    """N_syn texts selected per iteration and output at the end; paper: 2000 (PubMed), 5000 (Yelp)"""
    variations_per_sample: int = 2
    """L - 1 paraphrases of each selected text; paper: 6 (L = 7)"""
    nearest_neighbors: int = 1
    """k candidates each private text votes for; paper: 1"""
    histogram_threshold: float = 0.0
    """H: ``sample`` selection draws in proportion to max(noisy - H, 0) (vote units: each client's
    vector has norm 1); ``rank`` ranks the raw noisy counts, which H would only tie; paper: 0"""
    selection: str = "rank"
    """rank: the top noisy counts (paper); sample: draw with replacement in proportion to thresholded counts"""
    sampling_rate: float = 1.0
    """Poisson client-sampling rate per iteration; pe's client-level mode: every client (1.0)"""
    vote_batch_clients: int = 4096
    """clients voting per matrix multiply (bounds memory)"""

    # generation
    examples_per_prompt: int = 3
    """public seed texts in each RANDOM_API prompt (POPri's prompt)"""
    prompt_style: str = "chat"
    """chat: one user message (instruct models); list: plain-text prompts (base models)"""
    temperature: float = 1.0
    """paper: 1.0 (PubMed), 1.2 (OpenReview), 1.4 (Yelp)"""
    top_p: float = 1.0
    max_new_tokens: int = 64
    """paper: 64 (Yelp), 448 (PubMed, OpenReview)"""
    truncate_tokens: int = 64

    def __post_init__(self):
        check_choice("backend", self.backend, ("transformers", "vllm"))
        check_choice("prompt_style", self.prompt_style, PROMPT_STYLES)
        check_choice("selection", self.selection, SELECTIONS)
        for name in ("iterations", "synthetic_samples", "variations_per_sample", "nearest_neighbors",
                     "examples_per_prompt", "generation_batch_size", "max_new_tokens", "truncate_tokens",
                     "vote_batch_clients"):
            check_int(name, getattr(self, name), minimum=1)
        candidates = self.synthetic_samples * (self.variations_per_sample + 1)
        if self.nearest_neighbors > candidates:
            raise ConfigError("nearest_neighbors", self.nearest_neighbors,
                              f"an integer in 1..{candidates} (the candidates per iteration)")
        check_positive("histogram_threshold", self.histogram_threshold, allow_zero=True)
        check_positive("temperature", self.temperature, allow_zero=True)
        check_fraction("top_p", self.top_p)
        check_fraction("sampling_rate", self.sampling_rate)
        if not isinstance(self.bf16, bool):
            raise ConfigError("bf16", self.bf16, "true or false")
