import numpy as np
import pytest

from dpbench_popri.pairs import preference_pairs
from dpbench_popri.scoring import centred_unit_scores, client_step, client_sums, score_per_client_loop


def test_centring_and_normalisation_hand_checked():
    # scores [1, 2, 3] -> centred [-1, 0, 1] -> / sqrt(2)
    np.testing.assert_allclose(centred_unit_scores(np.array([[1.0, 2.0, 3.0]])), [[-1 / np.sqrt(2), 0, 1 / np.sqrt(2)]])


def test_degenerate_clients_give_zero_vectors_never_nan():
    rows = centred_unit_scores(np.array([[5.0, 5.0, 5.0], [np.nan, 1.0, 2.0], [np.inf, 0, 0], [0.0, 0.0, 1.0]]))
    assert np.isfinite(rows).all()
    np.testing.assert_array_equal(rows[:3], 0)
    assert np.linalg.norm(rows[3]) == pytest.approx(1.0)
    sums = client_sums({"a": np.zeros((0, 4)), "b": np.ones((2, 4))}, ["a", "b", "missing"], dim=4)
    np.testing.assert_array_equal(sums[[0, 2]], 0)


def test_matrix_multiply_equals_per_client_loop():
    rng = np.random.default_rng(0)
    embeddings = {f"c{i}": rng.normal(size=(rng.integers(0, 6), 16)) for i in range(37)}
    ids = sorted(embeddings)
    samples = rng.normal(size=(24, 16))
    sums = client_sums(embeddings, ids, 16)
    fast = client_step([{"sum": row} for row in sums], {"samples": samples}, [{}] * len(ids))
    slow = score_per_client_loop(samples, embeddings, ids)
    np.testing.assert_allclose(fast, slow, atol=1e-12)
    norms = np.linalg.norm(fast, axis=1)
    assert np.all((np.isclose(norms, 1.0)) | (norms == 0))
    np.testing.assert_allclose(fast.sum(axis=1), 0, atol=1e-12)


def test_pairs_by_position_with_duplicates_and_ties():
    # prompt 0: samples 0..3, prompt 1: samples 4..7; samples 5 and 6 could be identical strings
    scores = np.array([0.1, 0.9, 0.5, 0.3, 0.2, 0.7, 0.7, 0.0])
    pairs = preference_pairs(scores, samples_per_prompt=4, reject_rank=2)
    assert [(p.prompt, p.chosen, p.rejected) for p in pairs] == [(0, 1, 3), (1, 5, 4)]


def test_pairs_reject_bad_shapes():
    with pytest.raises(ValueError, match="do not split"):
        preference_pairs(np.zeros(7), samples_per_prompt=4, reject_rank=2)
    with pytest.raises(ValueError, match="reject_rank 4"):
        preference_pairs(np.zeros(8), samples_per_prompt=4, reject_rank=4)


def test_release_agreement_counts_the_pairs_the_noise_left_as_they_were():
    from dpbench_popri.config import PopriOptions
    from dpbench_popri.method import Popri

    popri = Popri(PopriOptions(samples_per_prompt=3, reject_rank=2))
    clean = np.array([3.0, 2.0, 1.0, 1.0, 2.0, 3.0])  # pairs (0 over 2), (5 over 3)
    noisy = np.array([3.0, 1.0, 2.0, 1.0, 2.0, 3.0])  # prompt 0 now rejects sample 1
    assert popri.release_agreement(noisy, clean) == {"pairs_as_noise_free": 0.5, "chosen_as_noise_free": 1.0}
    assert popri.release_agreement(-clean, clean) == {"pairs_as_noise_free": 0.0, "chosen_as_noise_free": 0.0}
