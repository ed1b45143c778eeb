"""PE's release under the empirical audit: honest passes, votes without client normalisation fail."""

import dataclasses

import numpy as np

from dpbench.privacy.audit import run_audit
from dpbench.privacy.noise import noisy_clipped_sum
from dpbench.toolkit import normalise_rows
from dpbench_pe.audit import pe_audit_mechanism
from dpbench_pe.method import PrivateEvolution
from dpbench_pe.votes import nearest


def test_pe_mechanism_shows_no_violation():
    result = run_audit(PrivateEvolution().audit_mechanism(), trials=2000, seed=1)
    assert not result.violated, result
    assert result.epsilon_lower_bound < result.epsilon_claimed


def test_audit_catches_raw_vote_counts():
    honest = pe_audit_mechanism()
    candidates = normalise_rows(np.random.default_rng(0).normal(size=(16, 8)))  # pe_audit_mechanism's candidates

    def raw_counts(client_texts, noise_rng):  # the bug: one vote per text, clipped only after summing
        counts = np.zeros((1, 16))
        for texts in client_texts:
            np.add.at(counts[0], nearest(texts @ candidates.T, 1).ravel(), 1.0)
        return (noisy_clipped_sum(counts, clip_norm=1e9, noise_multiplier=1e-9, rng=noise_rng)
                + noise_rng.normal(size=16))

    buggy = dataclasses.replace(honest, name="pe_raw_counts", release=raw_counts)
    assert run_audit(buggy, trials=2000, seed=1).violated
