import json
import math

import pytest
import torch

from dpbench.files import read_json, write_json
from dpbench.results import load_artifact, load_result
from dpbench.runner import Runner
from dpbench.suite import load_suite


def _run(path, tmp_path, overrides=(), **kwargs):
    suite = load_suite(path, overrides, runs_dir=tmp_path / "runs")
    return suite, Runner(suite, **kwargs).run()


def test_suite_runs_write_complete_run_folders(toy_plugin, toy_suite, tmp_path):
    suite, report = _run(toy_suite(), tmp_path, ["seeds=1"])
    assert len(report.completed) == len(suite.runs) == 4 and not report.failed
    for spec in suite.runs:
        folder = suite.folder / spec.run_id
        result = load_result(folder)
        assert result.spec["config_hash"] == spec.config_hash
        assert set(result.metrics["next_word"]) == {"accuracy", "unseen_rate"}
        assert read_json(folder / "spec.json")["suite_config"]["privacy"]["delta"] == 1e-5
        env = read_json(folder / "env.json")
        assert "packages" in env and env["intra_op_threads"] == torch.get_num_threads()
        assert (folder / "log.txt").exists()
    dp = next(s for s in suite.runs if s.method.label == "noisy_unigram")
    result = load_result(suite.folder / dp.run_id)
    assert result.privacy["noise_multiplier"] > 0
    assert 0 < result.privacy["epsilon_spent"] <= dp.epsilon
    assert [e["key"] for e in result.privacy["releases"]] == ["round-0", "round-1", "round-2"]
    assert len(read_json(suite.folder / dp.run_id / "samples.json")) == 20


def test_references_give_ordered_scores(toy_plugin, toy_suite, tmp_path):
    suite, _ = _run(toy_suite(), tmp_path, ["seeds=1"])
    by_method = {s.method.label: load_result(suite.folder / s.run_id) for s in suite.runs}
    zero = by_method["public_only"].metrics["next_word"]["accuracy"]
    inf = by_method["nonprivate"].metrics["next_word"]["accuracy"]
    assert inf > zero


def test_the_synthetic_public_row_writes_from_public_prompts_alone(toy_plugin, toy_suite, tiny_llama, tmp_path,
                                                                   monkeypatch):
    """ε = 0 and no ledger; the method is handed no client, and its texts are the shared
    generator's completions of public-seeded prompts, ``samples`` of them."""
    from dpbench.builtin.references import SyntheticPublic

    handed = []
    run = SyntheticPublic.run
    monkeypatch.setattr(SyntheticPublic, "run", lambda self, data, ctx: handed.append(data) or run(self, data, ctx))
    body = f"""\
        seeds: 1
        privacy: {{delta: 1e-5}}
        datasets: {{toy_texts: {{num_clients: 30}}}}
        methods:
          synthetic_public: {{model: {tiny_llama}, samples: 5, max_new_tokens: 6, truncate_tokens: 6}}
        evaluators: {{next_word: {{}}}}
        """
    suite, report = _run(toy_suite(body), tmp_path)
    assert not report.failed and [s.epsilon for s in suite.runs] == [0.0]
    folder = suite.folder / suite.runs[0].run_id
    result = load_result(folder)
    assert result.privacy["reference"] == "synthetic_public" and not result.privacy["releases"]
    assert not (folder / "ledger.jsonl").exists() or not (folder / "ledger.jsonl").read_text()
    assert handed[0].clients == {} and handed[0].public
    texts = load_artifact(folder).texts
    assert len(texts) == 5 and any(texts)


def test_completed_runs_are_skipped_and_force_redoes_them(toy_plugin, toy_suite, tmp_path):
    path = toy_suite()
    _run(path, tmp_path, ["seeds=1"])
    _, again = _run(path, tmp_path, ["seeds=1"])
    assert not again.completed and len(again.skipped) == 4
    _, forced = _run(path, tmp_path, ["seeds=1"], force=True)
    assert len(forced.completed) == 4


def test_same_seed_same_numbers_other_seed_other_noise(toy_plugin, toy_suite, tmp_path):
    path = toy_suite()
    suite, _ = _run(path, tmp_path, ["privacy.epsilon=1"])
    dp = [s for s in suite.runs if s.method.label == "noisy_unigram"]
    texts = [load_artifact(suite.folder / s.run_id).texts for s in dp]
    assert texts[0] != texts[1]
    suite2, _ = _run(path, tmp_path / "again", ["privacy.epsilon=1"])
    assert load_artifact(suite2.folder / dp[0].run_id).texts == texts[0]


def test_a_failing_run_is_recorded_and_the_others_continue(toy_plugin, toy_suite, tmp_path, monkeypatch):
    def broken(self, artifact, data, ctx):
        if not artifact.texts:
            raise RuntimeError("evaluator exploded")
        return {"accuracy": 0.5, "unseen_rate": 0.1}

    monkeypatch.setattr(toy_plugin.NextWord, "evaluate", broken)
    suite, report = _run(toy_suite(), tmp_path, ["seeds=1"])
    (failed,) = report.failed
    assert "public_only" in failed and "evaluator exploded" in report.failed[failed]
    assert "RuntimeError" in read_json(suite.folder / failed / "error.json")["traceback"]
    assert len(report.completed) == 3
    with pytest.raises(RuntimeError):
        _run(toy_suite(), tmp_path / "ff", ["seeds=1"], fail_fast=True)


def test_publishers_are_told_of_a_failed_run(toy_plugin, toy_suite, tmp_path, monkeypatch):
    from dpbench.hookspecs import hookimpl
    from dpbench.plugins import registered

    def broken(self, artifact, data, ctx):
        raise RuntimeError("evaluator exploded")

    class Recorder:
        calls = []

        @hookimpl
        def run_failed(self, run, error, folder):
            self.calls.append((run.run_id, str(error), (folder / "error.json").exists()))

    monkeypatch.setattr(toy_plugin.NextWord, "evaluate", broken)
    with registered(Recorder(), name="recorder"):
        suite, report = _run(toy_suite(), tmp_path, ["seeds=1", "privacy.epsilon=[1]"])
    assert sorted(Recorder.calls) == sorted((run_id, "evaluator exploded", True) for run_id in report.failed)
    assert len(Recorder.calls) == len(suite.runs)


def test_saved_artifact_is_reused_when_evaluation_was_interrupted(toy_plugin, toy_suite, tmp_path, monkeypatch):
    path = toy_suite()
    calls = []

    def interrupted(self, artifact, data, ctx):
        raise KeyboardInterrupt

    monkeypatch.setattr(toy_plugin.NextWord, "evaluate", interrupted)
    suite = load_suite(path, ["seeds=1", "~methods.public_only", "~methods.nonprivate"], runs_dir=tmp_path / "runs")
    with pytest.raises(KeyboardInterrupt):
        Runner(suite).run()
    monkeypatch.undo()
    original_run = toy_plugin.NoisyUnigram.run
    monkeypatch.setattr(toy_plugin.NoisyUnigram, "run", lambda self, d, c: calls.append(1) or original_run(self, d, c))
    report = Runner(suite).run()
    # the interrupted run reused its saved output; only the run never started called the method
    assert len(report.completed) == 2 and len(calls) == 1
    results = {spec.run_id: load_result(suite.folder / spec.run_id) for spec in suite.runs}
    reused = [run_id for run_id, result in results.items() if any("earlier attempt" in n for n in result.notes)]
    assert len(reused) == 1  # and its result still says what the method cost, from the first attempt
    (run_id,) = reused
    first = read_json(suite.folder / run_id / "artifact.json")["method_s"]
    assert results[run_id].timings["method_s"] == first > 0
    assert all("method_s" in result.timings for result in results.values())


def test_evaluator_must_return_declared_metrics(toy_plugin, toy_suite, tmp_path, monkeypatch):
    monkeypatch.setattr(toy_plugin.NextWord, "evaluate", lambda self, a, d, c: {"accuracy": 0.1})
    _, report = _run(toy_suite(), tmp_path, ["seeds=1", "~methods.noisy_unigram", "~methods.nonprivate"])
    (error,) = report.failed.values()
    assert "returned metrics ['accuracy'], but declares ['accuracy', 'unseen_rate']" in error


def test_delta_must_be_below_one_over_clients_before_any_run(toy_plugin, toy_suite, tmp_path):
    from dpbench.errors import ConfigError

    suite = load_suite(toy_suite(), ["seeds=1", "privacy.delta=0.05", "~methods.public_only", "~methods.nonprivate"],
                       runs_dir=tmp_path / "runs")
    with pytest.raises(ConfigError, match="privacy.delta: 0.05 is not allowed; expected a number below "
                                          "1/num_clients = 1/30"):
        Runner(suite).run()
    assert not list(suite.folder.glob("*__*"))  # no run folder left behind


def test_spec_round_trips_through_json(toy_plugin, toy_suite):
    from dpbench.suite import RunSpec

    spec = load_suite(toy_suite()).runs[-1]
    again = RunSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again.run_id == spec.run_id


def test_methods_get_the_evaluators_downstream_model(toy_plugin, toy_suite, tmp_path, monkeypatch):
    """A method that trains the evaluator's own starting model gets it resolved before it runs
    (``ctx.initial_model``); evaluators without one make the run fail with a clear error, and a
    method that does not declare it gets none."""
    seen = {}
    original = toy_plugin.NoisyUnigram.run

    def run(self, data, ctx):
        seen["path"] = ctx.downstream_model
        return original(self, data, ctx)

    monkeypatch.setattr(toy_plugin.NoisyUnigram, "run", run)
    _run(toy_suite(), tmp_path / "undeclared", ["seeds=1"])
    assert seen.pop("path") is None

    monkeypatch.setattr(toy_plugin.NoisyUnigram, "trains_downstream_model", True)
    _, report = _run(toy_suite(), tmp_path / "none", ["seeds=1"])
    assert all("none of the suite's evaluators provides one" in e for e in report.failed.values())
    assert len(report.failed) == 2 and "path" not in seen  # both ε rows failed before the method ran

    monkeypatch.setattr(toy_plugin.NextWord, "initial_model",
                        lambda self, data, ctx: tmp_path / f"model-{len(data.public)}", raising=False)
    _run(toy_suite(), tmp_path / "some", ["seeds=1"])
    assert seen["path"].name.startswith("model-") and seen["path"].name != "model-0"


def test_a_spec_read_back_from_json_is_not_run_with_default_options(toy_plugin, toy_suite, tmp_path):
    from dpbench.errors import DpbenchError
    from dpbench.suite import RunSpec

    suite = load_suite(toy_suite(), runs_dir=tmp_path / "runs")
    spec = RunSpec.from_dict(json.loads(json.dumps(suite.runs[-1].to_dict())))
    with pytest.raises(DpbenchError, match="no validated options"):
        Runner(suite).method(spec)


def test_a_trained_model_from_a_method_that_did_not_declare_it_is_refused(toy_plugin, toy_suite, tmp_path, monkeypatch):
    from dpbench.api import TrainedModel

    def run(self, data, ctx):
        return TrainedModel(path=ctx.checkpoint_dir)

    monkeypatch.setattr(toy_plugin.NoisyUnigram, "run", run)
    _, report = _run(toy_suite(), tmp_path, ["seeds=1", "privacy.epsilon=1"])
    (error,) = report.failed.values()
    assert "does not set Method.trains_downstream_model" in error


def test_a_private_method_at_infinite_epsilon_is_its_noise_free_row(toy_plugin, toy_suite, tmp_path):
    """ε = ∞ (``inf``) calibrates σ = 0: same releases, no noise, ε (ledger) = ∞ on the board."""
    from dpbench import leaderboard

    suite, report = _run(toy_suite(), tmp_path, ["seeds=1", "privacy.epsilon=[1,inf]"])
    assert not report.failed
    spec = next(s for s in suite.runs if s.method.label == "noisy_unigram" and s.epsilon == math.inf)
    result = load_result(suite.folder / spec.run_id)
    assert result.privacy["noise_multiplier"] == 0 and len(result.privacy["releases"]) == 3
    board = leaderboard.build(suite.name, leaderboard.collect(suite.folder), suite.metric)
    row = next(r for r in board.rows if r.method == "noisy_unigram" and r.epsilon == math.inf)
    assert row.epsilon_ledger == math.inf and not row.over_budget and row.reference is None
    assert row.diagnostics["cosine"] == pytest.approx(1.0) and row.diagnostics["signal_to_noise"] is None
    noisy = next(r for r in board.rows if r.method == "noisy_unigram" and r.epsilon == 1.0)
    assert noisy.diagnostics["cosine"] < 1


def test_a_suite_is_refused_where_its_runs_evaluator_model_would_be_rebuilt(toy_plugin, toy_suite, tmp_path,
                                                                          monkeypatch):
    """Runs already in the folder were scored against a pretrained evaluator built on machine A:
    on a machine that would rebuild it (B) the run stops before any work; where the entry is kept
    (the committed cache), or on A, it goes on."""
    from dpbench import cache as cache_module
    from dpbench.cache import BUILT_ON, CACHE_INPUTS, machine_label
    from dpbench.errors import DpbenchError
    from dpbench.models.precision import native_bf16

    suite, _ = _run(toy_suite(), tmp_path, ["seeds=1"])
    monkeypatch.setattr(cache_module, "this_machine", lambda device: "CPU B (native bf16)")
    entry = suite.cache_dir / "next_token" / "pretrained" / "0123"
    (done,) = [s for s in suite.runs if s.method.label == "public_only"]
    write_json(suite.folder / done.run_id / CACHE_INPUTS, {"next_token/pretrained/0123": ["CPU A (native bf16)"]})
    with pytest.raises(DpbenchError, match=r"holds runs on 'toy_texts' scored against next_token/pretrained/0123 "
                                           r"built on CPU A \(native bf16\): 1 runs.*built on CPU B"):
        _run(toy_suite(), tmp_path, ["seeds=1"])
    entry.mkdir(parents=True)
    (entry / BUILT_ON).write_text(json.dumps({"machine": "CPU A (native bf16)"}))  # the entry kept with the runs
    _run(toy_suite(), tmp_path, ["seeds=1"])
    (suite.folder / done.run_id / CACHE_INPUTS).unlink()  # a run made before the note, on A
    env = read_json(suite.folder / done.run_id / "env.json")
    write_json(suite.folder / done.run_id / "env.json", {**env, "cpu": "CPU A"})
    with pytest.raises(DpbenchError, match=r"scored against the evaluator's pretrained model \(not noted"):
        _run(toy_suite(), tmp_path, ["seeds=1"])
    a_here = machine_label("CPU A", native_bf16("cpu"))  # A, as env.json names it, differing from here in CPU only
    monkeypatch.setattr(cache_module, "this_machine", lambda device: a_here)
    _run(toy_suite(), tmp_path, ["seeds=1"])


def test_a_suite_is_refused_on_a_machine_that_differs_from_its_runs_in_native_bf16(toy_plugin, toy_suite, tmp_path,
                                                                                  monkeypatch):
    """`bf16: auto` follows native bf16, so runs added on a machine that differs from the folder's
    finished runs would be computed (and scored) at another precision, which the board refuses to
    mix: the run stops before any work, though the evaluator entry the runs read is at hand (the
    other check passes); on a like machine it goes on."""
    from dpbench.errors import DpbenchError
    from dpbench.models import precision

    suite, _ = _run(toy_suite(), tmp_path, ["seeds=1"])
    real = precision.native_bf16
    here = real("cpu")
    assert {read_json(suite.folder / s.run_id / "env.json")["native_bf16_cpu"] for s in suite.runs} == {here}
    monkeypatch.setattr(precision, "native_bf16", lambda device: not here)
    with pytest.raises(DpbenchError, match=rf"holds 4 runs made on a machine {'with' if here else 'without'} "
                                           rf"native bf16 .* this one {'lacks' if here else 'has'} it"):
        _run(toy_suite(), tmp_path, ["seeds=2"])
    assert len(list(suite.folder.glob("toy_texts__*"))) == 4  # no run folder was started
    monkeypatch.setattr(precision, "native_bf16", real)
    _, report = _run(toy_suite(), tmp_path, ["seeds=2"])
    assert len(report.completed) == 4 and len(report.skipped) == 4
