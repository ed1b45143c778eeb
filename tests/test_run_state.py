"""A method's JSON state under ctx.checkpoint_dir: saved atomically, read back on resume."""

import math

import pytest

from dpbench.api import PrivacyBudget, RunContext


@pytest.fixture
def ctx(tmp_path):
    return RunContext(run_id="r", seed=0, output_dir=tmp_path, budget=PrivacyBudget(epsilon=1, delta=1e-5), cache=None)


def test_state_round_trips_under_the_checkpoint_folder(ctx):
    assert ctx.load_state("round000/round.json") is None and ctx.load_state("monitor.json", default=[]) == []
    ctx.save_state("round000/round.json", {"monitor": {"fid": 1.5, "lost": math.nan}, "texts": ["a", "é"]})
    assert ctx.load_state("round000/round.json") == {"monitor": {"fid": 1.5, "lost": "nan"}, "texts": ["a", "é"]}
    ctx.save_state("round000/round.json", [1])
    assert ctx.load_state("round000/round.json") == [1]
    assert sorted(p.name for p in (ctx.checkpoint_dir / "round000").iterdir()) == ["round.json"]  # no temp files


def test_state_stays_inside_the_checkpoint_folder(ctx):
    with pytest.raises(ValueError, match="outside the checkpoint folder"):
        ctx.save_state("../result.json", {})
    with pytest.raises(ValueError, match="outside the checkpoint folder"):
        ctx.load_state("/etc/hosts")
    for folder_itself in ("", "."):
        with pytest.raises(ValueError, match="outside the checkpoint folder"):
            ctx.save_state(folder_itself, {})


def test_validation_score_goes_to_the_scorer_the_runner_handed_over(ctx):
    from dpbench.api import DpbenchError, Evaluator, MethodData

    with pytest.raises(DpbenchError, match="no validation scorer"):
        ctx.validation_score(["a"])

    class TestOnly(Evaluator):
        def evaluate(self, artifact, data, ctx):
            return {}

    ctx.validation_scorer = lambda texts: TestOnly().validation_score(texts, MethodData(clients={}), ctx)
    with pytest.raises(DpbenchError, match="TestOnly cannot score on the validation split"):
        ctx.validation_score(["a"])
    seen = []
    ctx.validation_scorer = lambda artifact: seen.append(artifact.texts) or 0.25
    assert ctx.validation_score(t for t in ("a", "b")) == 0.25 and seen == [("a", "b")]
