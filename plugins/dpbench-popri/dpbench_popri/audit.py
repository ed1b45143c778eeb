"""POPri's noisy release as an audit mechanism: the real scoring and clipping path.

Clients are per-client sums of text embeddings; the synthetic samples are fixed. The canary
is a client with a huge, adversarially aligned embedding sum: whatever its texts, after
centring and unit normalisation it can move the released sum by at most 1 (the claim).
"""

from __future__ import annotations

import numpy as np

from dpbench.toolkit import normalise_rows
from dpbench_popri.scoring import centred_unit_scores


def popri_audit_mechanism(*, noise_multiplier: float = 1.0, num_clients: int = 20, num_samples: int = 16,
                          dimension: int = 8):
    from dpbench.toolkit import AuditMechanism, noisy_clipped_sum

    rng = np.random.default_rng(0)
    samples = normalise_rows(rng.normal(size=(num_samples, dimension)))
    clients = tuple(normalise_rows(rng.normal(size=(num_clients, dimension))) * 5)
    canary = samples[0] * 1e6 - samples[1:].mean(axis=0) * 1e6
    direction = centred_unit_scores((samples @ canary)[None, :])[0]

    def release(client_sums, noise_rng):
        contributions = centred_unit_scores(np.stack(client_sums) @ samples.T)
        return noisy_clipped_sum(contributions, clip_norm=1.0, noise_multiplier=noise_multiplier, rng=noise_rng)

    return AuditMechanism(name="popri_scores", release=release, clients=clients, canary=canary, direction=direction,
                          noise_multiplier=noise_multiplier, clip_norm=1.0)


