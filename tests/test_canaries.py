"""Canary exposure: canaries, planting, verbatim and rank detection, the dataset option."""

from __future__ import annotations

import json
import math

import pytest

from dpbench.api import SyntheticTexts, TrainedModel
from dpbench.api.config import build_config, config_dict
from dpbench.builtin.datasets.common import CommonOptions
from dpbench.builtin.datasets.local import LocalFilesDataset, LocalOptions
from dpbench.cache import SuiteCache
from dpbench.canaries import (
    CANARY_PREFIX,
    canary_report,
    causal_lm_scorer,
    exposure_ranks,
    make_canaries,
    ngram_scorer,
    plant,
    reference_canaries,
    verbatim_hits,
)
from dpbench.errors import ConfigError

ANIMALS = ["cat", "dog", "cow", "hen", "fox", "owl"]
PLACES = ["mat", "rug", "bed", "hill", "barn", "road"]


def prose(n: int) -> list[str]:
    return [f"the {ANIMALS[i % 6]} sat on the {PLACES[(i * 5) % 6]} at {i % 7} o'clock" for i in range(n)]


# Canaries ------------------------------------------------------------------------------------

def test_canaries_are_deterministic_unique_and_independent_of_references():
    canaries = make_canaries(5, seed=1)
    assert canaries == make_canaries(5, seed=1)
    assert canaries != make_canaries(5, seed=2)
    assert len(set(canaries)) == 5
    assert all(c.startswith(CANARY_PREFIX + " ") and len(c.split()) == len(CANARY_PREFIX.split()) + 8
               for c in canaries)
    assert set(canaries).isdisjoint(reference_canaries(200, seed=1))
    assert len(make_canaries(3, seed=0, words=2)[0].split()) == len(CANARY_PREFIX.split()) + 2


def test_canaries_stay_unique_when_draws_collide():
    # one pseudo-word has 49,000 values, so 2,000 draws repeat some: the repeats are redrawn
    canaries = make_canaries(2000, seed=0, words=1)
    assert len(set(canaries)) == 2000


@pytest.mark.parametrize(("field", "kwargs"), [("count", {"count": -1}), ("words", {"words": 0}),
                                               ("seed", {"seed": -3})])
def test_bad_canary_arguments_name_the_field(field, kwargs):
    args = {"count": 2, "seed": 0} | kwargs
    with pytest.raises(ConfigError) as err:
        make_canaries(**args)
    assert err.value.field == field


# Planting ------------------------------------------------------------------------------------

def test_plant_appends_each_canary_to_one_distinct_client():
    clients = {f"c{i}": (f"text {i} a", f"text {i} b") for i in range(10)}
    canaries = make_canaries(4, seed=3)
    planted = plant(clients, canaries, seed=3)
    assert planted == plant(clients, canaries, seed=3)
    assert list(planted) == list(clients)
    holders = {}
    for cid, texts in planted.items():
        extra = texts[len(clients[cid]):]
        assert texts[: len(clients[cid])] == clients[cid]
        assert len(extra) <= 1
        holders.update({text: cid for text in extra})
    assert sorted(holders) == sorted(canaries)
    assert len(set(holders.values())) == 4
    assert sum(texts == clients[cid] for cid, texts in planted.items()) == 6


def test_plant_needs_a_client_per_canary():
    with pytest.raises(ConfigError, match="at most 2") as err:
        plant({"a": ("x",), "b": ("y",)}, make_canaries(3, seed=0), seed=0)
    assert err.value.field == "canaries"


# Verbatim ------------------------------------------------------------------------------------

def test_verbatim_finds_a_leaked_run_of_words_inside_longer_text():
    canaries = make_canaries(3, seed=0)
    secret = canaries[1].split()[-6:]
    leaked = "Some preamble.  " + " ".join(w.upper() for w in secret[:3]) + "\n" + " ".join(secret[3:]) + " and more"
    assert verbatim_hits([*prose(20), leaked], canaries) == [False, True, False]
    assert verbatim_hits([*prose(20), " ".join(secret[:5])], canaries) == [False, False, False]
    assert verbatim_hits(prose(50), canaries) == [False, False, False]
    assert verbatim_hits(["no leak here", "x the secret canary code is"], canaries) == [False, False, False]


def test_verbatim_needs_the_whole_canary_when_shorter_than_n():
    assert verbatim_hits(["say alpha beta gamma now"], ["alpha beta gamma", "alpha gamma"]) == [True, False]


# Exposure ranks ------------------------------------------------------------------------------

def test_ngram_exposure_ranks_a_leaked_canary_first():
    canaries, references = make_canaries(3, seed=0), reference_canaries(50, seed=0)
    leaked = exposure_ranks(ngram_scorer([*prose(30), canaries[0]]), canaries, references)
    assert leaked[0] == 1 and leaked[1] > 1 and leaked[2] > 1
    clean = exposure_ranks(ngram_scorer(prose(30)), canaries, references)
    assert min(clean) > 1


def test_ngram_scorer_prefers_seen_word_pairs():
    score = ngram_scorer(prose(30))
    seen, shuffled = score(["the cat sat on the mat", "mat the on sat cat the"])
    assert seen > shuffled


def test_ties_count_against_the_canary():
    assert exposure_ranks(lambda texts: [0.0] * len(texts), ["a", "b"], ["c", "d", "e"]) == [4, 4]
    assert exposure_ranks(lambda texts: [-len(t) for t in texts], ["a", "bbbb"], ["cc", "ddd"]) == [1, 3]


# Causal LM -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    """A 1-layer random-init GPT-2 and its BPE tokenizer, saved with save_pretrained."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from dpbench.evaluation.lm import train_tokenizer

    folder = tmp_path_factory.mktemp("tiny-gpt2")
    tok = train_tokenizer(prose(60) + reference_canaries(40, seed=9), 300)
    config = GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=len(tok), n_positions=64,
                        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_causal_lm_scorer_sums_token_log_likelihoods(tiny_gpt2):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    score = causal_lm_scorer(tiny_gpt2)
    texts = ["the cat sat on the mat", make_canaries(1, seed=0)[0], "x"]
    scores = score(texts)
    assert len(scores) == 3 and all(math.isfinite(s) and s < 0 for s in scores)
    assert score(texts) == scores and score(texts[:1])[0] == pytest.approx(scores[0], abs=1e-4)  # batching: no effect
    model, tok = AutoModelForCausalLM.from_pretrained(tiny_gpt2), AutoTokenizer.from_pretrained(tiny_gpt2)
    ids = [tok.bos_token_id, *tok(texts[1], add_special_tokens=False)["input_ids"]]
    with torch.inference_mode():
        mean_nll = model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids])).loss.item()
    assert scores[1] == pytest.approx(-mean_nll * (len(ids) - 1), rel=1e-4)


def test_causal_lm_ranks_and_report_for_a_trained_model(tiny_gpt2, tmp_path):
    from transformers import AutoModelForCausalLM

    canaries, references = make_canaries(3, seed=0), reference_canaries(30, seed=0)
    ranks = exposure_ranks(causal_lm_scorer(tiny_gpt2), canaries, references)
    assert len(ranks) == 3 and all(1 <= r <= 31 for r in ranks)
    model_only = tmp_path / "trained"
    AutoModelForCausalLM.from_pretrained(tiny_gpt2).save_pretrained(model_only)  # no tokenizer, as methods save
    report = canary_report(TrainedModel(model_only), canaries, references, tokenizer_dir=tiny_gpt2)
    assert report["ranks"] == ranks and report["verbatim"] is None
    assert report["best_rank"] == min(ranks) and report["candidates"] == 31
    assert report["flagged"] == (min(ranks) == 1)


# Report --------------------------------------------------------------------------------------

def test_report_flags_synthetic_texts_that_contain_a_canary():
    canaries, references = make_canaries(3, seed=0), reference_canaries(40, seed=0)
    leaky = canary_report(SyntheticTexts((*prose(30), f"as noted, {canaries[2]}.")), canaries, references)
    assert leaky["flagged"] and leaky["verbatim"] == 1 and leaky["ranks"][2] == 1 and leaky["best_rank"] == 1
    assert leaky["canaries"] == 3 and leaky["candidates"] == 41
    clean = canary_report(SyntheticTexts(tuple(prose(30))), canaries, references)
    assert not clean["flagged"] and clean["verbatim"] == 0 and clean["best_rank"] > 1


def test_report_needs_enough_candidates_to_flag_by_rank():
    canaries, references = make_canaries(2, seed=0), reference_canaries(5, seed=0)
    # the bigram model learns the canary's word pairs, but no run of 6 words is reproduced
    words = canaries[0].split()
    texts = tuple(" ".join(words[i : i + 2]) for i in range(len(words) - 1))
    few = canary_report(SyntheticTexts(texts), canaries, references)
    assert few["verbatim"] == 0 and few["ranks"][0] == 1 and not few["flagged"]
    many = canary_report(SyntheticTexts(texts), canaries, reference_canaries(19, seed=0))
    assert many["ranks"][0] == 1 and many["flagged"]
    # a reference learnt twice as often outranks the canary: 2nd is not flagged
    ref = reference_canaries(19, seed=0)[7].split()
    outranked = texts + 2 * tuple(" ".join(ref[i : i + 2]) for i in range(len(ref) - 1))
    second = canary_report(SyntheticTexts(outranked), canaries, reference_canaries(19, seed=0))
    assert second["ranks"][0] == 2 and not second["flagged"]
    with pytest.raises(ConfigError, match="canaries"):
        canary_report(SyntheticTexts(texts), [], references)


# The dataset option --------------------------------------------------------------------------

def write_records(tmp_path, n_clients: int = 12) -> str:
    path = tmp_path / "records.jsonl"
    texts = prose(3 * n_clients)  # distinct up to 42 texts
    path.write_text("".join(json.dumps({"body": texts[3 * c + j], "who": f"user{c}"}) + "\n"
                            for c in range(n_clients) for j in range(3)))
    return str(path)


def local(path: str, **options):
    options = {"path": path, "text_field": "body", "client_field": "who", "tokenizer": "whitespace",
               "public_fraction": 0.2} | options
    return LocalFilesDataset(build_config(LocalOptions, options, where="dataset"))


def test_dataset_plants_canaries_in_training_clients_only(tmp_path):
    path = write_records(tmp_path)
    base, data = local(path).load(None), local(path, canaries=3).load(None)
    planted = data.info["canaries"]
    assert planted == make_canaries(3, seed=0) and "canaries" not in base.info
    assert (data.test, data.validation, data.public) == (base.test, base.validation, base.public)
    assert all(c not in (*data.test, *data.validation, *data.public) for c in planted)
    holders = [cid for cid, texts in data.clients.items() if texts != base.clients[cid]]
    assert len(holders) == 3
    assert sorted(data.clients[cid][-1] for cid in holders) == sorted(planted)
    assert all(data.clients[cid][:-1] == base.clients[cid] for cid in holders)


def test_canaries_option_is_validated_and_too_many_fail(tmp_path):
    with pytest.raises(ConfigError) as err:
        build_config(LocalOptions, {"path": "x", "canaries": -1}, where="datasets.d")
    assert err.value.field == "datasets.d.canaries"
    with pytest.raises(ConfigError, match="canaries: 50 is not allowed; expected at most"):
        local(write_records(tmp_path), canaries=50).load(None)


def test_canaries_off_keeps_run_ids_and_cache_keys(tmp_path):
    assert "canaries" not in config_dict(CommonOptions())  # ids and keys of existing suites are unchanged
    assert config_dict(CommonOptions(canaries=2))["canaries"] == 2
    path, cache = write_records(tmp_path), SuiteCache(tmp_path / "cache")
    cached = local(path, canaries=2).load(cache)
    assert cached == local(path, canaries=2).load(None) and "canaries" not in local(path).load(cache).info
