"""POPri's options. Defaults are the CPU-scaled setting for a 135M generator; the paper's
values (Hou et al., ICML 2025, arXiv 2504.16438, reference code meiyuw/POPri@2f0ac43) are
given beside each field and set in ``suites/biorxiv.yaml`` / ``suites/congressional.yaml``."""

from __future__ import annotations

from dataclasses import dataclass

from dpbench.api.config import check_choice, check_fraction, check_int, check_positive
from dpbench.errors import ConfigError

PROMPT_STYLES = ("chat", "list")
SELECTIONS = ("last", "best_validation_fid", "best_validation_centroid")


@dataclass(frozen=True)
class PopriOptions:
    # generator and embedder
    model: str = "smollm2-135m-instruct"
    """generator/policy; paper: meta-llama/Meta-Llama-3-8B (base)"""
    backend: str = "transformers"
    """transformers (CPU/GPU) or vllm (GPU)"""
    bf16: bool = False
    """bfloat16 generation and DPO (~1.6x faster on CPUs with AVX512-BF16)"""
    generation_batch_size: int = 32
    embedder: str = "all-minilm-l6-v2"

    # one round
    rounds: int = 3
    """T; paper: 20"""
    prompts_per_round: int = 32
    """N prompts = DPO pairs per round; paper: 1800"""
    samples_per_prompt: int = 4
    """J candidates per prompt; paper: 10"""
    reject_rank: int = 2
    """0-based rank of the rejected sample; paper: 4 (5th best of 10)"""
    examples_per_prompt: int = 3
    """public seed texts shown in each prompt; paper: 3"""
    prompt_style: str = "chat"
    """chat: one user message (instruct models); list: the paper's "Original Text Sample n" list (base models)"""
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    """paper: 85, then truncated to 64 tokens"""
    truncate_tokens: int = 64
    sampling_rate: float = 1.0
    """Poisson client-sampling rate per round; paper: all clients (1.0)"""
    score_batch_clients: int = 4096
    """clients scored per matrix multiply (bounds memory)"""

    # DPO (trl) on a LoRA adapter; the reference is always the base model
    beta: float = 0.1
    """paper: 0.01"""
    learning_rate: float = 5e-4
    """paper: 8e-7 for an 8B model; far too small for 135M (see popri-cpu.md)"""
    warmup_steps: int = 0
    """paper: 10 (round 0 only)"""
    pairs_per_step: int = 4
    """paper: 24 (4 x 6 accumulation)"""
    epochs_per_round: int = 1
    """paper: 1 (16 pairs x 2 epochs over-fits them: DPO loss 0.07 and a policy that drifts first)"""
    lora_r: int = 16
    lora_alpha: int = 32
    """paper: 16"""
    max_length: int = 512
    """prompt + completion tokens in DPO (paper: 512); checked against the longest possible pair
    before round 0, since trl would cut completions silently"""

    # monitoring and output
    select: str = "last"
    """checkpoint for the final data: last, best_validation_fid or best_validation_centroid"""
    final_samples: int = 256
    """M synthetic texts from the chosen checkpoint; paper: ~1M"""

    def __post_init__(self):
        check_choice("backend", self.backend, ("transformers", "vllm"))
        check_choice("prompt_style", self.prompt_style, PROMPT_STYLES)
        check_choice("select", self.select, SELECTIONS)
        for name in ("rounds", "prompts_per_round", "examples_per_prompt", "generation_batch_size",
                     "max_new_tokens", "truncate_tokens", "pairs_per_step", "epochs_per_round", "lora_r",
                     "lora_alpha", "max_length", "final_samples", "score_batch_clients"):
            check_int(name, getattr(self, name), minimum=1)
        check_int("samples_per_prompt", self.samples_per_prompt, minimum=2)
        check_int("warmup_steps", self.warmup_steps, minimum=0)
        check_int("reject_rank", self.reject_rank, minimum=1)
        if self.reject_rank >= self.samples_per_prompt:
            raise ConfigError("reject_rank", self.reject_rank, f"an integer in 1..{self.samples_per_prompt - 1} (0-based; 0 is the chosen sample)")
        check_positive("temperature", self.temperature, allow_zero=True)
        check_fraction("top_p", self.top_p)
        check_fraction("sampling_rate", self.sampling_rate)
        check_positive("beta", self.beta)
        check_positive("learning_rate", self.learning_rate)
        if not isinstance(self.bf16, bool):
            raise ConfigError("bf16", self.bf16, "true or false")
