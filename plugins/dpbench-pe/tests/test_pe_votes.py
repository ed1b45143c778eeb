"""PE's votes, selection and options, checked by hand."""

import math

import numpy as np
import pytest

from dpbench.errors import ConfigError
from dpbench_pe.config import PeOptions
from dpbench_pe.votes import client_votes, nearest, select

CANDIDATES = np.eye(4)


def unit(*rows):
    rows = np.array(rows, dtype=float)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_options_name_the_field():
    for field, value in [("iterations", 0), ("synthetic_samples", -1), ("variations_per_sample", 0),
                         ("histogram_threshold", -1.0), ("selection", "prob"), ("sampling_rate", 0.0),
                         ("prompt_style", "poem"), ("nearest_neighbors", 0), ("bf16", "yes")]:
        with pytest.raises(ConfigError, match=f"^{field}: "):
            PeOptions(**{field: value})
    with pytest.raises(ConfigError, match=r"nearest_neighbors: 7 is not allowed; expected an integer in 1\.\.6"):
        PeOptions(synthetic_samples=2, variations_per_sample=2, nearest_neighbors=7)


def test_client_vote_vector_hand_checked():
    # texts nearest to candidates 0, 0 and 2 -> counts [2, 0, 1, 0] / sqrt(5); an empty client -> zeros
    texts = unit([1, 0.1, 0, 0], [0.9, 0, 0.2, 0], [0.1, 0, 1, 0.3])
    votes = client_votes(CANDIDATES, [texts, np.zeros((0, 4))])
    np.testing.assert_allclose(votes[0], np.array([2, 0, 1, 0]) / math.sqrt(5))
    np.testing.assert_array_equal(votes[1], 0)
    assert np.isfinite(votes).all()


def test_k_nearest_neighbours():
    # with k = 2, text a votes {0, 1}, text b votes {0, 2}: counts [2, 1, 1, 0] / sqrt(6)
    texts = unit([1, 0.5, 0.1, 0], [1, 0.1, 0.6, 0])
    assert sorted(nearest(texts @ CANDIDATES.T, 2)[0]) == [0, 1]
    np.testing.assert_allclose(client_votes(CANDIDATES, [texts], k=2)[0], np.array([2, 1, 1, 0]) / math.sqrt(6))
    with pytest.raises(ValueError, match="5 nearest of 4"):
        nearest(texts @ CANDIDATES.T, 5)


def test_client_batches_through_the_runtime_equal_one_pass():
    from dpbench.clients import InProcessClients

    rng = np.random.default_rng(0)
    candidates = unit(*rng.normal(size=(9, 6)))
    clients = [unit(*rng.normal(size=(n, 6))) if n else np.zeros((0, 6)) for n in rng.integers(0, 5, size=11)]
    ids = [f"c{i}" for i in range(len(clients))]
    runtime = InProcessClients()
    runtime.place("texts", {cid: {"texts": texts} for cid, texts in zip(ids, clients, strict=True)})
    batched = np.vstack(list(runtime.rows("dpbench_pe.votes:client_step", ids, inputs="texts",
                                          payload={"candidates": candidates}, config={"k": 2}, batch=3)))
    np.testing.assert_allclose(batched, client_votes(candidates, clients, k=2))
    norms = np.linalg.norm(batched, axis=1)
    assert np.all(np.isclose(norms, 1) | (norms == 0))


def test_rank_selection_and_threshold():
    noisy = np.array([0.5, 3.0, -1.0, 2.0, 1.0])
    assert list(select(noisy, 2)) == [1, 3]
    # rank ignores H: thresholding would make 0.5, -1 and 1.0 a three-way tie won by position
    assert list(select(noisy, 3, threshold=1.0)) == [1, 3, 4]
    drawn = select(noisy, 500, threshold=1.0, mode="sample", rng=np.random.default_rng(0))
    assert set(drawn) == {1, 3}  # every count <= H was zeroed
    assert 0.55 < np.mean(drawn == 1) < 0.8  # drawn in proportion 2 : 1
    uniform = select(np.zeros(4), 400, mode="sample", rng=np.random.default_rng(0))
    assert set(uniform) == {0, 1, 2, 3}


def test_noiseless_session_selects_the_candidate_most_clients_are_near(tmp_path):
    from dpbench.api import MechanismSpec, PrivacyBudget
    from dpbench.privacy import open_session

    session = open_session(MechanismSpec(rounds=1), noise_multiplier=1e-12,
                           budget=PrivacyBudget(epsilon=math.inf, delta=1e-5), run_dir=tmp_path,
                           clients=[f"c{i}" for i in range(6)], seed=0,
                           accountant="rdp")  # PLD cannot discretise sigma = 1e-12
    # four clients with one text near candidate 2; two clients with ten texts each near candidate 0:
    # 20 raw votes lose to 4 clients, because each client's vote vector has norm 1
    near_2 = [unit([0, 0.1, 1, 0])] * 4
    near_0 = [np.repeat(unit([1, 0, 0.1, 0]), 10, axis=0)] * 2
    noisy = session.release_clipped_sum("pe-iteration-0", client_votes(CANDIDATES, near_2 + near_0), clip_norm=1.0,
                                        clients=session.cohort(0))
    np.testing.assert_allclose(noisy, [2, 0, 4, 0], atol=1e-9)
    assert list(select(noisy, 1)) == [2]


def test_release_agreement_compares_the_noisy_top_k_with_the_noise_free_one():
    from dpbench_pe.method import PrivateEvolution

    pe = PrivateEvolution(PeOptions(synthetic_samples=2))
    clean = np.array([3.0, 0.0, 2.0, 1.0])  # best two: 0 and 2, mass 5
    agreement = pe.release_agreement(np.array([5.0, 4.0, 0.0, 0.5]), clean)  # picks 0 and 1, mass 3
    assert agreement == pytest.approx({"top_k_overlap": 0.5, "vote_mass_captured": 0.6})
    assert pe.release_agreement(clean, clean) == {"top_k_overlap": 1.0, "vote_mass_captured": 1.0}
    assert pe.release_agreement(clean, np.zeros(4))["vote_mass_captured"] is None
