"""The ``next_token`` evaluator plugin: protocol, caching, selection on validation only."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil

import pytest

from dpbench.api.artifacts import SyntheticTexts, TrainedModel
from dpbench.api.config import build_config
from dpbench.errors import ConfigError
from dpbench.evaluation import lm
from dpbench.evaluation.next_token import EvaluationError, NextTokenEvaluator, NextTokenOptions
from dpbench.plugins import get_registry


def test_registered_with_metric_specs():
    cls = get_registry("evaluator").get("next_token")
    assert cls is NextTokenEvaluator
    assert cls.primary_metric == "accuracy"
    names = {m.name: m.higher_is_better for m in cls.metrics}
    assert names == {"accuracy": True, "top5_accuracy": True, "cross_entropy": False, "validation_accuracy": True}


def test_options_validated():
    with pytest.raises(ConfigError) as err:
        build_config(NextTokenOptions, {"train_steps": 0}, where="evaluator")
    assert err.value.field == "evaluator.train_steps"
    with pytest.raises(ConfigError, match="n_head"):
        NextTokenOptions(n_embd=30, n_head=4)


def test_no_fine_tuning_is_cached_per_suite(tiny_data, tiny_options, make_ctx, monkeypatch):
    evaluator = NextTokenEvaluator(tiny_options)
    ctx = make_ctx()
    first = evaluator.evaluate(SyntheticTexts(()), tiny_data, ctx)
    assert set(first) == {"accuracy", "top5_accuracy", "cross_entropy", "validation_accuracy"}
    assert 0 <= first["accuracy"] <= first["top5_accuracy"] <= 1
    calls = []
    monkeypatch.setattr(lm, "train", lambda *a, **k: calls.append(1))
    monkeypatch.setattr(lm, "score", lambda *a, **k: calls.append(1))
    assert evaluator.evaluate(SyntheticTexts(()), tiny_data, make_ctx(seed=5)) == first  # any seed
    assert calls == []
    assert (ctx.output_dir / "next_token.json").is_file()


def test_fine_tuning_is_deterministic_and_helps(tiny_data, tiny_options, make_ctx):
    options = dataclasses.replace(tiny_options, train_steps=12, eval_every=4)
    evaluator = NextTokenEvaluator(options)
    texts = SyntheticTexts(tiny_data.training_texts())
    a = evaluator.evaluate(texts, tiny_data, make_ctx(seed=1, cache_dir="c1"))
    b = evaluator.evaluate(texts, tiny_data, make_ctx(seed=1, cache_dir="c2"))  # no cache shared
    assert a == b
    base = evaluator.evaluate(SyntheticTexts(()), tiny_data, make_ctx(cache_dir="c1"))
    assert a["cross_entropy"] < base["cross_entropy"]


def test_selection_uses_validation_and_scores_test_once(tiny_data, tiny_options, make_ctx, monkeypatch):
    evaluator = NextTokenEvaluator(tiny_options)
    ctx = make_ctx()
    evaluator.initial_model(tiny_data, ctx)  # pretraining scores nothing
    scored = []
    real_score = lm.score

    def spy(model, encoded, **kw):
        scored.append(len(encoded))
        return real_score(model, encoded, **kw)

    monkeypatch.setattr(lm, "score", spy)
    evaluator.evaluate(SyntheticTexts(tiny_data.training_texts()), tiny_data, ctx)
    n_val, n_test = len(tiny_data.validation), len(tiny_data.test)
    assert scored == [n_val] * 4 + [n_test]  # steps 0 (pretrained), 2, 4, 6 on validation; the chosen one on test
    details = json.loads((ctx.output_dir / "next_token.json").read_text())
    assert [row[0] for row in details["curve"]] == [0, 2, 4, 6]
    assert details["selected_step"] in (0, 2, 4, 6)


def test_validation_score_is_evaluates_validation_accuracy_without_test(tiny_data, tiny_options, make_ctx,
                                                                        monkeypatch):
    """What a method sees (no test split) scores a set as ``evaluate`` selects it: same
    fine-tuning, same validation accuracy; test is never scored; a second call is cached."""
    evaluator = NextTokenEvaluator(tiny_options)
    texts = tiny_data.training_texts()
    full = evaluator.evaluate(SyntheticTexts(texts), tiny_data, make_ctx(seed=3, cache_dir="full"))
    ctx = make_ctx(seed=3, cache_dir="method")
    evaluator.initial_model(tiny_data, ctx)
    scored = []
    real_score = lm.score
    monkeypatch.setattr(lm, "score", lambda model, encoded, **kw: (scored.append(len(encoded)),
                                                                    real_score(model, encoded, **kw))[1])
    method_data, synthetic = tiny_data.for_method(), SyntheticTexts(texts)
    assert evaluator.validation_score(synthetic, method_data, ctx) == full["validation_accuracy"]
    assert scored == [len(tiny_data.validation)] * 4  # the candidates only, never the test split
    other_seed = evaluator.validation_score(synthetic, method_data, make_ctx(seed=4, cache_dir="method"))
    assert len(scored) == 8 and 0 <= other_seed <= 1  # another fine-tuning seed is another evaluation
    assert evaluator.validation_score(synthetic, method_data, ctx) == full["validation_accuracy"]
    assert len(scored) == 8
    assert (evaluator.validation_score(SyntheticTexts(()), method_data, ctx)
            == evaluator.evaluate(SyntheticTexts(()), tiny_data, ctx)["validation_accuracy"])
    with pytest.raises(EvaluationError, match="validation split is empty"):
        evaluator.validation_score(synthetic, dataclasses.replace(method_data, validation=()), ctx)


def test_pretrained_model_is_a_candidate(tiny_data, tiny_options, make_ctx, monkeypatch):
    """Training that only harms selects step 0: the set scores exactly the ε = 0 row."""
    import torch

    def harmful_train(model, encoded, *, steps, on_step, **_):
        generator = torch.Generator().manual_seed(0)
        for step in range(1, steps + 1):
            with torch.no_grad():
                for param in model.parameters():
                    param.add_(5 * torch.randn(param.shape, generator=generator))
            on_step(step, 9.9)

    ctx = make_ctx()
    evaluator = NextTokenEvaluator(tiny_options)
    base = evaluator.evaluate(SyntheticTexts(()), tiny_data, ctx)
    monkeypatch.setattr(lm, "train", harmful_train)
    scores = evaluator.evaluate(SyntheticTexts(tiny_data.training_texts()), tiny_data, ctx)
    details = json.loads((ctx.output_dir / "next_token.json").read_text())
    assert details["selected_step"] == 0
    assert max(row[1] for row in details["curve"][1:]) <= details["curve"][0][1]
    assert scores == base


def test_same_budget_whatever_the_set_size(tiny_data, tiny_options, make_ctx, monkeypatch):
    seen = []
    real_train = lm.train
    monkeypatch.setattr(lm, "train", lambda *a, **k: (seen.append((k["steps"], k["batch_size"])), real_train(*a, **k)))
    evaluator = NextTokenEvaluator(tiny_options)
    ctx = make_ctx()
    evaluator.initial_model(tiny_data, ctx)
    seen.clear()
    evaluator.evaluate(SyntheticTexts(("one short text",)), tiny_data, ctx)
    evaluator.evaluate(SyntheticTexts(tiny_data.training_texts() * 3), tiny_data, ctx)
    assert seen == [(6, 4), (6, 4)]


def test_pretrained_model_cache_invalidation(tiny_data, tiny_options, make_ctx):
    ctx = make_ctx()
    evaluator = NextTokenEvaluator(tiny_options)
    first = evaluator.initial_model(tiny_data, ctx)
    assert evaluator.initial_model(tiny_data, ctx) == first
    other_public = dataclasses.replace(tiny_data, public=tiny_data.public[:-1])
    assert evaluator.initial_model(other_public, ctx) != first  # data changed
    wider = NextTokenEvaluator(dataclasses.replace(tiny_options, n_embd=16))
    assert wider.initial_model(tiny_data, ctx) != first  # model changed
    longer = NextTokenEvaluator(dataclasses.replace(tiny_options, pretrain_steps=7))
    assert longer.initial_model(tiny_data, ctx) != first  # pretraining changed
    # private data never changes the pretrained model
    other_private = dataclasses.replace(tiny_data, clients={"z": ("zzz",)}, test=("t",))
    assert evaluator.initial_model(other_private, ctx) == first


def test_evaluation_cache_invalidation(tiny_data, tiny_options, make_ctx, monkeypatch):
    evaluator = NextTokenEvaluator(tiny_options)
    ctx = make_ctx()
    texts = SyntheticTexts(tiny_data.training_texts())
    evaluator.evaluate(texts, tiny_data, ctx)
    runs = []
    real = NextTokenEvaluator._evaluate_texts
    monkeypatch.setattr(NextTokenEvaluator, "_evaluate_texts",
                        lambda self, *a: (runs.append(1), real(self, *a))[1])
    evaluator.evaluate(texts, tiny_data, ctx)
    assert runs == []  # same texts, data, seed: cached
    evaluator.evaluate(SyntheticTexts(texts.texts[1:]), tiny_data, ctx)  # texts changed
    evaluator.evaluate(texts, dataclasses.replace(tiny_data, test=tiny_data.test[1:]), ctx)  # test data changed
    evaluator.evaluate(texts, tiny_data, make_ctx(seed=9))  # seed changed
    assert len(runs) == 3


def test_trained_model_round_trip(tiny_data, tiny_options, make_ctx, tmp_path):
    """A federated method starts from initial_model and saves in the same format; scoring the
    untouched copy gives exactly the no-fine-tuning numbers."""
    evaluator = NextTokenEvaluator(tiny_options)
    ctx = make_ctx()
    start = evaluator.initial_model(tiny_data, ctx)
    copy = tmp_path / "trained"
    shutil.copytree(start, copy)
    trained = evaluator.evaluate(TrainedModel(copy), tiny_data, ctx)
    base = evaluator.evaluate(SyntheticTexts(()), tiny_data, ctx)
    assert trained == pytest.approx(base)
    assert evaluator.validation_score(TrainedModel(copy), tiny_data.for_method(), ctx) == pytest.approx(
        base["validation_accuracy"])
    for score in (evaluator.evaluate, evaluator.validation_score):
        with pytest.raises(EvaluationError, match="config.json"):
            score(TrainedModel(tmp_path), tiny_data, ctx)


def test_errors(tiny_data, tiny_options, make_ctx):
    evaluator = NextTokenEvaluator(tiny_options)
    with pytest.raises(EvaluationError, match="public"):
        evaluator.evaluate(SyntheticTexts(()), dataclasses.replace(tiny_data, public=()), make_ctx())
    with pytest.raises(EvaluationError, match="test split is empty"):
        evaluator.evaluate(SyntheticTexts(()), dataclasses.replace(tiny_data, test=()), make_ctx())
    with pytest.raises(EvaluationError, match="cannot evaluate"):
        evaluator.evaluate("texts", tiny_data, make_ctx())


def test_max_eval_texts(tiny_data, tiny_options, make_ctx):
    options = dataclasses.replace(tiny_options, max_eval_texts=3)
    result = NextTokenEvaluator(options).evaluate(SyntheticTexts(()), tiny_data, make_ctx())
    assert not math.isnan(result["accuracy"])
