"""A tiny random-init chat Llama and a hashing embedder (``dpbench.testing``): POPri's whole loop in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest

from dpbench.testing.fixtures import hashing_embedder, tiny_llama  # noqa: F401 - fixtures

TOY_PLUGINS = Path(__file__).resolve().parents[3] / "tests" / "plugins"


@pytest.fixture
def toy_plugin(monkeypatch):
    """dpbench's toy dataset and evaluator plugin (tests/plugins/toy.py), for one test."""
    monkeypatch.syspath_prepend(str(TOY_PLUGINS))
    import toy

    from dpbench.plugins import registered

    with registered(toy, name="toy"):
        yield toy


@pytest.fixture
def popri_plugin():
    import dpbench_popri

    from dpbench.plugins import pm, registered

    if pm.get_plugin("popri") is None:
        with registered(dpbench_popri, name="popri"):
            yield
    else:
        yield
