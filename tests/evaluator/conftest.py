"""A tiny corpus, tiny evaluator options and a hand-built RunContext for the evaluator tests."""

from __future__ import annotations

import logging

import pytest

from dpbench.api.context import RunContext
from dpbench.api.dataset import FederatedTextData
from dpbench.api.privacy import PrivacyBudget
from dpbench.cache import SuiteCache
from dpbench.evaluation.next_token import NextTokenOptions

ANIMALS = ["cat", "dog", "cow", "hen", "fox", "owl"]
PLACES = ["mat", "rug", "bed", "hill", "barn", "road"]


def corpus(n: int, offset: int = 0, style: str = "the") -> tuple[str, ...]:
    return tuple(
        f"{style} {ANIMALS[(i + offset) % 6]} sat on {style} {PLACES[(i * 5 + offset) % 6]} at {i % 7} o'clock"
        for i in range(n)
    )


@pytest.fixture
def tiny_data() -> FederatedTextData:
    return FederatedTextData(
        clients={f"c{k}": corpus(6, offset=k, style="a") for k in range(4)},
        validation=corpus(10, offset=11, style="a"),
        public=corpus(40, style="the"),
        test=corpus(12, offset=23, style="a"),
    )


@pytest.fixture
def tiny_options() -> NextTokenOptions:
    return NextTokenOptions(
        vocab_size=300, n_layer=1, n_embd=32, n_head=2, max_length=24, pretrain_steps=6, pretrain_batch_size=8,
        pretrain_warmup=2, train_steps=6, batch_size=4, lr=3e-3, eval_every=2, bf16=False, eval_batch_size=8,
    )


@pytest.fixture
def make_ctx(tmp_path):
    def make(seed: int = 0, cache_dir: str = "cache") -> RunContext:
        return RunContext(
            run_id=f"test-{seed}",
            seed=seed,
            output_dir=tmp_path / f"run-{seed}",
            budget=PrivacyBudget(epsilon=0, delta=1e-5),
            cache=SuiteCache(tmp_path / cache_dir),
            log=logging.getLogger("dpbench.test"),
        )

    return make
