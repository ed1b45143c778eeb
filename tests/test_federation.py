"""Client runtimes: the in-process one, and Flower's simulation engine giving the same ledger."""

import json

import numpy as np
import pytest

from dpbench.clients import InProcessClients, load_step
from dpbench.errors import ConfigError, DpbenchError
from dpbench.files import read_json
from dpbench.runner import Runner
from dpbench.suite import load_suite

STEP = "dpbench.testing.toy:word_frequencies"


def _placed():
    clients = InProcessClients()
    clients.place("words", {"a": {"words": np.array([0, 0, 1])}, "b": {"words": np.array([2])},
                            "c": {"words": np.array([], dtype=np.int64)}})
    return clients


def test_in_process_rows_come_in_cohort_order_and_batches():
    clients = _placed()
    batches = list(clients.rows(STEP, ["c", "b", "a"], inputs="words", batch=2))
    assert [b.shape[0] for b in batches] == [2, 1]
    rows = np.vstack(batches)
    assert np.array_equal(rows[0], np.zeros(40))  # an empty client gives the zero row
    assert rows[1, 2] == 1.0 and np.isclose(rows[2, 0], 2 / np.sqrt(5))
    assert np.array_equal(rows, np.vstack(list(clients.rows(STEP, ["c", "b", "a"], inputs="words", batch=3))))


def test_in_process_rows_refuse_what_was_not_placed():
    clients = _placed()
    with pytest.raises(DpbenchError, match="no client inputs named 'votes'.*placed: words"):
        list(clients.rows(STEP, ["a"], inputs="votes"))
    with pytest.raises(DpbenchError, match="client 'z' has no inputs named 'words'"):
        list(clients.rows(STEP, ["a", "z"], inputs="words", batch=2))


def test_client_configs_merge_and_row_counts_are_checked(monkeypatch):
    clients = _placed()
    seen = []

    def step(inputs, payload, configs):
        seen.extend(configs)
        return np.ones((len(inputs) + configs[0].get("extra", 0), 2))

    monkeypatch.setattr("dpbench.testing.toy.probe_step", step, raising=False)
    list(clients.rows("dpbench.testing.toy:probe_step", ["a", "b"], inputs="words", config={"k": 1},
                      client_config={"b": {"seed": 7}}))
    assert seen == [{"k": 1}, {"k": 1, "seed": 7}]
    with pytest.raises(DpbenchError, match="returned shape \\(3, 2\\) for 2 clients"):
        list(clients.rows("dpbench.testing.toy:probe_step", ["a", "b"], inputs="words", config={"extra": 1},
                          batch=2))


@pytest.mark.parametrize("name", ["dpbench.testing.toy:nothing", "no_such_module:f", "dpbench.testing.toy"])
def test_steps_must_be_importable_functions(name):
    with pytest.raises(DpbenchError, match="cannot be imported"):
        load_step(name)


def test_an_unknown_runtime_is_refused_by_name(toy_plugin, toy_suite, tmp_path):
    with pytest.raises(ConfigError, match="runtime.*inprocess, flower.*Did you mean 'flower'"):
        load_suite(toy_suite(), ["+runtime=flowr"], runs_dir=tmp_path / "runs")


def _ledger(folder):
    """The ledger without its timestamps."""
    return [{k: v for k, v in json.loads(line).items() if k != "time"}
            for line in (folder / "ledger.jsonl").read_text().splitlines()]


def test_flower_simulation_gives_the_in_process_ledger(toy_plugin, toy_suite, tmp_path, monkeypatch):
    """The toy method's rounds (a cohort sampled at 0.5) on 30 Flower nodes: the same releases,
    bit for bit, and the same texts as in process; a different run id (the runtime is recorded)."""
    path = toy_suite()
    overrides = ["seeds=1", "privacy.epsilon=[8]", "~methods.public_only", "~methods.nonprivate",
                 "methods.noisy_unigram.sampling_rate=0.5"]
    import flwr.simulation

    simulations = []
    original = flwr.simulation.run_simulation

    def counted(*args, **kwargs):
        simulations.append(kwargs["num_supernodes"])
        return original(*args, **kwargs)

    monkeypatch.setattr(flwr.simulation, "run_simulation", counted)
    runs = {}
    for runtime in ("inprocess", "flower"):
        suite = load_suite(path, [*overrides, f"+runtime={runtime}"], runs_dir=tmp_path / runtime)
        report = Runner(suite).run()
        assert not report.failed, report.failed
        (spec,) = suite.runs
        runs[runtime] = (spec, suite.folder / spec.run_id)
    (local, local_dir), (flower, flower_dir) = runs["inprocess"], runs["flower"]
    assert local.run_id != flower.run_id and read_json(flower_dir / "spec.json")["runtime"] == "flower"
    assert len(_ledger(local_dir)) == 3 and _ledger(flower_dir) == _ledger(local_dir)
    assert read_json(flower_dir / "artifact.json") == read_json(local_dir / "artifact.json")
    assert simulations == [30]  # one simulation, for the flower run, one node per client

