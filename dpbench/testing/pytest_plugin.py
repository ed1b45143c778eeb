"""dpbench's pytest plugin: fixtures for tests of dpbench and of method plugins.

Installing dpbench registers it (entry point ``pytest11: dpbench``), so a plugin's tests use
``toy_plugin``, ``toy_suite``, ``toy_plugins_dir``, ``tiny_llama``, ``tiny_gpt2``,
``hashing_embedder``, ``generation_calls`` and ``reported`` without a ``conftest.py``; ``installed_plugin``
makes a fixture that registers the plugin under test. It is inert for other projects: no hooks, no
autouse fixtures, and nothing heavier than pytest is imported until a fixture is used.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

DEFAULT_TOY_SUITE = """\
description: toy suite for harness tests
seeds: 2
privacy:
  epsilon: [1, 8]
  delta: 1e-5
  accountant: rdp
datasets:
  toy_texts: {num_clients: 30}
methods:
  public_only: {}
  nonprivate: {}
  noisy_unigram: {rounds: 3}
evaluators:
  next_word: {}
"""


@pytest.fixture
def toy_plugin(monkeypatch):
    """The toy dataset/method/evaluator plugin (``dpbench.testing.toy``), registered for one
    test. As in dpbench's own tests, installed plugins stay unloaded when this is the first use
    of the plugin manager, so what else is installed cannot change the test."""
    monkeypatch.setattr(sys, "_called_from_test", True, raising=False)
    from dpbench.plugins import registered
    from dpbench.testing import toy

    with registered(toy, name="toy"):
        yield toy


@pytest.fixture
def toy_suite(tmp_path):
    """``write(body="", name="toy")`` writes a suite (default: two seeds, ε 1 and 8, the two
    references and ``noisy_unigram`` on ``toy_texts``) and returns its path."""

    def write(body: str = "", name: str = "toy") -> Path:
        path = tmp_path / f"{name}.yaml"
        path.write_text(textwrap.dedent(body) if body else DEFAULT_TOY_SUITE)
        return path

    return write


@pytest.fixture(scope="session")
def toy_plugins_dir(tmp_path_factory) -> Path:
    """A folder for ``dpbench --plugins-dir`` that registers the toy plugin, for command-line
    tests in a subprocess."""
    folder = tmp_path_factory.mktemp("toy-plugins")
    (folder / "toy.py").write_text(
        "from dpbench.testing.toy import register_datasets, register_evaluators, register_methods  # noqa: F401\n")
    return folder


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    """The folder of a ``dpbench.testing.tiny_chat_llama``, built once per test session."""
    from dpbench.testing import tiny_chat_llama

    return tiny_chat_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory) -> Path:
    """The folder of a ``dpbench.testing.tiny_downstream_gpt2`` for the toy plugin's words: the
    ``downstream`` of a method that returns a ``TrainedModel``; built once per test session."""
    from dpbench.testing import tiny_downstream_gpt2

    return tiny_downstream_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture
def hashing_embedder(monkeypatch):
    """``HashingEmbedder`` in place of the sentence-transformers embedder, for one test."""
    import dpbench.models.embedding as embedding
    from dpbench.testing import HashingEmbedder

    monkeypatch.setattr(embedding, "Embedder", HashingEmbedder)
    return HashingEmbedder


@pytest.fixture
def generation_calls(monkeypatch) -> list[dict]:
    """Every ``TransformersGenerator.generate`` call of one test, as ``{"n": prompts,
    "adapter": adapter}``: what a method generated, and from which checkpoint."""
    from dpbench.models.generation import TransformersGenerator

    calls = []
    original = TransformersGenerator.generate

    def generate(self, prompts, params, *, seed, adapter=None):
        calls.append({"n": len(prompts), "adapter": adapter})
        return original(self, prompts, params, seed=seed, adapter=adapter)

    monkeypatch.setattr(TransformersGenerator, "generate", generate)
    return calls


@pytest.fixture
def reported() -> list[tuple[str, int, dict]]:
    """Every round the runs of one test report to publishers (the ``run_progress`` hook), as
    ``(run_id, step, entry)``: what a live wandb run would get."""
    from dpbench.hookspecs import hookimpl
    from dpbench.plugins import registered

    calls = []

    class Recorder:
        @hookimpl
        def run_progress(self, run, step, entry):
            calls.append((run.run_id, step, entry))

    with registered(Recorder(), name="reported"):
        yield calls


def installed_plugin(module: str, name: str):
    """A fixture registering the installed plugin ``module`` under ``name`` for one test (left
    as it is when already loaded), for a method plugin's own conftest:
    ``pe_plugin = installed_plugin("dpbench_pe", "pe")``."""

    @pytest.fixture
    def fixture():
        import importlib

        from dpbench.plugins import load_plugins, pm, registered

        load_plugins()  # entry points first, so an installed plugin is found, not registered twice
        if pm.get_plugin(name) is not None:
            yield
            return
        with registered(importlib.import_module(module), name=name):
            yield

    return fixture
