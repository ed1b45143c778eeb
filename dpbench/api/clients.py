"""How a method's client side runs: as named steps a client runtime calls on the clients' own inputs.

A method that computes per-client contributions (POPri's scores, PE's votes, DP-FedAvg's
deltas) states each client's computation as an importable *step*, ``"module:function"``::

    step(inputs: list[dict[str, ndarray]], payload: dict[str, ndarray], configs: list[dict]) -> ndarray

one row of the result per entry of ``inputs`` (the clients' private inputs, placed once with
``place``), ``payload`` what the server broadcasts that round, ``configs`` each client's
JSON-able settings. The runtime decides where the step runs: ``inprocess`` calls it here, on
batches of clients; ``flower`` sends each client's call as a Flower message to that client's
node (``dpbench.federation``). Either way the rows come back to the method in cohort order and
go, unclipped, to ``ctx.privacy.release_clipped_sum``: the privacy session, never the runtime
or Flower, clips, sums, noises and ledgers.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

CLIENT_RUNTIMES = ("inprocess", "flower")
"""``inprocess``: steps run in the run's own process; ``flower``: each client is a Flower
node answering messages (the simulation engine; see docs/federation.md)"""

ClientInputs = Mapping[str, np.ndarray]


class ClientRuntime(Protocol):
    """Where a run's client steps execute (``ctx.clients``)."""

    def place(self, name: str, inputs: Mapping[str, ClientInputs]) -> None:
        """Give each client (by id) its private arrays, under ``name``, for later steps; once per run."""

    def rows(self, step: str, clients: Sequence[str], *, inputs: str, payload: Mapping[str, np.ndarray] | None = None,
             config: Mapping[str, Any] | None = None, client_config: Mapping[str, Mapping[str, Any]] | None = None,
             batch: int = 1, width: int | None = None) -> Iterator[np.ndarray]:
        """``step``'s rows for ``clients``, in that order, as arrays of up to ``batch`` rows
        (``batch`` bounds memory; a federated runtime computes every client on its own).
        ``width``: the rows' length, checked; with it an empty cohort yields one (0, width)
        array, which is what ``release_clipped_sum`` takes when nobody takes part."""
