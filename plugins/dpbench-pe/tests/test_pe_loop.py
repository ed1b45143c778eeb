"""PE's whole loop on a tiny random Llama: kept parents, ledgered iterations, resume after a kill."""

import json

import numpy as np
import pytest

from dpbench.results import load_artifact, load_result
from dpbench.runner import Runner
from dpbench.suite import load_suite

KEYS = ["pe-iteration-0", "pe-iteration-1", "pe-iteration-2"]


def _suite(tmp_path, model, selection="rank"):
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "pe_tiny.yaml"
    path.write_text(f"""
seeds: [0]
privacy: {{epsilon: 4, delta: 1e-5, accountant: rdp}}
datasets: {{toy_texts: {{num_clients: 12}}}}
methods:
  pe:
    model: {model}
    iterations: 3
    synthetic_samples: 4
    variations_per_sample: 1
    selection: {selection}
    max_new_tokens: 8
    truncate_tokens: 8
    generation_batch_size: 8
evaluators: {{next_word: {{}}}}
""")
    return load_suite(path, runs_dir=tmp_path / "runs")


def _ledger(folder):
    return [json.loads(line)["key"] for line in (folder / "ledger.jsonl").read_text().splitlines()]


def test_iterations_keep_parents_and_are_ledgered(tmp_path, tiny_llama, hashing_embedder, toy_plugin, pe_plugin,
                                                  generation_calls, reported):
    suite = _suite(tmp_path, tiny_llama)
    report = Runner(suite).run()
    assert not report.failed, report.failed
    folder = suite.folder / suite.runs[0].run_id
    state = folder / "state"
    # RANDOM_API: N_syn·L = 8; then L-1 = 1 variation of each of the 4 selected, before iterations 1 and 2
    assert [c["n"] for c in generation_calls] == [8, 4, 4]
    result = load_result(folder)
    assert [e["key"] for e in result.privacy["releases"]] == KEYS
    assert 0 < result.privacy["epsilon_spent"] <= 4
    for t in (0, 1):
        candidates = json.loads((state / f"iteration{t:03d}" / "candidates.json").read_text())
        chosen = json.loads((state / f"iteration{t:03d}" / "iteration.json").read_text())["selected"]
        following = json.loads((state / f"iteration{t + 1:03d}" / "candidates.json").read_text())
        assert len(candidates) == 8 and following[:4] == [candidates[i] for i in chosen]  # selected are kept
    last = state / "iteration002"
    chosen = json.loads((last / "iteration.json").read_text())["selected"]
    candidates = json.loads((last / "candidates.json").read_text())
    assert load_artifact(folder).texts == tuple(candidates[i] for i in chosen) and len(chosen) == 4
    history = json.loads((state / "monitor.json").read_text())["history"]
    assert [h["iteration"] for h in history] == [0, 1, 2]
    assert all(np.isfinite(h["validation_centroid_cosine"]) for h in history)
    live = [(step, {k: "nan" if v != v else v for k, v in entry["monitor"].items()})  # as monitor.json keeps NaN
            for _, step, entry in reported if "monitor" in entry]
    assert live == list(enumerate(history))


def test_killed_mid_iteration_resumes_to_the_same_result(tmp_path, tiny_llama, hashing_embedder, toy_plugin,
                                                         pe_plugin, generation_calls, monkeypatch):
    import dpbench_pe.method as method

    straight = _suite(tmp_path / "a", tiny_llama, selection="sample")
    assert not Runner(straight).run().failed

    killed = _suite(tmp_path / "b", tiny_llama, selection="sample")
    original, calls = method.select, []

    def dies_after_the_second_release(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(method, "select", dies_after_the_second_release)
    generation_calls.clear()
    with pytest.raises(KeyboardInterrupt):
        Runner(killed).run()
    b = killed.folder / killed.runs[0].run_id
    assert _ledger(b) == KEYS[:2]  # iteration 1 released, then died before selecting
    assert [c["n"] for c in generation_calls] == [8, 4]
    assert not Runner(killed).run().failed
    assert [c["n"] for c in generation_calls] == [8, 4, 4]  # the rerun generated only iteration 2's variations
    assert _ledger(b) == KEYS  # each release once: iteration 1's was replayed, not redrawn

    a = straight.folder / straight.runs[0].run_id
    assert load_artifact(a).texts == load_artifact(b).texts
    assert load_result(a).privacy["epsilon_spent"] == load_result(b).privacy["epsilon_spent"]


def test_nothing_but_the_releases_depends_on_a_client(tmp_path, tiny_llama, hashing_embedder, toy_plugin):
    """D vs D plus a canary client under the same releases: every file, log line and output text is equal."""
    from dpbench.testing.leaks import check_release_only
    from dpbench_pe.config import PeOptions
    from dpbench_pe.method import PrivateEvolution

    method = PrivateEvolution(PeOptions(model=str(tiny_llama), iterations=2, synthetic_samples=4,
                                        variations_per_sample=1, max_new_tokens=8, truncate_tokens=8,
                                        generation_batch_size=8))
    data = toy_plugin.ToyTexts(toy_plugin.ToyTextsOptions(num_clients=12)).load(None).for_method()
    assert check_release_only(method, data, folder=tmp_path) == []


def test_iterations_without_participants_release_noise_only(tmp_path, tiny_llama, hashing_embedder, toy_plugin,
                                                            pe_plugin, monkeypatch):
    """An empty cohort still releases (and charges) each iteration's noise, over every candidate."""
    from dpbench.privacy.session import Session

    monkeypatch.setattr(Session, "cohort", lambda self, round_index: [])
    suite = _suite(tmp_path, tiny_llama)
    report = Runner(suite).run()
    assert not report.failed, report.failed
    folder = suite.folder / suite.runs[0].run_id
    notes = [json.loads(line) for line in (folder / "diagnostics.jsonl").read_text().splitlines()]
    assert [(n["key"], n["clients"]) for n in notes] == [(key, 0) for key in KEYS]
    assert [e["shape"] for e in load_result(folder).privacy["releases"]] == [[8]] * 3
    assert len(load_artifact(folder).texts) == 4
