"""Tests never see installed plugins; test plugins are registered in fixtures (``toy_plugin``
and the others from ``dpbench.testing.pytest_plugin``) and removed after."""

from __future__ import annotations

import os
import sys


def pytest_configure(config):
    sys._called_from_test = True
    os.environ["WANDB_MODE"] = "disabled"
    os.environ.setdefault("TQDM_DISABLE", "1")


def pytest_unconfigure(config):
    del sys._called_from_test
