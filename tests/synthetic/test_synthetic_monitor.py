"""Monitoring statistics on unit-norm embeddings, checked by hand."""

import math

import numpy as np
import pytest

from dpbench.synthetic.monitor import mean_pairwise_cosine, round_metrics
from dpbench.synthetic.similarity import normalise_rows


def test_samples_equal_to_validation_score_perfectly():
    validation = normalise_rows(np.random.default_rng(0).normal(size=(50, 4)))
    metrics = round_metrics(validation, validation)
    assert metrics["validation_fid"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["validation_mean_distance"] == 0.0
    assert metrics["validation_centroid_cosine"] == pytest.approx(1.0)
    assert metrics["validation_nearest_cosine"] == pytest.approx(1.0)


def test_mean_pairwise_cosine():
    assert mean_pairwise_cosine(np.eye(3)) == 0.0
    assert mean_pairwise_cosine(np.ones((4, 1))) == 1.0
    assert math.isnan(mean_pairwise_cosine(np.eye(1)))
