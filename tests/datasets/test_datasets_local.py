"""``local``: JSON / JSONL / CSV / Parquet records with configurable fields."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from dataset_helpers import records

from dpbench.api.config import build_config
from dpbench.builtin.datasets.common import DataError
from dpbench.builtin.datasets.local import LocalFilesDataset, LocalOptions
from dpbench.builtin.datasets.records import client_key
from dpbench.errors import ConfigError

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def local(**options):
    options.setdefault("tokenizer", "whitespace")
    return LocalFilesDataset(build_config(LocalOptions, options, where="dataset"))


def write(tmp_path, fmt: str, rows=None) -> str:
    rows = rows if rows is not None else records()
    path = tmp_path / f"data.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt in ("csv", "parquet"):
        import pandas as pd

        frame = pd.DataFrame([{k: v for k, v in r.items() if k != "tags"} for r in rows])
        frame.to_csv(path, index=False) if fmt == "csv" else frame.to_parquet(path)
    else:
        path.write_text(json.dumps(rows))
    return str(path)


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv", "parquet"])
def test_formats(tmp_path, fmt):
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    data = local(path=write(tmp_path, fmt), text_field="body", client_field="who", public_fraction=0.1).load(None)
    assert data.num_clients == 7  # 10 users: 1 public, 1 test, 1 validation
    assert all(len(texts) == 3 for texts in data.clients.values())
    assert set(data.clients) <= {f"user{i}" for i in range(10)}


def test_nested_json_with_another_suffix(tmp_path):
    path = tmp_path / "data1.txt"
    path.write_text(json.dumps({"papers": records()}))
    with pytest.raises(DataError, match="cannot tell the format"):
        local(path=str(path), text_field="body", client_field="tags").load(None)
    data = local(path=str(path), format="json", records_path="papers", text_field="body", client_field="tags",
                 test_fraction=0.25, validation_fraction=0.25, public_fraction=0.25).load(None)
    # list-valued client field: first element -> cat0..cat3, one per split
    assert len(data.clients) == 1 and next(iter(data.clients)).startswith("cat")


def test_list_rules():
    assert client_key(["a", "b"], separator=None, list_rule="first") == "a"
    assert client_key(["a", "b"], separator=None, list_rule="join") == "a | b"
    assert client_key("Doe, J.; Roe, R.", separator=";", list_rule="first") == "Doe, J."
    assert client_key(["Scott", "Jacob"], separator=None, list_rule="join") == "Scott | Jacob"
    assert client_key([["Scott", "Jacob"]], separator=None, list_rule="first") == '["Scott", "Jacob"]'
    assert client_key(3.0, separator=None, list_rule="first") == "3"
    assert client_key([], separator=None, list_rule="first") is None


def test_every_record_its_own_client(tmp_path):
    data = local(path=write(tmp_path, "jsonl"), text_field="body").load(None)
    assert data.num_clients == 30 - 3 * 3 and all(len(v) == 1 for v in data.clients.values())
    assert data.summary()["privacy_unit"] == "one record"


def test_the_privacy_unit_follows_the_client_field(tmp_path):
    data = local(path=write(tmp_path, "jsonl"), text_field="body", client_field="who").load(None)
    assert data.summary()["privacy_unit"] == "all records sharing one `who` value (of a list: its first entry)"


def test_missing_fields_name_file_and_field(tmp_path):
    path = write(tmp_path, "jsonl")
    with pytest.raises(DataError, match=r"data\.jsonl: record 0 has no text field 'text'"):
        local(path=path, client_field="who").load(None)
    with pytest.raises(DataError, match=r"data\.jsonl: record 0 has no client field 'speaker'"):
        local(path=path, text_field="body", client_field="speaker").load(None)


def test_empty_client_field(tmp_path):
    rows = records()
    rows[4]["who"] = ""
    with pytest.raises(DataError, match=r"record 4: client field 'who' is empty"):
        local(path=write(tmp_path, "json", rows), text_field="body", client_field="who").load(None)


def test_file_not_found(tmp_path):
    with pytest.raises(DataError, match=r"path: file not found: .*missing\.jsonl"):
        local(path=str(tmp_path / "missing.jsonl")).load(None)


def test_fewer_clients_than_asked(tmp_path):
    with pytest.raises(DataError, match=r"data\.jsonl: num_clients=40 asked for, but only 7"):
        local(path=write(tmp_path, "jsonl"), text_field="body", client_field="who", num_clients=40).load(None)


def test_public_and_test_files(tmp_path):
    public = tmp_path / "public.json"
    public.write_text(json.dumps(["public text one", "public text two"]))
    test = tmp_path / "test.jsonl"
    test.write_text(json.dumps({"body": "held out test text"}) + "\n")
    data = local(path=write(tmp_path, "jsonl"), text_field="body", client_field="who",
                 public_path=str(public), test_path=str(test)).load(None)
    assert data.public == ("public text one", "public text two")
    assert data.test == ("held out test text",)
    assert data.num_clients == 9


def test_bad_options():
    with pytest.raises(ConfigError, match="dataset.format"):
        build_config(LocalOptions, {"path": "x", "format": "xml"}, where="dataset")
    with pytest.raises(ConfigError, match="dataset.path"):
        build_config(LocalOptions, {}, where="dataset")
    with pytest.raises(ConfigError, match="dataset.list_rule"):
        build_config(LocalOptions, {"path": "x", "list_rule": "all"}, where="dataset")


@pytest.mark.skipif(not (SHARED / "convote").is_dir(), reason="../shared/data is not available here")
@pytest.mark.parametrize(
    "options",
    [
        {"path": "biorxiv-2014/data1.txt", "format": "json", "records_path": "papers", "text_field": "abstract",
         "client_field": "category"},
        {"path": "convote/convote_stage3.jsonl", "text_field": "text", "client_field": "speaker"},
    ],
)
def test_real_shared_sets(options):
    options = options | {"path": os.fspath(SHARED / options["path"])}
    data = local(**options).load(None)
    assert data.num_clients >= 10 and data.test and data.validation and data.public


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv"])
def test_non_utf8_file_names_file_line_and_column(tmp_path, fmt):
    path = Path(write(tmp_path, fmt))
    if fmt == "json":
        path.write_text(json.dumps(records(), indent=1))
    data = path.read_bytes()
    at = data.index(b"user1")  # a Latin-1 "é" in the second client's first record
    path.write_bytes(data[:at] + b"\xe9" + data[at:])
    line = data.count(b"\n", 0, at) + 1
    column = at - data.rfind(b"\n", 0, at)
    assert line > 1 and column > 1
    with pytest.raises(DataError, match=rf"data\.{fmt}: not UTF-8: byte 0xe9 at line {line}, column {column} "):
        local(path=str(path), text_field="body", client_field="who").load(None)


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv", "parquet"])
def test_empty_file_is_named(tmp_path, fmt):
    path = tmp_path / f"data.{fmt}"
    path.write_bytes(b"")
    with pytest.raises(DataError, match=rf"data\.{fmt}: the file is empty \(0 bytes\) \[path\]"):
        local(path=str(path), text_field="body", client_field="who").load(None)


def test_test_file_record_without_text_names_file_record_and_fields(tmp_path):
    test = tmp_path / "test.jsonl"
    test.write_text(json.dumps({"body": "held out"}) + "\n" + json.dumps({"txt": "typo", "id": 3}) + "\n")
    with pytest.raises(DataError,
                       match=r"test\.jsonl \[test_path\]: record 1 has no text field 'body' \(fields: id, txt\)"):
        local(path=write(tmp_path, "jsonl"), text_field="body", client_field="who", test_path=str(test)).load(None)


def test_malformed_csv_and_parquet_name_the_file(tmp_path):
    csv = tmp_path / "data.csv"
    csv.write_text("body,who\na b c,u1\nd e f,u2,extra\n")
    with pytest.raises(DataError, match=r"data\.csv: not a valid csv file \(.*line 3"):
        local(path=str(csv), text_field="body", client_field="who").load(None)
    parquet = tmp_path / "data.parquet"
    parquet.write_text("not parquet")
    pytest.importorskip("pyarrow")
    with pytest.raises(DataError, match=r"data\.parquet: not a valid parquet file \("):
        local(path=str(parquet), text_field="body", client_field="who").load(None)
