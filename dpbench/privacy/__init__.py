"""dpbench's shared privacy layer: accountant, calibration, noise, ledger, session and audit.

Methods declare a ``MechanismSpec``; the runner calibrates σ with ``calibrate_noise_multiplier``
and hands the method a session from ``open_session``; every noisy release goes through it and
is ledgered; ε is recomputed from ledgers with ``epsilon_from_ledger``. Names are imported on
first use, so ``dpbench --help`` never loads dp_accounting or numpy.
"""

from __future__ import annotations

import importlib

ACCOUNTANTS = ("pld", "rdp", "opacus")
DEFAULT_ACCOUNTANT = "pld"

_EXPORTS = {
    "compute_epsilon": "accountant",
    "compute_noise_multiplier": "accountant",
    "epsilon_for": "accountant",
    "calibrate_noise_multiplier": "accountant",
    "gaussian_noise": "noise",
    "noise_generator": "noise",
    "clip_rows": "noise",
    "clipped_sum": "noise",
    "noisy_clipped_sum": "noise",
    "epsilon_from_ledger": "ledger",
    "read_ledger": "ledger",
    "LedgerError": "ledger",
    "open_session": "session",
    "Session": "session",
    "BudgetExceededError": "session",
    "AuditMechanism": "audit",
    "AuditResult": "audit",
    "clipped_sum_mechanism": "audit",
    "run_audit": "audit",
}

__all__ = ["ACCOUNTANTS", "DEFAULT_ACCOUNTANT", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"dpbench.privacy.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'dpbench.privacy' has no attribute {name!r}")
