"""A tiny random-init GPT-2 and a four-client federation: DP-FedAvg's whole loop in seconds."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest

from dpbench.api import MethodData, PrivacyBudget, RunContext
from dpbench.cache import SuiteCache
from dpbench.testing import tiny_downstream_gpt2
from dpbench.testing.pytest_plugin import installed_plugin

ANIMALS = ["cat", "dog", "cow", "hen", "fox", "owl"]
PLACES = ["mat", "rug", "bed", "hill", "barn", "road"]


def corpus(n: int, offset: int = 0, style: str = "the") -> tuple[str, ...]:
    return tuple(f"{style} {ANIMALS[(i + offset) % 6]} sat on {style} {PLACES[(i * 5 + offset) % 6]} at {i % 7}"
                 for i in range(n))


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory) -> Path:
    """dpbench's tiny downstream GPT-2 with a tokenizer for this folder's corpus (in place of
    the pytest plugin's, whose tokenizer knows the toy plugin's words)."""
    return tiny_downstream_gpt2(tmp_path_factory.mktemp("tiny-gpt2"), corpus(40) + corpus(40, style="a"))


@pytest.fixture
def fed_data() -> MethodData:
    return MethodData(clients={f"c{k}": corpus(5, offset=k, style="a") for k in range(4)},
                      validation=corpus(8, offset=11, style="a"), public=corpus(20))


@pytest.fixture
def run_method(tiny_gpt2, fed_data):
    """``run_method(run_dir, seed=..., noise_multiplier=..., **options)`` runs DP-FedAvg (with
    ``ftrl=True``: DP-FTRL) on ``fed_data`` through a real privacy session on ``run_dir`` (a
    fresh session each call, as after a restart) and returns the artifact and the context;
    ``reports`` collects what the method reports (``ctx.report``)."""
    from dpbench.privacy import open_session
    from dpbench_dpfedavg.config import DpFedAvgOptions, DpFtrlOptions
    from dpbench_dpfedavg.method import DpFedAvg, DpFtrl

    def run(run_dir: Path, *, seed: int = 0, noise_multiplier: float = 0.0, session_hook=None, ftrl=False,
            reports: list | None = None, **options):
        cls, options_cls = (DpFtrl, DpFtrlOptions) if ftrl else (DpFedAvg, DpFedAvgOptions)
        method = cls(options_cls(**{"bf16": False, **options}))
        budget = PrivacyBudget(epsilon=math.inf, delta=1e-5)
        session = open_session(method.mechanism(fed_data), noise_multiplier=noise_multiplier, budget=budget,
                               run_dir=run_dir, clients=sorted(fed_data.clients), seed=seed, accountant="rdp")
        if session_hook is not None:
            session_hook(session)
        ctx = RunContext(run_id="test", seed=seed, output_dir=run_dir, budget=budget,
                         cache=SuiteCache(run_dir / "cache"), privacy=session, log=logging.getLogger("dpbench.test"),
                         downstream_model=tiny_gpt2,
                         reporter=None if reports is None else lambda step, entry: reports.append((step, entry)))
        return method.run(fed_data, ctx), ctx

    return run


dpfedavg_plugin = installed_plugin("dpbench_dpfedavg", "dp_fedavg")
