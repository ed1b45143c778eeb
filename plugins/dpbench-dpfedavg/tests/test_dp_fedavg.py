"""DP-FedAvg: options, the server update, noise-only rounds, resume, and the returned model."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest

import dpbench_dpfedavg.method as method_module
from dpbench.api import MethodData, build_config
from dpbench.errors import ConfigError
from dpbench_dpfedavg.config import DpFedAvgOptions
from dpbench_dpfedavg.method import DpFedAvg, flat


def weights_of(folder) -> np.ndarray:
    from transformers import AutoModelForCausalLM

    return flat(list(AutoModelForCausalLM.from_pretrained(str(folder)).parameters())).double().numpy()


def clip(row: np.ndarray, c: float) -> np.ndarray:
    return row * min(1.0, c / np.linalg.norm(row))


def ledger_keys(run_dir) -> list[str]:
    return [json.loads(line)["key"] for line in (run_dir / "ledger.jsonl").read_text().splitlines()]


def test_options_errors_name_the_field_and_rate_is_expected_cohort_over_clients():
    with pytest.raises(ConfigError) as err:
        build_config(DpFedAvgOptions, {"clip_norm": 0}, where="methods.dp_fedavg")
    assert err.value.field == "methods.dp_fedavg.clip_norm"
    with pytest.raises(ConfigError) as err:
        build_config(DpFedAvgOptions, {"server_momentum": 1.0}, where="methods.dp_fedavg")
    assert err.value.field == "methods.dp_fedavg.server_momentum"
    with pytest.raises(ConfigError, match="best_validation"):
        DpFedAvgOptions(select="best")

    data = MethodData(clients={f"c{k}": ("text",) for k in range(40)})
    assert DpFedAvg(DpFedAvgOptions(rounds=7, clients_per_round=10)).mechanism(data).sampling_rate == 0.25
    assert DpFedAvg(DpFedAvgOptions(clients_per_round=100)).mechanism(data).sampling_rate == 1.0


def test_update_is_sum_of_clipped_deltas_over_expected_cohort(run_method, tiny_gpt2, tmp_path, monkeypatch):
    """Noise-free round: θ1 − θ0 = Σ clip(Δ_k) / m̃ with m̃ = qN = 2 although 3 clients took
    part, and a client with a 1000x delta counts for exactly C."""
    real, deltas, cohort = method_module.local_update, [], []

    def huge_first_client(model, weights, encoded, **kw):
        local = real(model, weights, encoded, **kw)
        if not deltas:
            local = weights + 1000 * (local - weights)
        deltas.append((local - weights).double().numpy())
        return local

    monkeypatch.setattr(method_module, "local_update", huge_first_client)
    options = dict(rounds=1, clients_per_round=2, clip_norm=0.3, local_lr=0.05, server_momentum=0.0, server_lr=1.0)

    def record(session):
        cohort.extend(session.cohort(0))

    seed = next(s for s in range(50) if _cohort_size(tmp_path / f"probe{s}", s) == 3)
    artifact, _ = run_method(tmp_path / "run", seed=seed, session_hook=record, **options)

    assert len(deltas) == len(cohort) == 3
    assert np.linalg.norm(deltas[0]) > 100 * 0.3
    assert any(np.linalg.norm(d) < 0.3 for d in deltas[1:])  # some rows pass unclipped
    update = weights_of(artifact.path) - weights_of(tiny_gpt2)
    expected = sum(clip(d, 0.3) for d in deltas) / 2
    np.testing.assert_allclose(update, expected, atol=2e-7)
    assert np.linalg.norm(update) <= 3 * 0.3 / 2 + 1e-6


def _cohort_size(run_dir, seed: int) -> int:
    from dpbench.api import MechanismSpec, PrivacyBudget
    from dpbench.privacy import open_session

    session = open_session(MechanismSpec(rounds=1, sampling_rate=0.5), noise_multiplier=0.0,
                           budget=PrivacyBudget(epsilon=math.inf, delta=1e-5), run_dir=run_dir,
                           clients=["c0", "c1", "c2", "c3"], seed=seed)
    return len(session.cohort(0))


def test_round_without_participants_releases_noise_only(run_method, tiny_gpt2, tmp_path, monkeypatch):
    from dpbench.privacy import gaussian_noise, noise_generator

    def no_training(*args, **kwargs):
        raise AssertionError("nobody was sampled: no client may train")

    def nobody(session):
        monkeypatch.setattr(session, "cohort", lambda round_index: [])

    monkeypatch.setattr(method_module, "local_update", no_training)
    artifact, _ = run_method(tmp_path, seed=3, noise_multiplier=1.5, session_hook=nobody, rounds=1,
                             clients_per_round=2, clip_norm=0.2, server_momentum=0.5, server_lr=0.7)
    before = weights_of(tiny_gpt2)
    noise = gaussian_noise(noise_generator(3, "dp-fedavg-round-0"), std=1.5 * 0.2, shape=before.shape)
    np.testing.assert_allclose(weights_of(artifact.path) - before, 0.7 * noise / 2, atol=1e-6)
    assert ledger_keys(tmp_path) == ["dp-fedavg-round-0"]


@pytest.mark.parametrize("killed_in", ["training", "validation"])
def test_killed_run_resumes_to_the_same_weights(run_method, tmp_path, monkeypatch, killed_in):
    """A kill in round 1 before its release (training) or after it (validation): the rerun
    starts at round 1, replays a ledgered release without training, and ends where an
    uninterrupted run ends; the ledger holds each round once."""
    from dpbench.evaluation import lm

    options = dict(rounds=2, clients_per_round=4, local_lr=0.1, clip_norm=0.5, server_momentum=0.9)
    whole, _ = run_method(tmp_path / "whole", noise_multiplier=0.8, **options)

    real_update, real_score, calls = method_module.local_update, lm.score, {"train": 0, "score": 0}

    def update(*args, **kwargs):
        calls["train"] += 1
        if killed_in == "training" and calls["train"] == 6:  # second client of round 1
            raise KeyboardInterrupt
        return real_update(*args, **kwargs)

    def score(*args, **kwargs):
        calls["score"] += 1
        if killed_in == "validation" and calls["score"] == 3:  # initial model, round 0, round 1
            raise KeyboardInterrupt
        return real_score(*args, **kwargs)

    monkeypatch.setattr(method_module, "local_update", update)
    monkeypatch.setattr(lm, "score", score)
    with pytest.raises(KeyboardInterrupt):
        run_method(tmp_path / "killed", noise_multiplier=0.8, **options)
    killed = tmp_path / "killed"
    assert ledger_keys(killed) == ["dp-fedavg-round-0"] + (["dp-fedavg-round-1"] if killed_in == "validation" else [])

    trained_before = calls["train"]
    reports = []
    resumed, _ = run_method(killed, noise_multiplier=0.8, reports=reports, **options)
    assert calls["train"] - trained_before == (4 if killed_in == "training" else 0)
    np.testing.assert_array_equal(weights_of(resumed.path), weights_of(whole.path))
    assert ledger_keys(killed) == ["dp-fedavg-round-0", "dp-fedavg-round-1"]
    history = json.loads((killed / "state" / "monitor.json").read_text())["history"]
    assert reports == [(step, {"monitor": entry}) for step, entry in enumerate(history)]  # the killed run's again


def test_best_validation_returns_the_best_checkpoint(run_method, tmp_path, fed_data):
    artifact, ctx = run_method(tmp_path, noise_multiplier=0.5, rounds=3, clients_per_round=4, local_lr=0.3,
                               clip_norm=0.5, select="best_validation")
    monitor = json.loads((ctx.checkpoint_dir / "monitor.json").read_text())
    accuracies = [h["accuracy"] for h in monitor["history"]]
    assert [h["checkpoint"] for h in monitor["history"]] == [0, 1, 2, 3]  # 0: the initial model
    assert monitor["chosen_checkpoint"] == int(np.argmax(accuracies))
    assert ledger_keys(tmp_path) == [f"dp-fedavg-round-{r}" for r in range(3)]
    assert all(p.name.endswith(".discarded") for p in (tmp_path / "releases").iterdir())  # model-sized values
    # dropped once checkpointed, each leaving a tombstone the ledger check accounts for
    assert _validation_accuracy(artifact.path, fed_data) == pytest.approx(max(accuracies))


def _validation_accuracy(folder, data) -> float:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dpbench.evaluation import lm

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder))
    encoded = lm.encode_texts(tokenizer, data.validation, model.config.n_positions)
    return lm.score(model, encoded, pad_id=tokenizer.pad_token_id)["accuracy"]


def test_trained_model_loads_with_the_evaluator_vocab_and_leaves_the_initial_model_alone(run_method, tiny_gpt2,
                                                                                        tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def digest(folder):
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}

    before = digest(tiny_gpt2)
    artifact, ctx = run_method(tmp_path, noise_multiplier=0.5, bf16=True, rounds=2, clients_per_round=3, select="last")
    assert artifact.path.parent == ctx.checkpoint_dir and (artifact.path / "config.json").is_file()
    model = AutoModelForCausalLM.from_pretrained(str(artifact.path))
    assert model.config.vocab_size == len(AutoTokenizer.from_pretrained(str(tiny_gpt2)))
    assert len(AutoTokenizer.from_pretrained(str(artifact.path))) == model.config.vocab_size
    assert not np.array_equal(weights_of(artifact.path), weights_of(tiny_gpt2))
    assert digest(tiny_gpt2) == before


@pytest.mark.e2e
def test_runner_end_to_end_with_next_token(toy_plugin, dpfedavg_plugin, tmp_path):
    """Calibration, session, TrainedModel artifact and the real next_token evaluator, tiny."""
    from dpbench.results import load_result
    from dpbench.runner import Runner
    from dpbench.suite import load_suite

    path = tmp_path / "suite.yaml"
    path.write_text("""\
description: DP-FedAvg through the runner
seeds: 1
privacy: {epsilon: [8], delta: 1e-5, accountant: rdp}
datasets:
  toy_texts: {num_clients: 12}
methods:
  dp_fedavg: {rounds: 2, clients_per_round: 6, local_batch_size: 4}
evaluators:
  next_token: {vocab_size: 300, n_layer: 1, n_embd: 32, n_head: 2, max_length: 16, pretrain_steps: 5,
               pretrain_batch_size: 8, train_steps: 1, batch_size: 4, eval_every: 1}
""")
    suite = load_suite(path, runs_dir=tmp_path / "runs")
    report = Runner(suite).run()
    assert not report.failed and len(report.completed) == 1
    result = load_result(suite.folder / suite.runs[0].run_id)
    assert [e["key"] for e in result.privacy["releases"]] == ["dp-fedavg-round-0", "dp-fedavg-round-1"]
    assert result.privacy["noise_multiplier"] > 0 and 0 < result.privacy["epsilon_spent"] <= 8
    assert 0 <= result.metrics["next_token"]["accuracy"] <= 1
    assert math.isfinite(result.metrics["next_token"]["cross_entropy"])


def test_audit_of_the_round_release_stays_within_the_claim():
    from dpbench.privacy import run_audit

    mechanism = DpFedAvg(DpFedAvgOptions(clip_norm=0.3)).audit_mechanism()
    assert mechanism.clip_norm == 0.3
    result = run_audit(mechanism, trials=400, delta=1e-5, alpha=0.05, seed=0)
    assert not result.violated and result.epsilon_lower_bound > 0


@pytest.mark.parametrize("change", ["bit flip", "sign flip"])
def test_a_checkpoint_changed_on_disk_is_refused_on_resume(run_method, tmp_path, change):
    import io

    import torch

    from dpbench.files import CheckpointError, read_sealed
    from dpbench_dpfedavg.method import STATE_FILE

    run_method(tmp_path, rounds=1, clients_per_round=4)
    path = tmp_path / "state" / STATE_FILE
    raw = bytearray(path.read_bytes())
    if change == "bit flip":
        raw[-100] ^= 0x04
        path.write_bytes(bytes(raw))
    else:  # a plausible, well-formed state with flipped weights
        state = torch.load(io.BytesIO(read_sealed(path)), weights_only=True)
        state["weights"] = -state["weights"]
        buffer = io.BytesIO()
        torch.save(state, buffer)
        header = bytes(raw).partition(b"\n")[0]
        path.write_bytes(header + b"\n" + buffer.getvalue())
    with pytest.raises(CheckpointError, match="content hash"):
        run_method(tmp_path, rounds=1, clients_per_round=4)


def test_nothing_but_the_releases_depends_on_a_client(tiny_gpt2, fed_data, tmp_path):
    """D vs D plus a canary client under the same releases: the checkpoint, monitor, log and
    returned model are equal, so no per-client delta, loss or cohort size leaves a round."""
    from dpbench.testing.leaks import check_release_only
    from dpbench_dpfedavg.config import DpFedAvgOptions
    from dpbench_dpfedavg.method import DpFedAvg

    method = DpFedAvg(DpFedAvgOptions(rounds=2, clients_per_round=10, bf16=False))  # q = 1 with or without the canary
    assert check_release_only(method, fed_data, folder=tmp_path, downstream=tiny_gpt2) == []
