"""The common dataset pipeline: options, filters, client split, caps, truncation, caching."""

from __future__ import annotations

import pytest
from dataset_helpers import sentence

from dpbench.api.config import build_config
from dpbench.builtin.datasets import common
from dpbench.builtin.datasets.common import CommonOptions, DataError, RawData, build, load_cached
from dpbench.errors import ConfigError


def opts(**kw) -> CommonOptions:
    kw.setdefault("tokenizer", "whitespace")
    return CommonOptions(**kw)


def raw(n_clients=20, per_client=4, **kw) -> RawData:
    clients = {f"c{c:02d}": [sentence(c * 10 + j) for j in range(per_client)] for c in range(n_clients)}
    return RawData(clients=clients, source="fixture.json", **kw)


def run(r: RawData, **kw):
    return build(r, opts(**kw), dataset_name="t", version="1")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_tokens", -1),
        ("min_words", 1.5),
        ("num_clients", 0),
        ("test_fraction", 1.0),
        ("validation_fraction", -0.1),
        ("max_texts_per_client", 0),
        ("tokenizer", ""),
    ],
)
def test_bad_options_name_the_field(field, value):
    with pytest.raises(ConfigError) as err:
        build_config(CommonOptions, {field: value}, where="datasets.x")
    assert err.value.field == f"datasets.x.{field}"
    assert repr(value) in str(err.value)


def test_fractions_must_leave_training_clients():
    with pytest.raises(ConfigError, match="validation_fraction"):
        opts(test_fraction=0.5, validation_fraction=0.5)


def test_splits_are_disjoint_by_client_and_cover_everything():
    r = raw(public_fraction=0.1)
    data = run(r)
    train = set(data.training_texts())
    held = [set(data.test), set(data.validation), set(data.public)]
    assert all(train.isdisjoint(h) for h in held)
    assert held[0].isdisjoint(held[1]) and held[0].isdisjoint(held[2]) and held[1].isdisjoint(held[2])
    assert len(train) + sum(map(len, held)) == 20 * 4
    assert data.info["split_groups"] == {"public": 2, "test": 2, "validation": 2, "train": 14}
    assert data.num_clients == 14


def test_groups_stay_together():
    r = raw(n_clients=12)
    r.groups = {f"c{c:02d}": f"g{c // 3}" for c in range(12)}  # 4 groups of 3 clients
    data = run(r, test_fraction=0.25, validation_fraction=0.25)
    assert len(data.test) == 3 * 4 and len(data.validation) == 3 * 4
    train_groups = {int(cid[1:]) // 3 for cid in data.clients}
    assert len(data.clients) == 6 and len(train_groups) == 2


def test_split_depends_only_on_split_seed():
    a, b, c = run(raw(), split_seed=1), run(raw(), split_seed=1), run(raw(), split_seed=2)
    assert a == b
    assert a.test != c.test


def test_filters_caps_and_min_texts():
    r = raw(n_clients=10, per_client=5)
    r.clients["c00"] = ["too short", *r.clients["c00"][:1]]  # one text left after min_words
    data = run(r, min_words=3, max_texts_per_client=2, min_texts_per_client=2)
    assert "c00" not in data.clients
    assert all(len(v) == 2 for v in data.clients.values())
    assert data.info["dropped"] == {"short_texts": 1, "capped_texts": 9 * 3, "small_clients": 1}


def test_whitespace_is_normalised_and_truncated():
    r = raw(n_clients=5, per_client=2)
    r.clients["c00"] = ["a  b\n\tc d e f g", "one two three four five six"]
    data = run(r, max_tokens=3, test_fraction=0, validation_fraction=0)
    assert data.clients["c00"] == ("a b c", "one two three")
    assert all(len(t.split()) <= 3 for t in data.training_texts())


def test_num_clients_subset_and_too_few():
    data = run(raw(), num_clients=5)
    assert data.num_clients == 5
    with pytest.raises(DataError, match=r"fixture.json: num_clients=50 asked for, but only 16"):
        run(raw(), num_clients=50)


def test_too_few_clients_for_the_split():
    with pytest.raises(DataError, match="fixture.json: 2 client group"):
        run(raw(n_clients=2))


def test_source_splits_are_used_as_given():
    r = raw(test=["given test text one two"], validation=["given validation text"], public=["given public text"])
    data = run(r)
    assert data.test == ("given test text one two",)
    assert data.validation == ("given validation text",)
    assert data.public == ("given public text",)
    assert data.num_clients == 20


def test_eval_and_public_caps():
    r = raw(n_clients=20, per_client=10, public_fraction=0.2)
    data = run(r, max_eval_texts=5, max_public_texts=7)
    assert len(data.test) == 5 and len(data.validation) == 5 and len(data.public) == 7


def test_model_tokenizer_truncation_keeps_a_prefix(tmp_path):
    from dpbench.evaluation.lm import train_tokenizer

    tok = train_tokenizer([sentence(i, 20) for i in range(50)], 300)
    tok.save_pretrained(tmp_path / "tok")
    truncate = common.make_truncator(str(tmp_path / "tok"), 5)
    text = sentence(3, 20)
    (cut,) = truncate([text])
    assert text.startswith(cut) and len(cut) < len(text)
    assert len(tok(cut, add_special_tokens=False)["input_ids"]) == 5
    assert truncate(["short"]) == ["short"]


def test_cache_reuses_the_result_and_notices_changes(cache, monkeypatch):
    calls = []
    real_build = common.build

    def counting_build(*a, **kw):
        calls.append(1)
        return real_build(*a, **kw)

    monkeypatch.setattr(common, "build", counting_build)
    first = load_cached("t", "1", opts(), raw, cache)
    again = load_cached("t", "1", opts(), raw, cache)
    assert first == again and len(calls) == 1
    load_cached("t", "1", opts(split_seed=3), raw, cache)  # options changed
    load_cached("t", "2", opts(), raw, cache)  # dataset version changed
    load_cached("t", "1", opts(), lambda: raw(per_client=5), cache)  # data changed
    assert len(calls) == 4
