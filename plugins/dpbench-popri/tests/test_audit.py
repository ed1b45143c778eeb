"""POPri's release under the empirical audit: honest passes, a planted missing-normalisation bug fails."""

import dataclasses

import numpy as np

from dpbench.privacy.audit import run_audit
from dpbench.privacy.noise import noisy_clipped_sum
from dpbench_popri.audit import popri_audit_mechanism
from dpbench_popri.method import Popri


def test_popri_mechanism_shows_no_violation():
    result = run_audit(Popri().audit_mechanism(), trials=2000, seed=1)
    assert not result.violated, result
    assert result.epsilon_lower_bound < result.epsilon_claimed


def test_audit_catches_scores_sent_without_centring_and_normalisation():
    honest = popri_audit_mechanism()
    rng = np.random.default_rng(0)
    samples = rng.normal(size=(16, 8))
    samples /= np.linalg.norm(samples, axis=1, keepdims=True)

    def raw_scores(client_sums, noise_rng):  # the bug: raw cosine sums, clipped only after summing
        total = (np.stack(client_sums) @ samples.T).sum(axis=0, keepdims=True)
        return noisy_clipped_sum(total, clip_norm=1e9, noise_multiplier=1e-9, rng=noise_rng) + noise_rng.normal(size=16)

    buggy = dataclasses.replace(honest, name="popri_raw_scores", release=raw_scores)
    result = run_audit(buggy, trials=2000, seed=1)
    assert result.violated, result
