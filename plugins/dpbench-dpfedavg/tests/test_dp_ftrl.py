"""DP-FTRL: DP-FedAvg's loop on the session's tree release, each client trained once per tree."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

import dpbench_dpfedavg.method as method_module
from dpbench.privacy.ledger import release_charges
from dpbench_dpfedavg.method import DpFtrl


@pytest.fixture
def trained(monkeypatch) -> Counter:
    """How often each client's local training ran (keyed by its seed), for one test."""
    counts = Counter()
    real = method_module.local_update

    def update(model, weights, encoded, **kwargs):
        counts[kwargs["seed"]] += 1
        return real(model, weights, encoded, **kwargs)

    monkeypatch.setattr(method_module, "local_update", update)
    return counts


def test_each_client_trains_in_exactly_one_round_and_the_releases_form_one_tree(run_method, tmp_path, trained,
                                                                                fed_data):
    artifact, ctx = run_method(tmp_path, ftrl=True, noise_multiplier=0.5, rounds=3, clients_per_round=2)
    cohorts = [ctx.privacy.cohort(r) for r in range(3)]
    assert sorted(c for cohort in cohorts for c in cohort) == sorted(fed_data.clients)
    assert sum(trained.values()) == len(fed_data.clients) and set(trained.values()) == {1}
    ledger = [json.loads(line) for line in (tmp_path / "ledger.jsonl").read_text().splitlines()]
    assert [(r["key"], r["kind"]) for r in ledger] == [(f"dp-ftrl-round-{r}", "tree_aggregation") for r in range(3)]
    assert (artifact.path / "config.json").is_file()


def test_with_restarts_each_client_trains_once_per_tree_and_each_tree_is_charged(run_method, tmp_path, trained,
                                                                                  fed_data):
    _, ctx = run_method(tmp_path, ftrl=True, noise_multiplier=0.5, rounds=4, rounds_per_tree=2, clients_per_round=2)
    for tree in (0, 1):
        cohorts = [ctx.privacy.cohort(r) for r in (2 * tree, 2 * tree + 1)]
        assert sorted(c for cohort in cohorts for c in cohort) == sorted(fed_data.clients)
    assert sum(trained.values()) == 2 * len(fed_data.clients)  # two passes over the clients
    ledger = [json.loads(line) for line in (tmp_path / "ledger.jsonl").read_text().splitlines()]
    assert [r["tree"] for r in ledger] == [0, 0, 1, 1]
    assert len(release_charges(ledger)) == 2


def test_without_noise_the_update_is_dp_fedavg_s_on_the_same_cohorts(run_method, tmp_path, monkeypatch):
    """At σ = 0 the tree adds nothing: DP-FTRL's weights are DP-FedAvg's server step applied to
    the clipped sums of the tree's cohorts (here every cohort of a one-round tree: all clients)."""
    options = dict(rounds=1, clients_per_round=4, clip_norm=0.3, server_momentum=0.0, select="last")
    ftrl, _ = run_method(tmp_path / "ftrl", ftrl=True, **options)
    fedavg, _ = run_method(tmp_path / "fedavg", **options)  # q = 4/4 = 1: every client, one round

    from test_dp_fedavg import weights_of

    np.testing.assert_allclose(weights_of(ftrl.path), weights_of(fedavg.path), atol=1e-7)


def test_it_cites_its_paper_and_declares_a_tree():
    from dpbench.api import MethodData

    spec = DpFtrl().mechanism(MethodData(clients={"a": ("x",)}))
    assert (spec.kind, spec.sampling_rate) == ("tree_aggregation", 1.0)
    assert "Kairouz, Peter and McMahan, Brendan" in DpFtrl.citation and "2103.00039" in DpFtrl.citation


def test_the_audit_covers_the_whole_tree_and_stays_within_the_claim():
    from dpbench.privacy.audit import run_audit
    from dpbench_dpfedavg.config import DpFtrlOptions

    mechanism = DpFtrl(DpFtrlOptions(clip_norm=0.3)).audit_mechanism()
    assert (mechanism.kind, mechanism.rounds, mechanism.clip_norm) == ("tree_aggregation", 7, 0.3)
    result = run_audit(mechanism, trials=2000, seed=2)
    assert not result.violated and 0 < result.epsilon_lower_bound


def test_a_restarting_dp_ftrl_audits_a_restarted_release():
    from dpbench.api import MethodData
    from dpbench_dpfedavg.config import DpFtrlOptions

    method = DpFtrl(DpFtrlOptions(rounds=10, rounds_per_tree=5))
    assert method.mechanism(MethodData(clients={"a": ("x",)})).tree_sizes() == (5, 5)
    mechanism = method.audit_mechanism()
    assert (mechanism.rounds, mechanism.rounds_per_tree) == (8, 4)
