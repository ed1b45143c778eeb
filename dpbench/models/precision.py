"""Whether to compute in bfloat16: where the hardware multiplies bf16 natively, and only there.

A CPU with AVX512-BF16 or AMX (x86) or the BF16 extension (Arm) runs bf16 matrix products
several times faster than float32; without them oneDNN emulates bf16 and is several times
*slower* (on an AVX2-only CPU, 14 against 115 GFLOP/s: benchmarks/results/precision-*.json). So
every ``bf16`` option takes ``true``, ``false`` or ``auto`` (the default), and ``auto`` asks
this module.
"""

from __future__ import annotations

import functools
from pathlib import Path

NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})
CPUINFO = Path("/proc/cpuinfo")


def use_bf16(setting: bool | str, device: str) -> bool:
    """What a ``bf16`` option (``true``, ``false`` or ``auto``) means on ``device``."""
    return native_bf16(device) if setting == "auto" else bool(setting)


@functools.cache
def native_bf16(device: str) -> bool:
    """Whether ``device`` multiplies bfloat16 matrices in hardware (a CUDA GPU that supports
    bf16, or a CPU with one of ``NATIVE_BF16_FLAGS``)."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return bool(cpu_flags() & NATIVE_BF16_FLAGS)


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux lists them (empty elsewhere)."""
    info = cpuinfo()
    return frozenset((info.get("flags") or info.get("Features") or "").split())


@functools.cache
def cpuinfo() -> dict[str, str]:
    """The first processor's fields in ``CPUINFO`` (``model name``, ``flags``, ...); empty
    where there is no such file."""
    try:
        text = CPUINFO.read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields
