"""The environment a run happened in: versions, git commit, machine."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path

PACKAGES = (
    "dpbench", "torch", "transformers", "trl", "peft", "accelerate", "sentence-transformers",
    "dp-accounting", "opacus", "flwr", "vllm", "numpy", "datasets", "tokenizers", "hydra-core",
    "pluggy", "wandb",
)


def package_versions(names=PACKAGES) -> dict[str, str]:
    """Installed versions, read from metadata without importing anything."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def git_commit(folder: Path | None = None) -> dict[str, object]:
    """The commit of the checkout dpbench runs from, and whether it had uncommitted changes."""
    folder = folder or Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=5)
        if head.returncode != 0:
            return {}
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder,
                               capture_output=True, text=True, timeout=5)
        return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {}


def environment() -> dict[str, object]:
    """What a run's numbers may depend on besides its config: versions, the CPU (bf16 support),
    and the intra-op threads (a different count changes float sums in the last digits)."""
    import torch

    from dpbench.models.precision import cpuinfo, native_bf16
    from dpbench.plugins import get_plugins

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu": cpuinfo().get("model name"),
        "native_bf16_cpu": native_bf16("cpu"),
        "intra_op_threads": torch.get_num_threads(),
        "packages": package_versions(),
        "git": git_commit(),
        "plugins": {p["name"]: p["version"] for p in get_plugins()},
        "argv": sys.argv,
    }
