"""Shared by the GPU tests: skip without CUDA, and write figures where ``DPBENCH_GPU_REPORT`` says."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest


def require_cuda():
    """``torch``, or skip the test when torch or a CUDA GPU is missing."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    return torch


def write_report(name: str, report: dict) -> None:
    """``DIR/name.json`` when ``DPBENCH_GPU_REPORT=DIR`` is set; nothing otherwise."""
    folder = os.environ.get("DPBENCH_GPU_REPORT")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / f"{name}.json").write_text(json.dumps(report, indent=1, default=str))
