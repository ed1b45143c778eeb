"""Fixtures for the dataset tests: small files in the paper's and generic record formats."""

from __future__ import annotations

import json

import pytest
from dataset_helpers import sentence

from dpbench.cache import SuiteCache


@pytest.fixture
def cache(tmp_path):
    return SuiteCache(tmp_path / "cache")


@pytest.fixture
def paper_files(tmp_path):
    """The paper's processed format: clients, evaluation list, initial (public) set."""
    clients = {f"author-{c}": [sentence(c * 10 + j) for j in range(3 + c % 3)] for c in range(12)}
    paths = {
        "client_file": tmp_path / "clients.json",
        "eval_file": tmp_path / "eval.json",
        "public_file": tmp_path / "initial.json",
    }
    paths["client_file"].write_text(json.dumps(clients))
    paths["eval_file"].write_text(json.dumps([sentence(1000 + i) for i in range(7)]))
    paths["public_file"].write_text(json.dumps([sentence(2000 + i) for i in range(5)]))
    return {k: str(v) for k, v in paths.items()}
