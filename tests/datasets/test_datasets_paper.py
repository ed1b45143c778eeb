"""``biorxiv`` / ``congressional``: the paper's processed files and the hub path (local fixture)."""

from __future__ import annotations

import json

import pytest
from dataset_helpers import sentence

from dpbench.api.config import build_config
from dpbench.builtin.datasets.common import DataError
from dpbench.builtin.datasets.paper import BiorxivDataset, BiorxivOptions, CongressionalDataset, CongressionalOptions
from dpbench.errors import ConfigError
from dpbench.plugins import get_registry


def biorxiv(**options):
    options.setdefault("tokenizer", "whitespace")
    return BiorxivDataset(build_config(BiorxivOptions, options, where="dataset"))


def test_registered():
    registry = get_registry("dataset")
    assert {"sotu", "biorxiv", "congressional", "local"} <= set(registry.names())
    assert registry.get("biorxiv") is BiorxivDataset
    assert registry.get("congressional") is CongressionalDataset


def test_paper_files(paper_files, cache):
    data = biorxiv(source="files", **paper_files).load(cache)
    assert data.test == tuple(json.load(open(paper_files["eval_file"])))
    assert data.public == tuple(json.load(open(paper_files["public_file"])))
    # test comes from the eval file, so only validation clients are held out of 12
    assert data.num_clients == 11 and len(data.validation) > 0
    assert all(cid.startswith("author-") for cid in data.clients)
    assert data.info["source"] == "files"


def test_paper_files_truncate_to_max_tokens(paper_files, cache):
    data = biorxiv(source="files", max_tokens=4, **paper_files).load(cache)
    for text in (*data.training_texts(), *data.test, *data.public, *data.validation):
        assert len(text.split()) <= 4


def test_files_source_requires_client_file():
    with pytest.raises(ConfigError, match="client_file"):
        biorxiv(source="files")


def test_missing_file_names_option_and_path(paper_files, tmp_path):
    missing = str(tmp_path / "nope.json")
    with pytest.raises(DataError, match=r"eval_file: file not found: .*nope\.json"):
        biorxiv(source="files", **(paper_files | {"eval_file": missing})).load(None)


def test_empty_client_names_file_and_client(paper_files, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"alice": [sentence(1)], "bob": []}))
    with pytest.raises(DataError, match=r"bad\.json: client 'bob' in client_file has no texts"):
        biorxiv(source="files", **(paper_files | {"client_file": str(bad)})).load(None)


def test_wrong_shape_names_file(paper_files, tmp_path):
    bad = tmp_path / "eval.json"
    bad.write_text(json.dumps({"not": "a list"}))
    with pytest.raises(DataError, match=r"eval\.json: eval_file must be a JSON list of strings"):
        biorxiv(source="files", **(paper_files | {"eval_file": str(bad)})).load(None)


def hub_records():
    """Records shaped like the bioRxiv API (``authors`` is a "A; B; C" string)."""
    return [
        {"abstract": sentence(i, 12), "authors": f"Author{i % 9}, X.; Coauthor{i}, Y.", "doi": f"10/{i}"}
        for i in range(60)
    ]


def test_hub_path_with_a_saved_dataset(tmp_path, cache):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list(hub_records()).save_to_disk(str(tmp_path / "hub"))
    data = biorxiv(hub_id=str(tmp_path / "hub")).load(cache)
    # clients = first authors: Author0..Author8; 1 public + 1 test + 1 validation held out
    assert data.num_clients == 6
    assert all(cid.startswith("Author") and ";" not in cid for cid in data.clients)
    assert data.public and data.test and data.validation


def test_hub_path_calls_load_dataset(monkeypatch, cache):
    datasets = pytest.importorskip("datasets")
    seen = {}

    def fake_load_dataset(name, revision=None, split=None):
        seen.update(name=name, revision=revision, split=split)
        return datasets.Dataset.from_list(
            [{"data": sentence(i, 10), "speaker": f"Rep. {i % 8}", "country": "US"} for i in range(40)]
        )

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    options = build_config(CongressionalOptions, {"tokenizer": "whitespace", "hub_revision": "abc"}, where="d")
    data = CongressionalDataset(options).load(cache)
    assert seen == {"name": "hazylavender/CongressionalDataset", "revision": "abc", "split": "train"}
    assert all(cid.startswith("Rep. ") for cid in data.clients)


def test_hub_offline_fails_fast_with_a_clear_message(monkeypatch):
    datasets = pytest.importorskip("datasets")

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach the Hugging Face Hub (offline mode is enabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError) as err:
        biorxiv().load(None)
    message = str(err.value)
    assert "hazylavender/biorxiv-abstract" in message and "HF_HUB_OFFLINE" in message
    assert "source: files" in message


def test_hub_missing_field_names_source_and_field(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list([{"text": "x y z"}]).save_to_disk(str(tmp_path / "hub"))
    with pytest.raises(DataError, match=r"hub.*record 0 has no text field 'abstract'"):
        biorxiv(hub_id=str(tmp_path / "hub")).load(None)
