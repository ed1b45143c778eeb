"""Tests never see installed plugins; test plugins are registered in fixtures and removed after."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest

TESTS = Path(__file__).parent


def pytest_configure(config):
    sys._called_from_test = True
    os.environ["WANDB_MODE"] = "disabled"
    os.environ.setdefault("TQDM_DISABLE", "1")


def pytest_unconfigure(config):
    del sys._called_from_test


@pytest.fixture
def toy_plugin(monkeypatch):
    """The toy dataset/method/evaluator plugin, registered for one test."""
    monkeypatch.syspath_prepend(str(TESTS / "plugins"))
    import toy

    from dpbench.plugins import registered

    with registered(toy, name="toy"):
        yield toy


@pytest.fixture
def toy_suite(tmp_path):
    """Write a small suite over the toy plugins and return its path."""

    def write(body: str = "", name: str = "toy") -> Path:
        path = tmp_path / f"{name}.yaml"
        path.write_text(textwrap.dedent(body) if body else DEFAULT_TOY_SUITE)
        return path

    return write


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
