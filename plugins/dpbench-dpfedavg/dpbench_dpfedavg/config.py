"""DP-FedAvg's options. Defaults are sized for the embedded quickstart (``sotu``: 149 clients of
~20 paragraphs, the next_token evaluator's 5.3M-parameter GPT-2, 2 CPU cores); the starting
grid for paper scale (DistilGPT2, tens of thousands of clients; McMahan et al. 2018 via
POPri/PrE-Text, unverified) is given beside each field."""

from __future__ import annotations

from dataclasses import dataclass

from dpbench.api.config import check_bf16, check_choice, check_fraction, check_int, check_positive

SELECTIONS = ("last", "best_validation")


@dataclass(frozen=True)
class DpFedAvgOptions:
    rounds: int = 30
    """T; paper scale: hundreds to a few thousand"""
    clients_per_round: int = 25
    """expected cohort m̃: each client joins a round with probability q = min(1, m̃/N) and the
    noisy sum is divided by m̃ (a public constant, = qN unless N < m̃); paper scale: as many as
    compute allows (1,000+)"""
    local_epochs: int = 1
    """passes over a client's own texts per round; paper scale: 1"""
    local_batch_size: int = 8
    """paper scale: 8–16"""
    local_lr: float = 0.1
    """client SGD learning rate; paper scale: 0.01, 0.03 or 0.1 (chosen on public data only:
    docs/notes/dp-fedavg-cpu-tuning.md)"""
    clip_norm: float = 0.5
    """C, the L2 bound on each client's delta (the user-level sensitivity); paper scale: 0.01, 0.1
    or 1"""
    server_lr: float = 0.001
    """η_s; chosen on sotu's validation split (docs/notes/dp-fedavg-cpu-tuning.md); DP-FedAvg
    proper (cohorts of 1,000+): 1.0"""
    server_momentum: float = 0.9
    """heavy-ball momentum on the noisy average (0: plain DP-FedAvg); paper scale: 0.9"""
    bf16: bool | str = "auto"
    """bfloat16 autocast for local training and validation, fp32 weights: true, false or auto
    (where the device computes bf16 natively, as the next_token evaluator)"""
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
        check_bf16("bf16", self.bf16)


@dataclass(frozen=True)
class DpFtrlOptions(DpFedAvgOptions):
    """DP-FTRL's options: DP-FedAvg's, with each client in exactly one round of each tree (no
    sampling), so a round has about N/rounds_per_tree clients."""

    clients_per_round: int = 25
    """m̃, the public divisor of each round's noisy sum: about N/rounds_per_tree (a round holds the
    clients the session assigned to it); a public constant, never the realised count"""
    rounds_per_tree: int | None = None
    """the paper's restarts: a new tree (fresh node noise, every client assigned afresh to one of
    its rounds) every rounds_per_tree rounds, so rounds/rounds_per_tree passes over the clients,
    each charged as its own tree; None: one tree, one pass. Paper: a tree per epoch"""

    def __post_init__(self):
        super().__post_init__()
        if self.rounds_per_tree is not None:
            check_int("rounds_per_tree", self.rounds_per_tree, minimum=1)
