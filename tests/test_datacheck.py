"""The data check: ``dpbench validate`` loads each dataset (through the suite cache) and fails
once, naming the dataset and its file, on data every run would fail on."""

import json

import pytest
from click.testing import CliRunner

from dpbench.api import FederatedTextData
from dpbench.cli import cli
from dpbench.datacheck import check_data, check_datasets
from dpbench.errors import DataError
from dpbench.suite import load_suite

LOCAL_SUITE = """\
privacy: {{epsilon: 1, delta: {delta}}}
datasets:
  forum: {{plugin: local, path: {path}, text_field: body, client_field: who, tokenizer: whitespace}}
methods: {{public_only: {{}}, noisy_unigram: {{}}}}
evaluators: {{next_word: {{}}}}
"""


def records(n_clients=10, per_client=3):
    return [{"body": f"text {j} of user {c} with a few words", "who": f"user{c}"}
            for c in range(n_clients) for j in range(per_client)]


@pytest.fixture
def local_suite(tmp_path, toy_plugin):
    """Write ``rows`` (or raw bytes) as a JSONL data file and a suite reading it; return the suite path."""

    def write(rows=None, *, raw: bytes | None = None, delta=1e-5):
        data = tmp_path / "forum.jsonl"
        data.write_bytes(raw if raw is not None else "".join(json.dumps(r) + "\n" for r in rows or records()).encode())
        suite = tmp_path / "forum.yaml"
        suite.write_text(LOCAL_SUITE.format(path=data, delta=delta))
        return suite

    return write


def validate(suite, *args):
    out = CliRunner().invoke(cli, ["validate", str(suite), "--runs-dir", str(suite.parent / "runs"), *args])
    assert "Traceback" not in out.output
    return out


def test_validate_loads_each_dataset_through_the_suite_cache(local_suite, tmp_path):
    out = validate(local_suite())
    assert out.exit_code == 0, out.output
    assert "forum: 7 clients, 21 texts, 3 test, 3 validation, 3 public" in out.output
    assert "valid, 2 runs" in out.output
    assert list((tmp_path / "runs" / ".cache" / "datasets" / "local").iterdir())


def test_suites_in_one_runs_folder_share_the_cache(local_suite, tmp_path, monkeypatch):
    from dpbench.builtin.datasets import common

    builds = []
    real = common.build
    monkeypatch.setattr(common, "build", lambda *a, **kw: builds.append(1) or real(*a, **kw))
    first = local_suite()
    second = first.with_name("forum-again.yaml")
    second.write_text(first.read_text())
    assert validate(first).exit_code == 0 and validate(second).exit_code == 0
    assert len(builds) == 1  # the second suite read the first one's prepared dataset
    entries = [p for p in (tmp_path / "runs" / ".cache" / "datasets" / "local").iterdir() if not p.name.startswith(".")]
    assert len(entries) == 1


def test_validate_catches_a_record_without_its_text_field(local_suite):
    rows = records()
    rows[4] = {"text": rows[4]["body"], "who": rows[4]["who"]}
    out = validate(local_suite(rows))
    assert out.exit_code == 2
    assert "Error: datasets.forum: " in out.output
    assert "forum.jsonl: record 4 has no text field 'body' (fields: text, who)" in out.output


def test_validate_catches_an_empty_file(local_suite):
    out = validate(local_suite(raw=b""))
    assert out.exit_code == 2
    assert "Error: datasets.forum: " in out.output and "forum.jsonl: the file is empty" in out.output


def test_validate_catches_a_non_utf8_file_naming_file_and_line(local_suite):
    lines = [json.dumps(r).encode() for r in records()]
    lines[5] = lines[5].replace(b"text", b"t\xe9xt", 1)
    out = validate(local_suite(raw=b"\n".join(lines)))
    assert out.exit_code == 2
    assert "forum.jsonl: not UTF-8: byte 0xe9 at line 6, column 12" in out.output


def test_validate_catches_delta_not_below_one_over_clients(local_suite):
    out = validate(local_suite(delta=0.2))
    assert out.exit_code == 2
    assert ("Error: privacy.delta: 0.2 is not allowed; expected a number below 1/num_clients = 1/7 "
            "for dataset 'forum'") in out.output


def test_validate_no_data_checks_structure_only(local_suite, tmp_path):
    out = validate(local_suite(raw=b""), "--no-data")
    assert out.exit_code == 0, out.output
    assert "valid, 2 runs (data not checked)" in out.output
    assert not (tmp_path / "runs").exists()


def test_references_alone_put_no_bound_on_delta(local_suite):
    out = validate(local_suite(delta=0.2), "~methods.noisy_unigram")
    assert out.exit_code == 0, out.output


def test_check_datasets_returns_summaries_and_labels_load_errors(toy_plugin, toy_suite):
    suite = load_suite(toy_suite())
    summaries = check_datasets(suite, lambda choice: FederatedTextData(clients={"a": ("x",)}, test=("y",)))
    assert summaries == {"toy_texts": {"clients": 1, "train_texts": 1, "validation_texts": 0, "test_texts": 1,
                                       "public_texts": 0}}

    def missing(choice):
        raise FileNotFoundError(2, "No such file or directory", "/data/x.csv")

    with pytest.raises(DataError, match=r"^datasets.toy_texts: FileNotFoundError: .*/data/x\.csv"):
        check_datasets(suite, missing)


@pytest.mark.parametrize("data, problem", [
    (FederatedTextData(clients={}, test=("y",), info={"source": "/data/x.jsonl"}), "no private clients"),
    (FederatedTextData(clients={"a": ("x",)}, info={"source": "/data/x.jsonl"}), "the test split is empty"),
])
def test_check_data_names_dataset_and_source(data, problem):
    with pytest.raises(DataError, match=rf"^datasets.forum: /data/x\.jsonl: {problem}"):
        check_data("forum", data)
