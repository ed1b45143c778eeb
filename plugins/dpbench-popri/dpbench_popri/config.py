"""POPri's options. Defaults are the CPU-scaled setting for a 135M generator; the paper's
values (Hou et al., ICML 2025, arXiv 2504.16438, reference code meiyuw/POPri@2f0ac43) are
given beside each field (the shared generator fields' in the class docstring) and set in
``suites/biorxiv.yaml`` / ``suites/congressional.yaml``."""

from __future__ import annotations

from dataclasses import dataclass

from dpbench.api import ConfigError
from dpbench.api.config import check_choice, check_fraction, check_int, check_positive
from dpbench.toolkit import GeneratorOptions

SELECTIONS = ("last", "best_validation_fid", "best_validation_centroid", "best_validation_downstream")


@dataclass(frozen=True)
class PopriOptions(GeneratorOptions):
    """The shared generator options (``bf16`` also applies to DPO) and POPri's own. The
    paper's generator settings: meta-llama/Meta-Llama-3-8B (base) with the ``list`` prompt of
    3 public examples, max_new_tokens 85 and truncate_tokens 64."""

    # one round
    rounds: int = 3
    """T; paper: 20"""
    prompts_per_round: int = 32
    """N prompts = DPO pairs per round; paper: 1800"""
    samples_per_prompt: int = 4
    """J candidates per prompt; paper: 10"""
    reject_rank: int = 2
    """0-based rank of the rejected sample; paper: 4 (5th best of 10)"""
    sampling_rate: float = 1.0
    """Poisson client-sampling rate per round; paper: all clients (1.0)"""
    score_batch_clients: int = 4096
    """clients scored per matrix multiply in process (bounds memory); 1: the per-client arithmetic of a Flower
    node, so the two runtimes release the same bits (docs/federation.md)"""

    # DPO (trl) on a LoRA adapter; the reference is always the base model
    beta: float = 0.1
    """paper: 0.01"""
    learning_rate: float = 5e-4
    """paper: 8e-7 for an 8B model; far too small for 135M"""
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
    """checkpoint for the final data: last, best_validation_fid, best_validation_centroid (embedding
    statistics of the monitor candidates) or best_validation_downstream (each checkpoint's
    ``final_samples`` texts scored on validation by the suite's evaluator: one generation and
    one evaluation per checkpoint; the per-checkpoint curve is kept in monitor.json)"""
    final_samples: int = 256
    """M synthetic texts from the chosen checkpoint; paper: ~1M"""

    def __post_init__(self):
        super().__post_init__()
        check_choice("select", self.select, SELECTIONS)
        for name in ("rounds", "prompts_per_round", "pairs_per_step", "epochs_per_round", "lora_r", "lora_alpha",
                     "max_length", "final_samples", "score_batch_clients"):
            check_int(name, getattr(self, name), minimum=1)
        check_int("samples_per_prompt", self.samples_per_prompt, minimum=2)
        check_int("warmup_steps", self.warmup_steps, minimum=0)
        check_int("reject_rank", self.reject_rank, minimum=1)
        if self.reject_rank >= self.samples_per_prompt:
            raise ConfigError("reject_rank", self.reject_rank,
                              f"an integer in 1..{self.samples_per_prompt - 1} (0-based; 0 is the chosen sample)")
        check_fraction("sampling_rate", self.sampling_rate)
        check_positive("beta", self.beta)
        check_positive("learning_rate", self.learning_rate)

    def generator(self, device: str, *, max_lora_rank: int | None = None):
        """The generator, serving POPri's rank-``lora_r`` adapters."""
        return super().generator(device, max_lora_rank=max_lora_rank or self.lora_r)
