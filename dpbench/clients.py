"""The client runtimes' shared mechanics, and the in-process runtime (see ``dpbench.api.clients``)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from dpbench.api.clients import ClientInputs
from dpbench.errors import DpbenchError


def load_step(step: str) -> Callable[..., np.ndarray]:
    """The function named ``"module:function"``."""
    module, _, name = step.partition(":")
    try:
        function = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise DpbenchError(f"client step {step!r} cannot be imported ({err}); name it as 'module:function'") from err
    if not callable(function):
        raise DpbenchError(f"client step {step!r} is not a function")
    return function


def client_configs(clients: Sequence[str], config: Mapping[str, Any] | None,
                   client_config: Mapping[str, Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """Each client's settings: the shared ``config`` updated with its own entry of ``client_config``."""
    own = client_config or {}
    return [{**(config or {}), **own.get(cid, {})} for cid in clients]


def unplaced(name: str, placed) -> DpbenchError:
    """The error for a step reading inputs ``name`` that were never placed."""
    return DpbenchError(f"no client inputs named {name!r} were placed (placed: {', '.join(placed) or 'none'})")


def checked_rows(step: str, rows, count: int) -> np.ndarray:
    """``rows`` as a (count, d) float array, or an error naming the step."""
    rows = np.asarray(rows, dtype=np.float64)
    if rows.ndim != 2 or len(rows) != count:
        raise DpbenchError(f"client step {step!r} returned shape {rows.shape} for {count} clients; "
                           "it must return one row per client")
    return rows


def of_width(step: str, batches: Iterator[np.ndarray], width: int | None) -> Iterator[np.ndarray]:
    """``batches`` with every row's length checked against ``width``, and one (0, width)
    array if there are none (an empty cohort); unchanged when ``width`` is None."""
    empty = True
    for rows in batches:
        if width is not None and rows.shape[1] != width:
            raise DpbenchError(f"client step {step!r} returned rows of length {rows.shape[1]}; "
                               f"the method expects {width}")
        empty = False
        yield rows
    if empty and width is not None:
        yield np.zeros((0, width))


class InProcessClients:
    """The default runtime: steps called in this process, on batches of clients."""

    def __init__(self):
        self._inputs: dict[str, dict[str, ClientInputs]] = {}

    def place(self, name: str, inputs: Mapping[str, ClientInputs]) -> None:
        self._inputs[name] = dict(inputs)

    def rows(self, step, clients, *, inputs, payload=None, config=None, client_config=None, batch=1, width=None):
        return of_width(step, self._batches(step, clients, inputs, payload, config, client_config, batch), width)

    def _batches(self, step, clients, inputs, payload, config, client_config, batch):
        function, held = load_step(step), self._held(inputs)
        configs = client_configs(clients, config, client_config)
        for start in range(0, len(clients), max(1, batch)):
            part = clients[start:start + max(1, batch)]
            missing = [cid for cid in part if cid not in held]
            if missing:
                raise DpbenchError(f"client {missing[0]!r} has no inputs named {inputs!r}")
            yield checked_rows(step, function([held[cid] for cid in part], dict(payload or {}),
                                              configs[start:start + len(part)]), len(part))

    def _held(self, name: str) -> dict[str, ClientInputs]:
        if name not in self._inputs:
            raise unplaced(name, self._inputs)
        return self._inputs[name]
