"""Private Evolution's options. Defaults are a CPU-scaled setting for the 135M generator POPri
uses (about ten minutes on 2 cores); the paper's values (Aug-PE, Xie et al., ICML 2024, arXiv
2403.01749; open-model scripts of AI-secure/aug-pe) are given beside each field (the shared
generator fields' in the class docstring)."""

from __future__ import annotations

from dataclasses import dataclass

from dpbench.api import ConfigError
from dpbench.api.config import check_choice, check_fraction, check_int, check_positive
from dpbench.toolkit import GeneratorOptions

SELECTIONS = ("rank", "sample")


@dataclass(frozen=True)
class PeOptions(GeneratorOptions):
    """The shared generator options (POPri's defaults too, so only the algorithm differs) and
    PE's own. The paper's generator settings: gpt2 in the open-model setting (POPri: Llama-3-8B);
    embedder sentence-t5-base (PubMed) or stsb-roberta-base-v2 (Yelp), all-MiniLM-L6-v2 in
    PrE-Text and POPri; temperature 1.0 (PubMed), 1.2 (OpenReview), 1.4 (Yelp); max_new_tokens
    64 (Yelp), 448 (PubMed, OpenReview). ``examples_per_prompt`` counts the public seed texts
    in each RANDOM_API prompt."""

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
    """clients voting per matrix multiply in process (bounds memory); 1: the per-client arithmetic of a Flower
    node, so the two runtimes release the same bits (docs/federation.md)"""

    def __post_init__(self):
        super().__post_init__()
        check_choice("selection", self.selection, SELECTIONS)
        for name in ("iterations", "synthetic_samples", "variations_per_sample", "nearest_neighbors",
                     "vote_batch_clients"):
            check_int(name, getattr(self, name), minimum=1)
        candidates = self.synthetic_samples * (self.variations_per_sample + 1)
        if self.nearest_neighbors > candidates:
            raise ConfigError("nearest_neighbors", self.nearest_neighbors,
                              f"an integer in 1..{candidates} (the candidates per iteration)")
        check_positive("histogram_threshold", self.histogram_threshold, allow_zero=True)
        check_fraction("sampling_rate", self.sampling_rate)


@dataclass(frozen=True)
class PeSftOptions(PeOptions):
    """PE's options, then PrE-Text's expansion (Hou et al., ICML 2024): LoRA fine-tuning of the
    generator on PE's DP-selected texts and ``final_samples`` texts sampled from it. The paper
    expanded with LLaMA-2-7B to 2M samples (50k in its script) and trained its downstream model on
    them; the POPri paper's PE+SFT baseline fine-tunes the LLM on PE's top-scored data."""

    sft_epochs: int = 2
    """passes over the selected texts"""
    sft_learning_rate: float = 2e-4
    """AdamW, constant"""
    sft_batch_size: int = 8
    lora_r: int = 16
    lora_alpha: int = 32
    """POPri's adapter shape, so the two methods tune the same parameters"""
    sft_max_length: int = 512
    """prompt + completion tokens; longer examples are cut from the end"""
    final_samples: int = 256
    """M texts sampled from the fine-tuned generator (POPri's M), one per fresh public prompt"""

    def __post_init__(self):
        super().__post_init__()
        for name in ("sft_epochs", "sft_batch_size", "lora_r", "lora_alpha", "sft_max_length", "final_samples"):
            check_int(name, getattr(self, name), minimum=1)
        check_positive("sft_learning_rate", self.sft_learning_rate)
