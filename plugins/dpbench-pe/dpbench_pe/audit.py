"""PE's noisy release as an audit mechanism: the real vote and client-normalisation path.

Clients are matrices of unit text embeddings; the candidates are fixed. The canary is a
client with many texts on one candidate: however many it has, its normalised vote vector moves
the released histogram by at most 1 (the claim).
"""

from __future__ import annotations

import numpy as np

from dpbench.toolkit import normalise_rows
from dpbench_pe.votes import client_votes


def pe_audit_mechanism(*, noise_multiplier: float = 1.0, num_clients: int = 20, num_candidates: int = 16,
                       dimension: int = 8, texts_per_client: int = 5, canary_texts: int = 50):
    from dpbench.toolkit import AuditMechanism, noisy_clipped_sum

    rng = np.random.default_rng(0)
    candidates = normalise_rows(rng.normal(size=(num_candidates, dimension)))
    clients = tuple(normalise_rows(rng.normal(size=(texts_per_client, dimension))) for _ in range(num_clients))
    canary = np.repeat(candidates[:1], canary_texts, axis=0)

    def release(client_texts, noise_rng):
        votes = client_votes(candidates, list(client_texts))
        return noisy_clipped_sum(votes, clip_norm=1.0, noise_multiplier=noise_multiplier, rng=noise_rng)

    return AuditMechanism(name="pe_votes", release=release, clients=clients, canary=canary,
                          direction=np.eye(num_candidates)[0], noise_multiplier=noise_multiplier, clip_norm=1.0)
