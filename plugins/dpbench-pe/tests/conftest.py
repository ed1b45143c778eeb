"""PE's whole loop in seconds on dpbench's tiny random-init chat Llama and hashing embedder
(the ``tiny_llama`` and ``hashing_embedder`` fixtures of dpbench's pytest plugin)."""

from __future__ import annotations

import pytest


@pytest.fixture
def pe_plugin():
    import dpbench_pe
    from dpbench.plugins import pm, registered

    if pm.get_plugin("pe") is None:
        with registered(dpbench_pe, name="pe"):
            yield
    else:
        yield
