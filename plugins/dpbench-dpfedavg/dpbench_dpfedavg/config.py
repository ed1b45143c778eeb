"""DP-FedAvg's options. Defaults are sized for the embedded quickstart (``sotu``: 149 clients of
~20 paragraphs, the next_token evaluator's 5.3M-parameter GPT-2, 2 CPU cores); the starting
grid for paper scale (DistilGPT2, tens of thousands of clients; McMahan et al. 2018 via
POPri/PrE-Text, unverified) is given beside each field."""

from __future__ import annotations

from dataclasses import dataclass

from dpbench.api import ConfigError
from dpbench.api.config import check_choice, check_fraction, check_int, check_positive

SELECTIONS = ("last", "best_validation")


@dataclass(frozen=True)
class DpFedAvgOptions:
    rounds: int = 30
    """T; paper scale: hundreds to a few thousand"""
    clients_per_round: int = 25
    """expected cohort m̃: each client joins a round with probability q = min(1, m̃/N) and the
    noisy sum is divided by m̃ (a public constant, = qN unless N < m̃). 25 of sotu's 149 keeps a round at ~12 s on 2 cores (~0.35 s
    per client, ~2.5 s of validation), ~6 min in all; paper scale: as many as compute allows
    (1,000+)"""
    local_epochs: int = 1
    """passes over a client's own texts per round; paper scale: 1"""
    local_batch_size: int = 8
    """paper scale: 8–16"""
    local_lr: float = 0.1
    """client SGD learning rate; paper scale: 0.01, 0.03 or 0.1. Measured on public data only
    (pseudo-clients of 20 public sotu paragraphs, never private clients): a delta's median norm
    is 0.14 at 0.05, 0.30 at 0.1 and 2.4 at 0.3"""
    clip_norm: float = 0.5
    """C, the L2 bound on each client's delta (the user-level sensitivity): above the public
    pseudo-clients' median (0.30 at the default local_lr), since private clients' text is further
    from the public-pretrained model, so typical updates pass nearly whole and outliers are
    bounded; paper scale: 0.01, 0.1 or 1"""
    server_lr: float = 0.001
    """η_s. Chosen on sotu's validation split at ε = 1 (30 rounds, momentum 0.9): 1.0 diverges
    (validation accuracy 0.079 -> 0.0001 as the noise, z·C/m̃ ≈ 0.075 per coordinate, swamps the
    model), 0.01 peaks at 0.0804 after 10 rounds then decays, 0.001 climbs to 0.0809 at round
    30. DP-FedAvg proper (paper scale, cohorts of 1,000+): 1.0"""
    server_momentum: float = 0.9
    """heavy-ball momentum on the noisy average (0: plain DP-FedAvg); paper scale: 0.9"""
    bf16: bool = True
    """bfloat16 autocast for local training and validation, fp32 weights (as the next_token
    evaluator; ~1.5x faster on CPUs with AVX512-BF16)"""
    select: str = "best_validation"
    """which weights are returned: last, or best_validation (top-1 accuracy on the validation
    split, measured for the initial model and after every round at no privacy cost)"""

    def __post_init__(self):
        for name in ("rounds", "clients_per_round", "local_epochs", "local_batch_size"):
            check_int(name, getattr(self, name), minimum=1)
        for name in ("local_lr", "clip_norm", "server_lr"):
            check_positive(name, getattr(self, name))
        check_fraction("server_momentum", self.server_momentum, allow_zero=True, allow_one=False)
        check_choice("select", self.select, SELECTIONS)
        if not isinstance(self.bf16, bool):
            raise ConfigError("bf16", self.bf16, "true or false")
