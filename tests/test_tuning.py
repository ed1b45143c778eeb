"""``dpbench tune``: every method the same budget of settings, chosen on validation only."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from dpbench.errors import ConfigError
from dpbench.tuning import load_tuning, settings, tune, tuning_suites, untuned, write_record


def _tuning(tmp_path, toy_suite, body: str):
    toy_suite()
    path = tmp_path / "tune.yaml"
    path.write_text(textwrap.dedent(body))
    return path


SPACE = """\
suite: toy.yaml
epsilon: 8
seed: 1
budget: 3
methods:
  noisy_unigram: {rounds: [1, 2, 3, 5], num_texts: [20, 50]}
"""

ONE_SEED_SUITE = """\
seeds: 1
privacy: {epsilon: [8], delta: 1e-5, accountant: rdp}
datasets:
  toy_texts: {num_clients: 30}
evaluators:
  next_word: {}
"""
"""a toy suite's head without methods: one seed, ε 8, the toy data and evaluator"""


def test_the_suites_setting_and_a_seeded_sample_of_the_rest(tmp_path, toy_suite, toy_plugin):
    plan = load_tuning(_tuning(tmp_path, toy_suite, SPACE))
    tried = settings(plan, "noisy_unigram", {"rounds": 3, "num_texts": 50, "sampling_rate": 1.0})
    assert tried[0] == {"rounds": 3, "num_texts": 50} and len(tried) == 3
    assert len({json.dumps(t, sort_keys=True) for t in tried}) == 3  # distinct, the suite's own not twice
    assert settings(plan, "noisy_unigram", {"rounds": 3, "num_texts": 50}) == tried  # seeded
    whole = settings(load_tuning(_tuning(tmp_path, toy_suite, SPACE.replace("budget: 3", "budget: 20"))),
                     "noisy_unigram", {"rounds": 3, "num_texts": 50})
    assert len(whole) == 8 and whole[0] == {"rounds": 3, "num_texts": 50}  # a small grid is tried whole
    planned = tuning_suites(plan, runs_dir=tmp_path / "runs")
    assert [s.own for s, _ in planned] == [True, False, False]
    for setting, suite in planned:  # one run each: the tuned method at the plan's ε and seed, nothing else
        (spec,) = suite.runs
        assert (spec.method.label, spec.epsilon, spec.seed) == ("noisy_unigram", 8.0, 1)
        assert {k: spec.method.options[k] for k in setting.values} == setting.values
        assert suite.folder == tmp_path / "runs" / "toy-tuning-eps8"


def test_runs_score_validation_only_and_the_record_names_the_best(tmp_path, toy_suite, toy_plugin, monkeypatch):
    from dpbench.testing.toy import NextWord

    def no_test(self, artifact, data, ctx):
        raise AssertionError("tuning read the test split")

    monkeypatch.setattr(NextWord, "evaluate", no_test)
    plan = load_tuning(_tuning(tmp_path, toy_suite, SPACE))
    record = tune(plan, runs_dir=tmp_path / "runs")
    rows = record["settings"]
    assert len(rows) == 3 and all(0 <= r["validation_score"] <= 1 and "error" not in r for r in rows)
    best = max(rows, key=lambda r: r["validation_score"])
    assert record["best"]["toy_texts/noisy_unigram"]["values"] == best["values"]
    assert all(0 < r["epsilon_spent"] <= 8 for r in rows)
    folder = tmp_path / "runs" / "toy-tuning-eps8" / rows[0]["run_id"]
    result = json.loads((folder / "result.json").read_text())
    assert set(result["metrics"]["next_word"]) == {"validation_score"} and "validation split only" in result["notes"][0]
    from dpbench import leaderboard

    assert leaderboard.collect(folder.parent) == []  # no board takes a run scored on validation
    again = tune(plan, runs_dir=tmp_path / "runs")  # finished settings are not run again
    assert again["settings"] == rows
    json_path, md_path = write_record(record, tmp_path / "out" / "record")
    assert json.loads(json_path.read_text())["best"] == record["best"]
    table = md_path.read_text()
    assert "dpbench tune" in table and f"**{best['validation_score']:.4f}**" in table and "suite's setting" in table


def test_over_seeds_each_setting_is_compared_with_the_suites_setting_paired_by_seed(tmp_path, toy_suite,
                                                                                    toy_plugin):
    from dpbench.leaderboard import paired_difference, summary

    screen = load_tuning(_tuning(tmp_path, toy_suite, SPACE.replace("budget: 3", "budget: 2")))
    first = tune(screen, runs_dir=tmp_path / "runs")
    plan = load_tuning(_tuning(tmp_path, toy_suite, SPACE.replace("budget: 3", "budget: 2\nseeds: 3")))
    assert [s.runs[i].seed for _, s in tuning_suites(plan, runs_dir=tmp_path / "runs") for i in range(3)] == [
        1, 2, 3, 1, 2, 3]
    folders = [tmp_path / "runs" / "toy-tuning-eps8" / r["run_id"] for r in first["settings"]]
    stamps = [(f / "result.json").stat().st_mtime_ns for f in folders]
    record = tune(plan, runs_dir=tmp_path / "runs")
    # the screen's seed-1 runs are the confirmation's, resumed, not redone
    assert {r["run_id"] for r in first["settings"]} <= {r["run_id"] for r in record["settings"]}
    assert [(f / "result.json").stat().st_mtime_ns for f in folders] == stamps
    scores = {(r["suite_setting"], str(r["seed"])): r["validation_score"] for r in record["settings"]}
    own = {seed: v for (is_own, seed), v in scores.items() if is_own}
    other = {seed: v for (is_own, seed), v in scores.items() if not is_own}
    entries = {e["suite_setting"]: e for e in record["summary"]}
    assert entries[True]["validation"] == summary(list(own.values())) and entries[True]["vs_suite_setting"] is None
    assert entries[False]["vs_suite_setting"] == paired_difference(other, own)
    best = record["best"]["toy_texts/noisy_unigram"]
    assert best["validation_score"] == max(e["validation"]["mean"] for e in entries.values())
    _, md = write_record(record, tmp_path / "record")
    comparison = entries[False]["vs_suite_setting"]
    verdict = "**significant**" if comparison["significant"] else "*n.s.*"
    assert f"{comparison['difference']:+.4f} ± {comparison['ci95']:.4f} ({verdict})" in md.read_text()
    assert "seeds 1–3 (the mean over seeds)" in md.read_text()


def test_an_interrupted_tuning_leaves_its_record_so_far(tmp_path, toy_suite, toy_plugin, monkeypatch):
    from dpbench.runner import Runner

    plan = load_tuning(_tuning(tmp_path, toy_suite, SPACE))
    run, calls = Runner.run, []

    def interrupted_at_the_second_setting(self):
        calls.append(self)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return run(self)

    monkeypatch.setattr(Runner, "run", interrupted_at_the_second_setting)
    with pytest.raises(KeyboardInterrupt):
        tune(plan, runs_dir=tmp_path / "runs", out=tmp_path / "record")
    record = json.loads((tmp_path / "record.json").read_text())
    first = tmp_path / "runs" / "toy-tuning-eps8" / record["settings"][0]["run_id"] / "result.json"
    stamp = first.stat().st_mtime_ns
    assert (record["settings_tried"], record["settings_planned"], len(record["settings"])) == (1, 3, 1)
    assert "Partial record**: 1 of 3 settings so far" in (tmp_path / "record.md").read_text()
    monkeypatch.setattr(Runner, "run", run)
    done = tune(plan, runs_dir=tmp_path / "runs", out=tmp_path / "record")  # resumed: the first is not redone
    assert (done["settings_tried"], done["settings_planned"]) == (3, 3)
    assert done["settings"][0] == record["settings"][0] and first.stat().st_mtime_ns == stamp
    assert json.loads((tmp_path / "record.json").read_text()) == json.loads(json.dumps(done))  # the whole record


def test_a_tunings_log_names_each_setting_and_closes_each_finished_suite(tmp_path, toy_suite, toy_plugin):
    """Hours of tuning in a log: each setting's start and end name its values, and a finished
    setting's suite row is closed, so the status line shows only the setting running; the
    tuning's own row closes when it ends."""
    import io
    import re

    from rich.console import Console

    from dpbench.progress import Progress

    plan = load_tuning(_tuning(tmp_path, toy_suite, SPACE))
    out = io.StringIO()
    with Progress(Console(file=out, force_terminal=False, width=200), interval=60) as progress:
        tune(plan, runs_dir=tmp_path / "runs", progress=progress)
        open_rows = progress.status()
    lines = [re.sub(r"^\[\d\d:\d\d:\d\d\] ", "", line) for line in out.getvalue().splitlines()]
    named = [f"{s.method}: {dict(s.values)}" for s, _ in tuning_suites(plan, runs_dir=tmp_path / "runs")]
    assert [line.removeprefix("start ") for line in lines if line.startswith("start noisy_unigram")] == [
        named[0] + " (the suite's setting)", *named[1:]]
    assert sum(line.startswith("start suite toy-tuning-eps8") for line in lines) == 3
    assert open_rows == "" and any(line.startswith("done tuning toy-tuning-eps8 (3/3") for line in lines)


def test_a_validation_scored_run_is_evaluated_again_for_a_board(tmp_path, toy_suite, toy_plugin):
    """The same run folder scored for tuning is not taken as a board's finished run: the saved
    output is scored on test (the method does not run again, no release is drawn again)."""
    from dpbench.results import load_result
    from dpbench.runner import Runner
    from dpbench.suite import load_suite

    suite = load_suite(toy_suite("""\
        privacy: {epsilon: 8, delta: 1e-5, accountant: rdp}
        datasets: {toy_texts: {num_clients: 30}}
        methods: {noisy_unigram: {}}
        evaluators: {next_word: {}}
        """), runs_dir=tmp_path / "runs")
    (spec,) = suite.runs
    Runner(suite, scoring="validation").run()
    folder = suite.folder / spec.run_id
    ledger = (folder / "ledger.jsonl").read_text()
    report = Runner(suite).run()
    assert report.completed == [spec.run_id]
    assert set(load_result(folder).metrics["next_word"]) == {"accuracy", "unseen_rate"}
    assert (folder / "ledger.jsonl").read_text() == ledger


@pytest.mark.parametrize(("edit", "message"), [
    (("budget: 3", "budget: 0"), "budget: 0 is not allowed; expected an integer >= 1"),
    (("seed: 1", "seed: 1\nseeds: 0"), "seeds: 0 is not allowed; expected an integer >= 1"),
    (("epsilon: 8", "epsilon: .inf"), "epsilon: inf is not allowed; expected a finite number > 0"),
    (("seed: 1", "sede: 1"), "one of the tuning keys: .* Did you mean 'seed'"),
    (("rounds: [1, 2, 3, 5]", "rounds: [1, 1]"), "methods.noisy_unigram.rounds: .* distinct values"),
    (("rounds: [1, 2, 3, 5]", "round: [1, 2]"), "methods.noisy_unigram.round: .* Did you mean 'rounds'"),
    (("noisy_unigram:", "noisy_unigrm:"), "methods.noisy_unigrm: .* Did you mean 'noisy_unigram'"),
    (("noisy_unigram:", "public_only:"), "a reference row has nothing to tune"),
])
def test_errors_name_the_field_and_what_is_allowed(tmp_path, toy_suite, toy_plugin, edit, message):
    with pytest.raises(ConfigError, match=message):
        tuning_suites(load_tuning(_tuning(tmp_path, toy_suite, SPACE.replace(*edit))), runs_dir=tmp_path / "runs")


def test_the_command_lists_then_runs_and_writes_the_record(tmp_path, toy_suite, toy_plugin, monkeypatch):
    from click.testing import CliRunner

    from dpbench.cli import cli

    path = _tuning(tmp_path, toy_suite, SPACE)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    listed = runner.invoke(cli, ["tune", str(path), "--dry-run"])
    assert listed.exit_code == 0, listed.output
    assert listed.output.count("noisy_unigram: {") == 3 and "(the suite's setting)" in listed.output
    assert not (tmp_path / "runs").exists()
    done = runner.invoke(cli, ["tune", str(path), "--out", "rec/toy"])
    assert done.exit_code == 0, done.output
    assert "## noisy_unigram on toy_texts" in done.output
    # the record names the command that made it and resumes it, options included
    assert json.loads((tmp_path / "rec" / "toy.json").read_text())["command"] == (
        f"dpbench tune {path.as_posix()} --out rec/toy")


def test_a_private_method_without_a_space_is_named_as_untuned(tmp_path, toy_suite, toy_plugin):
    body = ("methods:\n  public_only: {}\n  nonprivate: {}\n  noisy_unigram: {rounds: 3}\n"
            "  other: {plugin: noisy_unigram}\n")
    toy_suite("description: two private methods\n" + ONE_SEED_SUITE + body)
    path = tmp_path / "tune.yaml"
    path.write_text(SPACE)
    plan = load_tuning(path)
    assert untuned(plan, runs_dir=tmp_path / "runs") == ["other"]  # the references have nothing to tune
    record = tune(plan, runs_dir=tmp_path / "runs")
    assert record["untuned"] == ["other"]
    (md,) = [p for p in write_record(record, tmp_path / "record") if p.suffix == ".md"]
    assert "Not tuned here (they keep the suite's setting): other." in md.read_text()
    assert untuned(load_tuning(_tuning(tmp_path, toy_suite, SPACE)), runs_dir=tmp_path / "runs") == []


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "suites" / "tuning").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_each_committed_tuning_file_gives_every_private_method_of_its_suite_the_budget(path, tmp_path):
    """Through the installed plugins, as a user runs it: the file's options still exist, and a
    screen (one seed) leaves no private method of its suite untuned and tries the budget for each
    (the protocol is the same for every method); a confirmation (several seeds) runs the methods
    whose screen chose another setting than the suite's, each at most the budget."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "WANDB_MODE": "disabled"}
    env.pop("DPBENCH_LOAD_PLUGINS", None)
    out = subprocess.run([sys.executable, "-m", "dpbench", "tune", str(path), "--dry-run",
                          "--runs-dir", str(tmp_path / "runs")], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    plan = load_tuning(path)
    listed = [line.split(":", 1)[0] for line in out.stdout.splitlines() if not line.startswith("not tuned by")]
    if plan.seeds == 1:
        assert "not tuned by" not in out.stdout
        assert {label: listed.count(label) for label in plan.spaces} == dict.fromkeys(plan.spaces, plan.budget)
    else:
        assert all(1 <= listed.count(label) <= plan.budget for label in plan.spaces)


def test_a_setting_scored_at_fewer_seeds_is_not_chosen_over_one_scored_at_all(tmp_path, toy_suite, toy_plugin):
    from dpbench import tuning

    plan = load_tuning(_tuning(tmp_path, toy_suite, SPACE.replace("budget: 3", "budget: 2\nseeds: 3")))

    def row(own, seed, score):
        return {"dataset": "d", "method": "m", "values": {"rounds": 3 if own else 5}, "suite_setting": own,
                "seed": seed, "run_id": f"{own}{seed}", "validation_score": score, "method_minutes": 1.0}

    rows = [row(True, 1, 0.20), row(True, 2, 0.21), row(True, 3, 0.22),  # the suite's setting: all three seeds
            row(False, 1, 0.30), row(False, 2, None), row(False, 3, None)]  # two of its runs failed
    record = tuning._record(plan, rows, None, [], planned=(2, 2))
    assert record["best"]["d/m"]["values"] == {"rounds": 3}
    assert record["best"]["d/m"]["vs_suite_setting"] is None
    _, md = write_record(record, tmp_path / "record")
    assert "0.3000 (n = 1)" in md.read_text() and "minutes (all seeds)" in md.read_text()


def test_a_tuning_runs_only_the_methods_asked_for_and_its_record_keeps_the_others(tmp_path, toy_suite,
                                                                                 toy_plugin, monkeypatch):
    """``--method``: a long tuning's part run first; the record keeps every finished setting, and a
    later call runs the rest without redoing any."""
    import copy

    from click.testing import CliRunner

    from dpbench import tuning
    from dpbench.cli import cli

    toy_suite(ONE_SEED_SUITE + "methods:\n  noisy_unigram: {rounds: 3}\n  other: {plugin: noisy_unigram, rounds: 3}\n")
    path = tmp_path / "tune.yaml"
    path.write_text(SPACE.replace("budget: 3", "budget: 2") + "  other: {rounds: [1, 3]}\n")
    plan = load_tuning(path)
    first = tune(plan, runs_dir=tmp_path / "runs", methods=["other"])
    assert {r["method"] for r in first["settings"]} == {"other"}
    assert (first["settings_tried"], first["settings_planned"]) == (2, 4)
    stamps = {r["run_id"]: (tmp_path / "runs" / "toy-tuning-eps8" / r["run_id"] / "result.json").stat().st_mtime_ns
              for r in first["settings"]}
    written = []
    monkeypatch.setattr(tuning, "write_record", lambda rec, out: written.append(copy.deepcopy(rec)))
    record = tune(plan, runs_dir=tmp_path / "runs", methods=["noisy_unigram"], out=tmp_path / "rec")
    assert (record["settings_tried"], record["settings_planned"]) == (4, 4)
    # the record written after the part's first setting already holds the other method's, which
    # come later in the plan: a tuning stopped there keeps them
    assert (written[0]["settings_tried"], {r["method"] for r in written[0]["settings"]}) == (
        3, {"noisy_unigram", "other"})
    assert [r for r in record["settings"] if r["method"] == "other"] == first["settings"]
    assert set(record["best"]) == {"toy_texts/noisy_unigram", "toy_texts/other"}
    assert {run_id: (tmp_path / "runs" / "toy-tuning-eps8" / run_id / "result.json").stat().st_mtime_ns
            for run_id in stamps} == stamps  # the first part is not run again
    with pytest.raises(ConfigError, match="method: 'noisy_unigrm' is not allowed.*Did you mean 'noisy_unigram'"):
        tune(plan, runs_dir=tmp_path / "runs", methods=["noisy_unigrm"])
    listed = CliRunner().invoke(cli, ["tune", str(path), "--runs-dir", str(tmp_path / "runs"), "--dry-run",
                                      "--method", "other"])
    assert listed.exit_code == 0, listed.output
    assert [line.split(":", 1)[0] for line in listed.output.splitlines()] == ["other", "other"]
    wrong = CliRunner().invoke(cli, ["tune", str(path), "--dry-run", "--method", "othr"])
    assert wrong.exit_code != 0 and "Did you mean 'other'" in wrong.output


def test_options_joined_with_plus_move_together(tmp_path, toy_suite, toy_plugin):
    """``a+b: [[a1, b1], …]``: the grid pairs the values only as listed (e.g. 8 samples a prompt
    only with the middle rejected rank), and each run gets every option of its pair."""
    plan = load_tuning(_tuning(tmp_path, toy_suite, SPACE.replace(
        "{rounds: [1, 2, 3, 5], num_texts: [20, 50]}", "{rounds+num_texts: [[1, 20], [5, 20], [3, 50]]}")))
    tried = settings(plan, "noisy_unigram", {"rounds": 3, "num_texts": 50})
    assert tried == [{"rounds": 3, "num_texts": 50}, {"rounds": 1, "num_texts": 20}, {"rounds": 5, "num_texts": 20}]
    planned = tuning_suites(plan, runs_dir=tmp_path / "runs")
    assert [(s.runs[0].method.options["rounds"], s.runs[0].method.options["num_texts"]) for _, s in planned] == [
        (3, 50), (1, 20), (5, 20)]
    assert [s.own for s, _ in planned] == [True, False, False]
    with pytest.raises(ConfigError, match=r"methods.noisy_unigram.rounds\+num_texts: .* \[rounds, num_texts\] lists"):
        load_tuning(_tuning(tmp_path, toy_suite, SPACE.replace(
            "{rounds: [1, 2, 3, 5], num_texts: [20, 50]}", "{rounds+num_texts: [[1, 20], 5]}")))
    with pytest.raises(ConfigError, match="methods.noisy_unigram.rounds: .* one key of the space only"):
        load_tuning(_tuning(tmp_path, toy_suite, SPACE.replace(
            "{rounds: [1, 2, 3, 5], num_texts: [20, 50]}", "{rounds+num_texts: [[1, 20]], rounds: [2]}")))
    with pytest.raises(ConfigError, match="methods.noisy_unigram.num_txts: .* Did you mean 'num_texts'"):
        tuning_suites(load_tuning(_tuning(tmp_path, toy_suite, SPACE.replace(
            "{rounds: [1, 2, 3, 5], num_texts: [20, 50]}", "{rounds+num_txts: [[1, 20]]}"))), runs_dir=tmp_path)


def test_a_suites_committed_screens_try_the_same_settings_at_each_epsilon():
    """The protocol screens a board's options at ε = 7 and then at ε = 1 with the same values,
    budget and seed, so a choice that differs between the two is the noise's doing, not another
    sample of the grid (a confirmation, at several seeds, tries each ε's own winner)."""
    plans = [load_tuning(p) for p in sorted((Path(__file__).parents[1] / "suites" / "tuning").glob("*.yaml"))]
    screens: dict[tuple, list] = {}
    for plan in plans:
        if plan.seeds == 1:
            options = tuple(sorted((label, tuple(sorted(space))) for label, space in plan.spaces.items()))
            screens.setdefault((plan.suite.resolve(), options), []).append(plan)
    assert any(len(same) > 1 for same in screens.values())
    for same in screens.values():
        assert len({plan.epsilon for plan in same}) == len(same)
        assert all((p.spaces, p.budget, p.seed, p.baseline) == (same[0].spaces, same[0].budget, same[0].seed,
                                                                same[0].baseline) for p in same)


def test_the_suites_setting_reuses_the_boards_run_made_on_a_machine_like_this(tmp_path, toy_suite, toy_plugin,
                                                                               monkeypatch):
    """The suite's setting at the board's ε and seed is the board's run: its saved output is
    scored on validation (the same score as running it), not run again; a board run made on
    another CPU is run afresh, since its bits may differ, and so is one whose saved texts are
    gone (a committed board keeps none), without a damaged copy left behind."""
    import json as json_module

    from dpbench import runner as runner_module
    from dpbench.results import saved_method_seconds as board_seconds
    from dpbench.runner import Runner
    from dpbench.suite import load_suite

    plan = load_tuning(_tuning(tmp_path, toy_suite, SPACE))
    alone = tune(plan, runs_dir=tmp_path / "alone")  # no board beside it: every setting runs
    ran, real = [], runner_module._run_method
    monkeypatch.setattr(runner_module, "_run_method", lambda spec, *args: ran.append(spec.run_id) or real(spec, *args))
    for runs, change in (("runs", None), ("elsewhere", "another CPU"), ("committed", "texts gone")):
        Runner(load_suite(plan.suite, runs_dir=tmp_path / runs)).run()  # the board, scored on test
        own = next(r for r in alone["settings"] if r["suite_setting"])["run_id"]
        if change == "another CPU":
            env_path = tmp_path / runs / "toy" / own / "env.json"
            env_path.write_text(json_module.dumps({**json_module.loads(env_path.read_text()), "cpu": change}))
        elif change:
            (tmp_path / runs / "toy" / own / "synthetic.jsonl").unlink()
        ran.clear()
        record = tune(plan, runs_dir=tmp_path / runs)
        assert [r["validation_score"] for r in record["settings"]] == [r["validation_score"] for r in alone["settings"]]
        assert (own in ran) == bool(change) and len(ran) == (3 if change else 2)
        assert not (tmp_path / runs / "toy-tuning-eps8" / ".damaged").exists()
        assert all(r["method_minutes"] is not None for r in record["settings"])  # a reused run keeps its cost
    copied = json_module.loads((tmp_path / "runs" / "toy-tuning-eps8" / own / "result.json").read_text())
    assert set(copied["metrics"]["next_word"]) == {"validation_score"}
    assert copied["timings"]["method_s"] == board_seconds(tmp_path / "runs" / "toy" / own)
    board = json_module.loads((tmp_path / "runs" / "toy" / own / "result.json").read_text())
    assert "validation_score" not in board["metrics"]["next_word"]  # the board's run is left as it was


def test_the_dry_run_says_what_running_would_do_with_each_settings_runs(tmp_path, toy_suite, toy_plugin):
    """Before a long tuning, its dry run says which runs are done, which the board's run of the
    suite's setting serves, and which would run or resume."""
    from click.testing import CliRunner

    from dpbench.cli import cli
    from dpbench.runner import Runner
    from dpbench.suite import load_suite

    path = _tuning(tmp_path, toy_suite, SPACE)
    plan = load_tuning(path)

    def listed():
        out = CliRunner().invoke(cli, ["tune", str(path), "--runs-dir", str(tmp_path / "runs"), "--dry-run"])
        assert out.exit_code == 0, out.output
        return [line.rsplit(": ", 1)[1] for line in out.output.splitlines()]

    assert listed() == ["1 to run"] * 3
    Runner(load_suite(plan.suite, runs_dir=tmp_path / "runs")).run()  # the board, scored on test
    assert listed() == ["1 from the board", "1 to run", "1 to run"]
    record = tune(plan, runs_dir=tmp_path / "runs")
    assert listed() == ["1 complete"] * 3
    (tmp_path / "runs" / "toy-tuning-eps8" / record["settings"][1]["run_id"] / "result.json").unlink()
    assert listed() == ["1 complete", "1 resumes", "1 complete"]


def test_the_record_names_each_runs_machine_and_says_when_they_differ(tmp_path, toy_suite, toy_plugin):
    import json as json_module

    from dpbench.cache import machine_label

    plan = load_tuning(_tuning(tmp_path, toy_suite, SPACE))
    record = tune(plan, runs_dir=tmp_path / "runs")
    env_path = tmp_path / "runs" / "toy-tuning-eps8" / record["settings"][0]["run_id"] / "env.json"
    env = json_module.loads(env_path.read_text())
    here = machine_label(env["cpu"], env["native_bf16_cpu"])
    assert [r["machine"] for r in record["settings"]] == [here] * 3
    _, md = write_record(record, tmp_path / "record")
    assert "different machines" not in md.read_text()
    env_path.write_text(json_module.dumps({**env, "cpu": "Other CPU"}))
    record = tune(plan, runs_dir=tmp_path / "runs")  # resumed: the rows are read again from the folders
    other = machine_label("Other CPU", env["native_bf16_cpu"])
    assert [r["machine"] for r in record["settings"]] == [other, here, here]
    _, md = write_record(record, tmp_path / "record")
    assert "Runs made on different machines" in md.read_text()
    assert f"{here}: noisy_unigram 2" in md.read_text() and f"{other}: noisy_unigram 1" in md.read_text()


def test_a_baseline_pins_the_setting_compared_against_after_the_suite_adopts_another(tmp_path, toy_suite,
                                                                                      toy_plugin):
    """A suite that adopts a tuning's winner changes "the suite's setting" and the grid's sample;
    the file's ``baseline`` keeps both, so its command reproduces its record."""
    toy_suite()
    before = settings(load_tuning(_tuning(tmp_path, toy_suite, SPACE)), "noisy_unigram", {"rounds": 3, "num_texts": 50})
    suite_file = tmp_path / "toy.yaml"
    suite_file.write_text(suite_file.read_text().replace("rounds: 3", "rounds: 5"))  # the suite adopts rounds 5
    pinned = SPACE + "baseline:\n  noisy_unigram: {rounds: 3}\n"
    planned = tuning_suites(load_tuning(_tuning(tmp_path, lambda: None, pinned)), runs_dir=tmp_path / "runs")
    assert [{k: s.runs[0].method.options[k] for k in ("rounds", "num_texts")} for _, s in planned] == before
    assert [s.own for s, _ in planned] == [True, False, False]
    moved = tuning_suites(load_tuning(_tuning(tmp_path, lambda: None, SPACE)), runs_dir=tmp_path / "runs")
    assert moved[0][1].runs[0].method.options["rounds"] == 5  # without it, the adopted setting is the baseline
    record = tune(load_tuning(tmp_path / "tune.yaml"), runs_dir=tmp_path / "runs")
    assert record["baseline"] == {}
    (md,) = [p for p in write_record(tune(load_tuning(_tuning(tmp_path, lambda: None, pinned)),
                                          runs_dir=tmp_path / "runs"), tmp_path / "rec") if p.suffix == ".md"]
    assert "(its `baseline`)" in md.read_text() and "noisy_unigram rounds 3" in md.read_text()
    for body, message in [(pinned.replace("noisy_unigram: {rounds: 3}", "noisy_unigrm: {rounds: 3}"),
                           "baseline.noisy_unigrm: .* Did you mean 'noisy_unigram'"),
                          (pinned.replace("{rounds: 3}", "{}"), "baseline.noisy_unigram: .* non-empty mapping")]:
        with pytest.raises(ConfigError, match=message):
            load_tuning(_tuning(tmp_path, lambda: None, body))
    with pytest.raises(ConfigError, match="methods.noisy_unigram.round: .* Did you mean 'rounds'"):
        tuning_suites(load_tuning(_tuning(tmp_path, lambda: None, pinned.replace("{rounds: 3}", "{round: 3}"))),
                      runs_dir=tmp_path / "runs")


def test_a_board_scores_the_tuning_run_of_a_setting_it_adopted_instead_of_running_it_again(tmp_path, toy_suite,
                                                                                            toy_plugin, monkeypatch):
    """After the suite adopts a tuning's winner, the board's run at the tuning's ε and seed is the
    tuning's run: ``dpbench run`` copies it (only when made on a machine like this one) and scores
    its saved output on test, keeping its ledger; the dry run says so."""
    from click.testing import CliRunner

    from dpbench import runner as runner_module
    from dpbench.cli import cli
    from dpbench.results import load_result

    plan = load_tuning(_tuning(tmp_path, toy_suite, SPACE))
    for runs in ("runs", "elsewhere"):
        tune(plan, runs_dir=tmp_path / runs)
    winner = tuning_suites(plan, runs_dir=tmp_path / "runs")[1]
    (adopted,) = winner[1].runs
    suite_file = tmp_path / "toy.yaml"
    suite_file.write_text(suite_file.read_text().replace(
        "noisy_unigram: {rounds: 3}", "noisy_unigram: " + json.dumps(dict(winner[0].values))))
    tuned = tmp_path / "elsewhere" / "toy-tuning-eps8" / adopted.run_id / "env.json"
    tuned.write_text(json.dumps({**json.loads(tuned.read_text()), "cpu": "another CPU"}))
    ran, real = [], runner_module._run_method
    monkeypatch.setattr(runner_module, "_run_method", lambda spec, *args: ran.append(spec.run_id) or real(spec, *args))
    for runs, reused in (("runs", True), ("elsewhere", False)):
        ledger = (tmp_path / runs / "toy-tuning-eps8" / adopted.run_id / "ledger.jsonl").read_text()
        listed = CliRunner().invoke(cli, ["run", str(suite_file), "--runs-dir", str(tmp_path / runs), "--dry-run"])
        assert listed.exit_code == 0, listed.output
        assert ("1 run(s) are a tuning's, made on a machine like this one: copied from toy-tuning-eps8"
                in listed.output) == reused
        ran.clear()
        done = CliRunner().invoke(cli, ["run", str(suite_file), "--runs-dir", str(tmp_path / runs)])
        assert done.exit_code == 0, done.output
        assert (f"{adopted.run_id}: the tuning's run of this setting" in done.output) == reused
        board = tmp_path / runs / "toy" / adopted.run_id
        assert (adopted.run_id in ran) != reused and len(ran) == 8 - reused  # the grid's 8 runs, less the copied one
        assert set(load_result(board).metrics["next_word"]) == {"accuracy", "unseen_rate"}
        assert ((board / "ledger.jsonl").read_text() == ledger) == reused
