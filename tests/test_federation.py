"""Client runtimes: the in-process one, and Flower's simulation engine giving the same ledger."""

import random
from types import SimpleNamespace

import numpy as np
import pytest

from dpbench.clients import InProcessClients, load_step
from dpbench.errors import ConfigError, DpbenchError
from dpbench.files import read_json
from dpbench.runner import Runner
from dpbench.suite import load_suite
from dpbench.testing.runs import ledger_lines

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


def test_rows_of_a_stated_width_are_checked_and_an_empty_cohort_still_gives_a_release():
    clients = _placed()
    assert [b.shape for b in clients.rows(STEP, ["a", "b"], inputs="words", batch=1, width=40)] == [(1, 40)] * 2
    assert [b.shape for b in clients.rows(STEP, [], inputs="words", width=40)] == [(0, 40)]
    assert list(clients.rows(STEP, [], inputs="words")) == []
    with pytest.raises(DpbenchError, match="rows of length 40; the method expects 12"):
        list(clients.rows(STEP, ["a"], inputs="words", width=12))


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


class _Grid:
    """Flower's grid as the runtime uses it, without Flower's engines: every message answered by
    ``dpbench.federation.answer`` on the node's own context, replies in shuffled order; the
    nodes in ``failing`` reply with an error, as a node whose step raised does."""

    def __init__(self, nodes: int, failing=()):
        self.contexts = {100 + i: SimpleNamespace(node_config={"partition-id": i}) for i in range(nodes)}
        self.failing = set(failing)

    def get_node_ids(self):
        return list(self.contexts)

    def send_and_receive(self, messages, *, timeout=None):
        from flwr.app import Error, Message

        from dpbench.federation import answer

        def fails(m):
            return m.metadata.dst_node_id in self.failing and m.content["config"]["op"] == "step"

        replies = [Message(Error(code=0, reason="step raised"), reply_to=m) if fails(m)
                   else answer(m, self.contexts[m.metadata.dst_node_id]) for m in messages]
        random.Random(len(replies)).shuffle(replies)
        return replies


@pytest.fixture
def flower_task(monkeypatch):
    """A Flower task identity for this process, which building a Message needs."""
    pytest.importorskip("flwr")
    from flwr.supercore.task_identity import TaskIdentity

    for name in ("_run_id", "_task_id", "_node_id"):
        monkeypatch.setattr(TaskIdentity, name, 1)


def test_flower_rows_come_back_in_cohort_order(flower_task):
    from dpbench.federation import FlowerClients

    words = {cid: {"words": np.arange(i + 1) % 40} for i, cid in enumerate(["d", "a", "c", "b"])}
    local = InProcessClients()
    local.place("words", words)
    expected = np.vstack(list(local.rows(STEP, ["d", "a", "c"], inputs="words", batch=3)))

    def work():
        clients.place("words", words)
        return ([list(clients.rows(STEP, ["d", "a", "c"], inputs="words", batch=batch)) for batch in (1, 3)]
                + [list(clients.rows(STEP, [], inputs="words", width=40))])

    clients = FlowerClients(["a", "b", "c", "d"])
    one, three, empty = clients.serve(_Grid(4), work)
    assert [b.shape[0] for b in one] == [1, 1, 1] and [b.shape[0] for b in three] == [3]
    assert [b.shape for b in empty] == [(0, 40)]
    assert np.array_equal(np.vstack(one), expected) and np.array_equal(three[0], expected)


def test_flower_runtime_refuses_and_reports(flower_task):
    from dpbench.federation import FlowerClients

    clients = FlowerClients(["a", "b"])
    with pytest.raises(DpbenchError, match="only inside execute"):
        clients.place("words", {"a": {"words": np.array([1])}})

    def work(cohort, inputs="words"):
        def run():
            clients.place("words", {"a": {"words": np.array([1])}, "b": {"words": np.array([2])}})
            return list(clients.rows(STEP, cohort, inputs=inputs, batch=2))
        return run

    with pytest.raises(DpbenchError, match="client 'z' is not one of this run's 2 clients"):
        clients.serve(_Grid(2), work(["a", "z"]))
    with pytest.raises(DpbenchError, match="no client inputs named 'votes'"):
        clients.serve(_Grid(2), work(["a"], inputs="votes"))
    with pytest.raises(DpbenchError, match="client 'b' failed step .* on its Flower node: step raised"):
        clients.serve(_Grid(2, failing={101}), work(["a", "b"]))


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
    assert len(ledger_lines(local_dir)) == 3 and ledger_lines(flower_dir) == ledger_lines(local_dir)
    sealed = [{k: v for k, v in read_json(folder / "artifact.json").items() if k != "method_s"}  # a timing
              for folder in (flower_dir, local_dir)]
    assert sealed[0] == sealed[1] and sealed[0]["sha256"]
    assert simulations == [30]  # one simulation, for the flower run, one node per client



def test_flower_needs_its_engine_and_no_ray_executor(toy_plugin, toy_suite, tmp_path, monkeypatch):
    from click.testing import CliRunner

    import dpbench.suite
    from dpbench.cli import cli

    out = CliRunner().invoke(cli, ["run", str(toy_suite()), "+runtime=flower", "--executor", "ray", "--dry-run"])
    assert out.exit_code != 0 and "--executor" in out.output and "runtime: flower" in out.output
    suite = load_suite(toy_suite(), ["+runtime=flower"], runs_dir=tmp_path / "runs")
    monkeypatch.setattr(dpbench.suite, "_import_problem", lambda module: "ModuleNotFoundError: no" if module == "ray"
                        else None)
    with pytest.raises(ConfigError, match="runtime: 'flower'.*dpbench\\[fl\\].*import ray failed"):
        dpbench.suite.check_machine(suite)


def test_a_deployment_serves_only_a_flower_run_of_its_suite(toy_plugin, toy_suite, tmp_path):
    from dpbench.federation import serve_run

    path = toy_suite()
    local = load_suite(path, runs_dir=tmp_path / "runs").runs[-1]
    flower = load_suite(path, ["+runtime=flower"], runs_dir=tmp_path / "runs").runs[-1]
    settings = {"suite": str(path), "runs-dir": str(tmp_path / "runs"), "overrides": "+runtime=flower"}
    with pytest.raises(DpbenchError, match=f"is not in .*Did you mean '{flower.run_id}'"):
        serve_run(None, {**settings, "run": flower.run_id[:-1]})
    with pytest.raises(DpbenchError, match="has runtime 'inprocess'; a Flower deployment serves runtime: flower"):
        serve_run(None, {**settings, "overrides": "", "run": local.run_id})


def test_a_node_started_with_its_own_inputs_folder_reads_it(flower_task, tmp_path):
    from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict

    from dpbench.federation import MESSAGE_TYPE, answer

    (tmp_path / "own" / "words").mkdir(parents=True)
    np.savez(tmp_path / "own" / "words" / "0.npz", words=np.array([3, 3]))
    settings = {"op": "step", "step": STEP, "inputs": "words", "folder": str(tmp_path / "server"), "threads": 0,
                "client": "{}"}
    message = Message(RecordDict({"config": ConfigRecord(settings), "payload": ArrayRecord({})}), dst_node_id=5,
                      message_type=MESSAGE_TYPE)
    node = SimpleNamespace(node_config={"partition-id": 0, "inputs": str(tmp_path / "own")})
    row = answer(message, node).content["row"]["row"].numpy()
    assert row[3] == 1.0 and row.sum() == 1.0  # its own texts, not the (absent) server folder's
