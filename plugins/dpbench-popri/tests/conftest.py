"""POPri's whole loop in seconds on dpbench's tiny random-init chat Llama and hashing embedder
(the ``tiny_llama`` and ``hashing_embedder`` fixtures of dpbench's pytest plugin)."""

from __future__ import annotations

import pytest


@pytest.fixture
def popri_plugin():
    import dpbench_popri
    from dpbench.plugins import pm, registered

    if pm.get_plugin("popri") is None:
        with registered(dpbench_popri, name="popri"):
            yield
    else:
        yield
