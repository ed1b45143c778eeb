"""Flower as the client runtime (``runtime: flower``): every client a Flower node, every step a message.

``FlowerClients.execute(work)`` runs ``work`` (the method's ``run``) as the ``main`` of a Flower
``ServerApp`` on Flower's simulation engine: one virtual SuperNode per client of the run, its
``ClientApp`` (``CLIENT_APP``) in a Ray actor. Node ``partition-id`` i is the run's i-th client
in sorted order; a first ``whoami`` query maps node ids to clients. Each ``rows`` call sends
the cohort's clients one ``query`` message each (the step's name, the round's payload as an
``ArrayRecord``, the client's settings) and returns their rows in cohort order. What a node
reads as its private inputs was placed in a temporary folder for the run (deleted at its end);
a node started with ``--node-config "partition-id=i inputs='<folder>'"`` reads its own.

On Flower's deployment engine (a SuperLink and SuperNodes as processes of their own),
``flwr run`` on the app in ``APP_DIR`` starts ``SERVER_APP``, which runs one run of a suite
(its run config names the suite, runs folder and run id) with the SuperLink's nodes as the
run's clients; every node runs ``CLIENT_APP`` with ``--node-config "partition-id=<i>"``.

Flower carries messages only: no Flower strategy, sampler or DP wrapper is used. The method
hands the rows to the privacy session exactly as in process, so with the same per-client
arithmetic the ledger is the same (docs/federation.md).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp

from dpbench.clients import checked_rows, client_configs, load_step
from dpbench.errors import DpbenchError

T = TypeVar("T")
APP_DIR = Path(__file__).parent / "flower_app"
"""the Flower app (``pyproject.toml`` only) that ``flwr run`` submits to a SuperLink"""
MESSAGE_TYPE = "query"
CONNECT_TIMEOUT_S = 300.0
"""how long the server waits for every client's node to join"""


_deployment_grid = None  # the SuperLink's grid while SERVER_APP serves a run


def serve_run(grid, config: dict) -> None:
    """Run ``config["run"]`` of the suite ``config["suite"]`` (with ``config["overrides"]``,
    space-separated, into ``config["runs-dir"]``) with ``grid``'s nodes as its clients."""
    import shlex

    from dpbench.errors import did_you_mean
    from dpbench.runner import Runner
    from dpbench.suite import load_suite

    global _deployment_grid
    suite = load_suite(config["suite"], shlex.split(str(config.get("overrides", ""))),
                       runs_dir=config.get("runs-dir") or None)
    runs = {spec.run_id: spec for spec in suite.runs}
    spec = runs.get(config.get("run", ""))
    if spec is None:
        raise DpbenchError(f"run {config.get('run')!r} is not in {config['suite']}; its runs: {', '.join(runs)}."
                           + did_you_mean(str(config.get("run")), list(runs)))
    if spec.runtime != "flower":
        raise DpbenchError(f"run {spec.run_id} has runtime {spec.runtime!r}; a Flower deployment serves "
                           "runtime: flower")
    _deployment_grid = grid
    try:
        report = Runner(suite, runs=[spec]).run()
    finally:
        _deployment_grid = None
    if report.failed:
        raise DpbenchError(f"run {spec.run_id} failed: {report.failed}")


def answer(message, context):
    """One node's reply: its partition id, or its row of the named step."""
    settings = message.content["config"]
    index = int(context.node_config["partition-id"])
    if settings["op"] == "whoami":
        return Message(RecordDict({"config": ConfigRecord({"index": index})}), reply_to=message)
    folder = Path(str(context.node_config.get("inputs") or settings["folder"])) / str(settings["inputs"])
    with np.load(folder / f"{index}.npz") as held:
        inputs = {key: held[key] for key in held.files}
    payload = {key: array.numpy() for key, array in message.content["payload"].items()}
    if int(settings["threads"]):
        import torch

        torch.set_num_threads(int(settings["threads"]))
    step = str(settings["step"])
    row = checked_rows(step, load_step(step)([inputs], payload, [json.loads(str(settings["client"]))]), 1)[0]
    return Message(RecordDict({"row": ArrayRecord({"row": Array(row)})}), reply_to=message)


def _serve(grid, context) -> None:
    serve_run(grid, dict(context.run_config))


SERVER_APP = ServerApp()
"""the ServerApp of the deployment engine: serves the run its run config names"""
SERVER_APP.main()(_serve)
CLIENT_APP = ClientApp()
"""the ClientApp every node runs: answers ``whoami`` and step messages"""
CLIENT_APP.query()(answer)


class FlowerClients:
    """The ``flower`` client runtime of one method run over ``population`` (client ids)."""

    def __init__(self, population: Sequence[str], *, threads: int = 0):
        self.population = sorted(population)
        self.threads = threads  # torch threads per client call (the run's own); 0: the node's default
        cores = os.cpu_count() or 1
        self.parallel = max(1, cores // max(1, threads))  # client calls at once (Ray actors)
        self._index = {cid: i for i, cid in enumerate(self.population)}
        self._grid = None
        self._nodes: dict[int, int] = {}  # client index -> node id
        self._folder: Path | None = None

    def execute(self, work: Callable[[], T]) -> T:
        """``work()`` with the deployment's nodes as the clients when ``SERVER_APP`` serves this
        run, else as the ServerApp of a simulation with one node per client; its result."""
        if _deployment_grid is not None:
            with tempfile.TemporaryDirectory(prefix="dpbench-clients-") as folder:
                self._folder, self._grid = Path(folder), _deployment_grid
                try:
                    self._nodes = self._connect(self._grid)
                    return work()
                finally:
                    self._grid, self._folder = None, None
        from flwr.simulation import run_simulation

        os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
        result: dict[str, T] = {}
        server = ServerApp()

        @server.main()
        def main(grid, context):
            self._grid = grid
            self._nodes = self._connect(grid)
            result["value"] = work()

        flower_log = logging.getLogger("flwr")
        level = flower_log.level
        flower_log.setLevel(logging.ERROR)  # Flower's banners and run_simulation's deprecation notice
        silent = logging.NullHandler()  # a root handler, so a library's bare logging.info() cannot basicConfig
        logging.root.addHandler(silent)  # a second, unformatted copy of every log line onto stderr
        try:
            with tempfile.TemporaryDirectory(prefix="dpbench-clients-") as folder:
                self._folder = Path(folder)
                run_simulation(server, CLIENT_APP, num_supernodes=len(self.population), backend_config={
                    "client_resources": {"num_cpus": max(1, self.threads), "num_gpus": 0},
                    "init_args": {"num_cpus": os.cpu_count() or 1, "include_dashboard": False}})
        finally:
            logging.root.removeHandler(silent)
            flower_log.setLevel(level)
            self._grid, self._folder = None, None
        if "value" not in result:
            raise DpbenchError("the Flower simulation ended before the method finished (see its log above)")
        return result["value"]

    def place(self, name, inputs) -> None:
        folder = self._require_folder() / name
        folder.mkdir(parents=True, exist_ok=True)
        for cid, arrays in inputs.items():
            if cid not in self._index:
                raise DpbenchError(f"client {cid!r} is not one of this run's {len(self.population)} clients")
            np.savez(folder / f"{self._index[cid]}.npz", **arrays)

    def rows(self, step, clients, *, inputs, payload=None, config=None, client_config=None, batch=1):
        configs = client_configs(clients, config, client_config)
        arrays = {key: Array(np.ascontiguousarray(value)) for key, value in (payload or {}).items()}
        chunk = max(batch, self.parallel)
        for start in range(0, len(clients), chunk):
            part = clients[start:start + chunk]
            messages = {}
            for cid, settings in zip(part, configs[start:start + len(part)], strict=True):
                if cid not in self._index:
                    raise DpbenchError(f"client {cid!r} is not one of this run's {len(self.population)} clients")
                node = self._nodes[self._index[cid]]
                content = RecordDict({
                    "config": ConfigRecord({"op": "step", "step": step, "inputs": inputs,
                                            "folder": str(self._require_folder()), "threads": self.threads,
                                            "client": json.dumps(settings)}),
                    "payload": ArrayRecord(dict(arrays))})
                messages[node] = Message(content, dst_node_id=node, message_type=MESSAGE_TYPE)
            replies = {reply.metadata.src_node_id: reply for reply in self._grid.send_and_receive(messages.values())}
            rows = []
            for cid, node in zip(part, messages, strict=True):
                reply = replies.get(node)
                if reply is None or reply.has_error():
                    reason = reply.error.reason if reply is not None else "no reply"
                    raise DpbenchError(f"client {cid!r} failed step {step!r} on its Flower node: {reason}")
                rows.append(reply.content["row"]["row"].numpy())
            rows = np.vstack(rows)
            for offset in range(0, len(rows), max(1, batch)):
                yield rows[offset:offset + max(1, batch)]

    def _connect(self, grid) -> dict[int, int]:
        """Wait for every client's node, then ask each which client it is."""
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        nodes = list(grid.get_node_ids())
        while len(nodes) < len(self.population):
            if time.monotonic() > deadline:
                raise DpbenchError(f"only {len(nodes)} of {len(self.population)} Flower nodes joined in "
                                   f"{CONNECT_TIMEOUT_S:.0f} s")
            time.sleep(0.1)
            nodes = list(grid.get_node_ids())
        replies = grid.send_and_receive(
            [Message(RecordDict({"config": ConfigRecord({"op": "whoami"})}), dst_node_id=node,
                     message_type=MESSAGE_TYPE) for node in nodes])
        found = {int(reply.content["config"]["index"]): reply.metadata.src_node_id for reply in replies
                 if not reply.has_error()}
        missing = sorted(set(range(len(self.population))) - set(found))
        if missing:
            raise DpbenchError(f"no Flower node answered for client {self.population[missing[0]]!r} "
                               f"(partition-id {missing[0]})")
        return found

    def _require_folder(self) -> Path:
        if self._folder is None:
            raise DpbenchError("the Flower runtime places inputs and runs steps only inside execute()")
        return self._folder
