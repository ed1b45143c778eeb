"""Flower as the client runtime (``runtime: flower``): every client a Flower node, every step a message.

``FlowerClients.execute(work)`` runs ``work`` (the method's ``run``) as the ``main`` of a
``ServerApp`` on Flower's simulation engine (one node per client, ``CLIENT_APP`` in Ray
actors) or, under the deployment engine, inside ``SERVER_APP``, which ``flwr run`` starts on a
SuperLink for the one run its run config names. Flower carries messages only: the method hands
the rows to the privacy session as in process (docs/federation.md).
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")  # read when flwr is imported; nothing leaves the machine
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp

from dpbench.clients import checked_rows, client_configs, load_step, of_width, unplaced
from dpbench.errors import DpbenchError, did_you_mean

T = TypeVar("T")
APP_DIR = Path(__file__).parent / "flower_app"
"""the Flower app (``pyproject.toml`` only) that ``flwr run`` submits to a SuperLink"""
MESSAGE_TYPE = "query"
CONNECT_TIMEOUT_S = 300.0
"""how long the server waits for every client's node to join and say which client it is"""
STEP_TIMEOUT_S = 3600.0
"""how long the server waits for a node's row before taking the node as lost"""


_deployment_grid = None  # the SuperLink's grid while SERVER_APP serves a run


def serve_run(grid, config: dict) -> None:
    """Run ``config["run"]`` of the suite ``config["suite"]`` (with ``config["overrides"]``,
    space-separated, into ``config["runs-dir"]``) with ``grid``'s nodes as its clients."""
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
    """The ``flower`` client runtime of one method run over ``population`` (client ids).

    Nodes run one client's step at a time with the run's own torch ``threads`` (its share of
    the CPU under ``--jobs``), so the federation takes no more of the machine than the run."""

    def __init__(self, population: Sequence[str], *, threads: int = 0):
        self.population = sorted(population)
        self.threads = threads  # torch threads per client call; 0: the node's default
        self.calls = 0  # rows() calls: none means the method ran its clients' side in process
        self._index = {cid: i for i, cid in enumerate(self.population)}
        self._grid = None
        self._nodes: dict[int, int] = {}  # client index -> node id
        self._folder: Path | None = None
        self._placed: set[str] = set()

    def execute(self, work: Callable[[], T]) -> T:
        """``work()`` with the deployment's nodes as the clients when ``SERVER_APP`` serves this
        run, else as the ServerApp of a simulation with one node per client; its result."""
        if _deployment_grid is not None:
            return self.serve(_deployment_grid, work)
        from flwr.simulation import run_simulation

        # Ray would otherwise hide the GPUs from actors that declare none; the steps pick their own device
        os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
        result: dict[str, T] = {}
        server = ServerApp()

        @server.main()
        def main(grid, context):
            result["value"] = self.serve(grid, work)

        flower_log = logging.getLogger("flwr")
        level = flower_log.level
        flower_log.setLevel(logging.ERROR)  # Flower's banners and run_simulation's deprecation notice
        silent = logging.NullHandler()  # a root handler, so a library's bare logging.info() cannot basicConfig
        logging.root.addHandler(silent)  # a second, unformatted copy of every log line onto stderr
        cpus = max(1, self.threads)
        try:
            run_simulation(server, CLIENT_APP, num_supernodes=len(self.population), backend_config={
                "client_resources": {"num_cpus": cpus, "num_gpus": 0},
                "init_args": {"num_cpus": cpus, "include_dashboard": False}})
        finally:
            logging.root.removeHandler(silent)
            flower_log.setLevel(level)
        if "value" not in result:
            raise DpbenchError("the Flower simulation ended before the method finished (see its log above)")
        return result["value"]

    def serve(self, grid, work: Callable[[], T]) -> T:
        """``work()`` with ``grid``'s nodes as this run's clients (inputs in a temporary folder)."""
        with tempfile.TemporaryDirectory(prefix="dpbench-clients-") as folder:
            self._folder, self._grid = Path(folder), grid
            try:
                self._nodes = self._connect(grid)
                value = work()
            finally:
                self._grid, self._folder, self._placed = None, None, set()
        if not self.calls:
            logging.getLogger("dpbench").warning(
                "runtime: flower, but the method ran no client step through ctx.clients: its clients' side ran "
                "in process")
        return value

    def place(self, name, inputs) -> None:
        folder = self._require_folder() / name
        folder.mkdir(parents=True, exist_ok=True)
        for cid, arrays in inputs.items():
            np.savez(folder / f"{self._client_index(cid)}.npz", **arrays)
        self._placed.add(name)

    def rows(self, step, clients, *, inputs, payload=None, config=None, client_config=None, batch=1, width=None):
        return of_width(step, self._batches(step, clients, inputs, payload, config, client_config, batch), width)

    def _batches(self, step, clients, inputs, payload, config, client_config, batch):
        self.calls += 1
        if inputs not in self._placed:
            raise unplaced(inputs, self._placed)
        configs = client_configs(clients, config, client_config)
        arrays = {key: Array(np.ascontiguousarray(value)) for key, value in (payload or {}).items()}
        batch = max(1, batch)
        for start in range(0, len(clients), batch):  # a batch's messages are queued together
            part = clients[start:start + batch]
            messages = {}
            for cid, settings in zip(part, configs[start:start + len(part)], strict=True):
                node = self._nodes[self._client_index(cid)]
                content = RecordDict({
                    "config": ConfigRecord({"op": "step", "step": step, "inputs": inputs,
                                            "folder": str(self._require_folder()), "threads": self.threads,
                                            "client": json.dumps(settings)}),
                    "payload": ArrayRecord(dict(arrays))})
                messages[node] = Message(content, dst_node_id=node, message_type=MESSAGE_TYPE)
            replies = {reply.metadata.src_node_id: reply
                       for reply in self._grid.send_and_receive(messages.values(), timeout=STEP_TIMEOUT_S)}
            rows = []
            for cid, node in zip(part, messages, strict=True):
                reply = replies.get(node)
                if reply is None or reply.has_error():
                    reason = reply.error.reason if reply is not None else f"no reply in {STEP_TIMEOUT_S:.0f} s"
                    raise DpbenchError(f"client {cid!r} failed step {step!r} on its Flower node: {reason}")
                rows.append(reply.content["row"]["row"].numpy())
            yield np.vstack(rows)

    def _client_index(self, cid: str) -> int:
        if cid not in self._index:
            raise DpbenchError(f"client {cid!r} is not one of this run's {len(self.population)} clients")
        return self._index[cid]

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
                     message_type=MESSAGE_TYPE) for node in nodes], timeout=CONNECT_TIMEOUT_S)
        found = {int(reply.content["config"]["index"]): reply.metadata.src_node_id for reply in replies
                 if not reply.has_error()}
        missing = sorted(set(range(len(self.population))) - set(found))
        if missing:
            raise DpbenchError(f"no Flower node answered for client {self.population[missing[0]]!r} "
                               f"(partition-id {missing[0]})")
        return found

    def _require_folder(self) -> Path:
        if self._folder is None:
            raise DpbenchError("the Flower runtime places inputs and runs steps only inside execute() or serve()")
        return self._folder
