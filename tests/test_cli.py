import json
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

from dpbench.cli import cli
from dpbench.suite import PUBLISH_OVERRIDE, load_suite


def test_cli_start_imports_no_heavy_packages():
    code = ("import sys; from dpbench.cli import cli; "
            "heavy = [m for m in ('torch', 'transformers', 'wandb', 'vllm', 'flwr', 'hydra', 'numpy') "
            "if m in sys.modules]; "
            "assert not heavy, heavy")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_help_lists_every_command():
    out = CliRunner().invoke(cli, ["--help"])
    assert out.exit_code == 0
    for command in ("run", "validate", "list", "plugins", "leaderboard", "publish", "privacy", "audit"):
        assert command in out.output


def test_validate_and_dry_run(toy_plugin, toy_suite):
    path = str(toy_suite())
    out = CliRunner().invoke(cli, ["validate", path, "seeds=1"])
    assert out.exit_code == 0, out.output
    assert "valid, 4 runs" in out.output
    dry = CliRunner().invoke(cli, ["run", path, "--dry-run"])
    assert dry.exit_code == 0 and "8 runs" in dry.output


def test_dry_run_says_what_each_run_would_do_and_what_is_left(toy_plugin, toy_suite, tmp_path):
    path, runs = str(toy_suite()), str(tmp_path / "runs")
    assert CliRunner().invoke(cli, ["run", path, "seeds=1", "--runs-dir", runs]).exit_code == 0
    folder = load_suite(path, ["seeds=1"], runs_dir=runs).folder
    for interrupted in [d for d in folder.iterdir() if "noisy_unigram__eps1__" in d.name or "public_only" in d.name]:
        (interrupted / "result.json").unlink()  # as a run killed before its evaluation
    dry = CliRunner(env={"COLUMNS": "250"}).invoke(cli, ["run", path, "seeds=2", "--runs-dir", runs, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    states = re.findall(r"│ (complete|resumes|redone|to run) +│", dry.output)
    assert sorted(states) == ["complete"] * 2 + ["resumes"] * 2 + ["to run"] * 4
    # estimated: nonprivate's and noisy_unigram's runs from their finished ones; public_only has none
    assert re.search(r"toy: 2 of 8 runs complete, 6 to do; ≈ (\d+ min|< 1 min) for 4 of them, .*"
                     r"\(2 with none finished to go by\)", dry.output), dry.output

    def states(*args):
        out = CliRunner(env={"COLUMNS": "250"}).invoke(cli, ["run", path, "--runs-dir", runs, "--dry-run", *args])
        assert out.exit_code == 0, out.output
        return sorted(re.findall(r"│ (complete|resumes|rescored|redone|refused|to run) +│", out.output))

    assert states("seeds=1", "--shard", "1/2") == ["resumes", "resumes"]  # public_only, noisy_unigram ε = 1
    assert states("seeds=2", "--force") == ["redone"] * 4 + ["to run"] * 4
    (tuned,) = [d for d in folder.iterdir() if "nonprivate" in d.name]
    result = json.loads((tuned / "result.json").read_text())
    result["metrics"]["next_word"] = {"validation_score": 0.5}  # as scored by dpbench tune
    (tuned / "result.json").write_text(json.dumps(result))
    (damaged,) = [d for d in folder.iterdir() if "noisy_unigram__eps8__" in d.name]
    ledger = damaged / "ledger.jsonl"
    ledger.write_text(ledger.read_text().splitlines()[0] + "\n")  # a lost release: the run is redone
    assert states("seeds=1") == ["redone", "rescored", "resumes", "resumes"]

    left_out = CliRunner().invoke(cli, ["run", path, "seeds=1", "~methods.nonprivate", "--runs-dir", runs,
                                        "--dry-run"])
    assert f"1 run folder(s) in {folder} are no run of this grid" in left_out.output, left_out.output
    assert tuned.name in left_out.output
    assert "are no run of this grid" not in CliRunner().invoke(
        cli, ["run", path, "seeds=1", "--runs-dir", runs, "--dry-run"]).output


def test_the_time_left_goes_by_the_median_so_a_paused_run_does_not_inflate_it(toy_plugin, toy_suite, tmp_path):
    path, runs = str(toy_suite()), str(tmp_path / "runs")
    assert CliRunner().invoke(cli, ["run", path, "seeds=3", "--runs-dir", runs]).exit_code == 0
    folder = load_suite(path, ["seeds=3"], runs_dir=runs).folder
    seconds = {"public_only": [60] * 3, "nonprivate": [60, 60, 3600], "noisy_unigram": [120] * 6}  # one paused
    for run in sorted(folder.iterdir()):
        if (run / "result.json").exists():
            result = json.loads((run / "result.json").read_text())
            result["timings"]["total_s"] = seconds[result["spec"]["method"]["label"]].pop()
            (run / "result.json").write_text(json.dumps(result))
    dry = CliRunner().invoke(cli, ["run", path, "seeds=4", "--runs-dir", runs, "--dry-run"])
    assert "toy: 12 of 16 runs complete, 4 to do; ≈ 6 min for 4 of them" in dry.output, dry.output  # 60+60+120+120 s
    tuned = next(run for run in sorted(folder.iterdir()) if "nonprivate" in run.name)
    result = json.loads((tuned / "result.json").read_text())
    result["metrics"]["next_word"] = {"validation_score": 0.5}  # scored by dpbench tune: only its evaluation is left
    result["timings"]["evaluate_next_word_s"] = 120
    (tuned / "result.json").write_text(json.dumps(result))
    dry = CliRunner().invoke(cli, ["run", path, "seeds=4", "--runs-dir", runs, "--dry-run"])
    assert "toy: 11 of 16 runs complete, 5 to do; ≈ 8 min for 5 of them" in dry.output, dry.output  # + 120 s


def test_dry_run_times_what_is_left_by_this_machines_runs_where_it_made_any(toy_plugin, toy_suite, tmp_path):
    path, runs = str(toy_suite()), str(tmp_path / "runs")
    assert CliRunner().invoke(cli, ["run", path, "seeds=1", "--runs-dir", runs]).exit_code == 0
    folder = load_suite(path, ["seeds=1"], runs_dir=runs).folder
    for run in (d for d in folder.iterdir() if (d / "result.json").is_file()):
        elsewhere = "nonprivate" in run.name or "noisy_unigram__eps1__" in run.name
        result = json.loads((run / "result.json").read_text())
        result["timings"]["total_s"] = 7200.0 if elsewhere else 60.0
        (run / "result.json").write_text(json.dumps(result))
        if elsewhere:
            env = json.loads((run / "env.json").read_text())
            env["cpu"] = "Other CPU"
            (run / "env.json").write_text(json.dumps(env))
    dry = CliRunner(env={"COLUMNS": "250"}).invoke(cli, ["run", path, "seeds=2", "--runs-dir", runs, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    # seed 1's four runs: public_only 60 s, nonprivate 7200 s (made elsewhere only), and noisy_unigram's two
    # at the 60 s of its run made here, not at the 3630 s median with the one made elsewhere
    assert "≈ 2 h 03 min for 4 of them" in dry.output, dry.output
    assert "some timed only on Other CPU (" in dry.output, dry.output


def test_dry_run_says_when_this_machine_would_be_refused(toy_plugin, toy_suite, tmp_path, monkeypatch):
    """Runs in the folder scored against an evaluator model built on another machine, which this
    one would rebuild: the plan says running here would be refused, and why; it still lists the runs."""
    from dpbench import cache as cache_module
    from dpbench.cache import CACHE_INPUTS
    from dpbench.files import write_json
    from dpbench.models import precision

    path, runs = str(toy_suite()), str(tmp_path / "runs")
    assert CliRunner().invoke(cli, ["run", path, "seeds=1", "--runs-dir", runs]).exit_code == 0
    folder = load_suite(path, ["seeds=1"], runs_dir=runs).folder
    dry = CliRunner().invoke(cli, ["run", path, "seeds=2", "--runs-dir", runs, "--dry-run"])
    assert "would be refused" not in dry.output, dry.output
    (done,) = [d for d in folder.iterdir() if "public_only" in d.name]
    write_json(done / CACHE_INPUTS, {"next_token/pretrained/0123": ["CPU A (native bf16)"]})
    monkeypatch.setattr(cache_module, "this_machine", lambda device: "CPU B (native bf16)")
    dry = CliRunner(env={"COLUMNS": "250"}).invoke(cli, ["run", path, "seeds=2", "--runs-dir", runs, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "toy: 4 of 8 runs complete, 4 to do" in dry.output
    assert re.search(r"Running here would be refused: .* scored against next_token/pretrained/0123 built on "
                     r"CPU A \(native bf16\)", dry.output.replace("\n", " ")), dry.output
    here = precision.native_bf16("cpu")
    monkeypatch.setattr(precision, "native_bf16", lambda device: not here)  # and differs in native bf16
    dry = CliRunner(env={"COLUMNS": "250"}).invoke(cli, ["run", path, "seeds=2", "--runs-dir", runs, "--dry-run"])
    assert re.search(r"Running here would be refused: .* holds 4 runs made on a machine", dry.output), dry.output


def test_validate_reports_errors_without_traceback(toy_plugin, toy_suite):
    out = CliRunner().invoke(cli, ["validate", str(toy_suite()), "+methods.popri={}"])
    assert out.exit_code == 2
    assert "Error: methods.popri: unknown method 'popri'" in out.output
    assert "Traceback" not in out.output


def test_run_then_leaderboard(toy_plugin, toy_suite, tmp_path):
    path = str(toy_suite())
    runs, boards = str(tmp_path / "runs"), str(tmp_path / "boards")
    out = CliRunner().invoke(cli, ["run", path, "seeds=1", "--runs-dir", runs])
    assert out.exit_code == 0, out.output
    assert "4 completed, 0 already complete, 0 failed" in out.output
    # output is not a terminal here: progress comes as lines, down to the method's own loop
    assert re.search(r"^\[\d\d:\d\d:\d\d\] start rounds \(0/3\)$", out.output, re.M), out.output
    assert re.search(r"^\[\d\d:\d\d:\d\d\] done suite toy: .* \(4/4, ", out.output, re.M), out.output
    # the board goes to the run folder; the committed ones change only when asked
    assert (tmp_path / "runs" / "toy" / "board" / "toy.json").is_file()
    assert not (tmp_path / "boards").exists()
    again = CliRunner().invoke(cli, ["leaderboard", path, "seeds=1", "--runs-dir", runs, "--out", boards])
    assert again.exit_code == 0, again.output
    board = json.loads((tmp_path / "boards" / "toy.json").read_text())
    assert sorted(r["epsilon"] for r in board["rows"] if r["method"] == "noisy_unigram") == [1.0, 8.0]
    # both commands name the run command that reproduces the board; --wandb changes no result
    command = f"dpbench run {path} --runs-dir {runs} seeds=1"
    assert board["command"] == command
    assert f"Produced by `{command}`" in (tmp_path / "boards" / "toy.md").read_text()
    assert load_suite(path, ["seeds=1", PUBLISH_OVERRIDE], runs_dir=runs).command == command


def test_a_partial_board_names_the_runs_it_lacks(toy_plugin, toy_suite, tmp_path):
    path, runs, boards = str(toy_suite()), str(tmp_path / "runs"), tmp_path / "boards"
    assert CliRunner().invoke(cli, ["run", path, "seeds=2", "--runs-dir", runs]).exit_code == 0
    suite = load_suite(path, ["seeds=2"], runs_dir=runs)
    complete = CliRunner().invoke(cli, ["leaderboard", path, "seeds=2", "--runs-dir", runs, "--out", str(boards)])
    assert complete.exit_code == 0, complete.output
    assert json.loads((boards / "toy.json").read_text())["unfinished"] == []
    assert "Partial board" not in (boards / "toy.md").read_text()
    private = [s for s in suite.runs if s.method.label == "noisy_unigram" and s.epsilon == 8]
    for spec in private:
        (suite.folder / spec.run_id / "result.json").unlink()
    partial = CliRunner().invoke(cli, ["leaderboard", path, "seeds=2", "--runs-dir", runs, "--out", str(boards)])
    assert partial.exit_code == 0, partial.output
    board = json.loads((boards / "toy.json").read_text())
    assert sorted(r["run_id"] for r in board["unfinished"]) == sorted(s.run_id for s in private)
    assert ("⚠ **Partial board**: 2 runs of the suite's grid have not finished and are not on it: "
            "toy_texts noisy_unigram ε = 8 (seeds 0, 1).") in (boards / "toy.md").read_text()


def test_list_shows_origins(toy_plugin):
    out = CliRunner().invoke(cli, ["list", "methods"])
    assert out.exit_code == 0
    assert "noisy_unigram" in out.output and "public_only" in out.output


def test_list_suites_shows_each_grid_and_what_does_not_load(toy_plugin, toy_suite, tmp_path):
    toy_suite()
    toy_suite("seeds: 0\n", name="broken")
    out = CliRunner().invoke(cli, ["list", "suites", "--suites-dir", str(tmp_path)], env={"COLUMNS": "400"})
    assert out.exit_code == 0, out.output
    rows = {line.split("│")[1].strip(): [cell.strip() for cell in line.split("│")[2:-1]]
            for line in out.output.splitlines() if line.startswith("│")}
    assert rows[str(tmp_path / "toy.yaml")][:5] == ["8", "toy_texts", "public_only, nonprivate, noisy_unigram",
                                                   "0, inf, 1, 8", "2"], rows
    assert rows[str(tmp_path / "broken.yaml")][-1].startswith("does not load: seeds: 0 is not allowed")
    empty = CliRunner().invoke(cli, ["list", "suites", "--suites-dir", str(tmp_path / "none")])
    assert empty.exit_code == 2 and "no suite files (*.yaml)" in empty.output


@pytest.mark.parametrize("sweep", ["privacy.epsilon=1,7", "privacy.epsilon=choice(1,7)", "seeds=range(1,3)"])
def test_hydra_sweep_syntax_is_refused_with_the_list_form(toy_plugin, toy_suite, sweep):
    out = CliRunner().invoke(cli, ["validate", str(toy_suite()), sweep, "--no-data"])
    key = sweep.split("=")[0]
    assert out.exit_code == 2
    assert f"Error: {key}: {sweep!r} is not allowed; expected one value or a list, e.g. {key}=[1,7]" in out.output


@pytest.mark.parametrize("command", ["validate", "run"])
def test_malformed_yaml_is_one_line_naming_file_line_and_column(toy_plugin, toy_suite, command):
    path = toy_suite("""
        privacy:
          epsilon: [1, 8
          delta: 1e-5
    """)
    out = CliRunner().invoke(cli, [command, str(path)])
    assert out.exit_code == 2
    assert out.output.strip().splitlines() == [
        f"Error: {path}, line 4, column 8: not valid YAML: expected ',' or ']', but got ':' "
        "(while parsing a flow sequence at line 3, column 12)"]


def test_malformed_yaml_in_a_defaults_file_names_that_file(toy_plugin, toy_suite, tmp_path):
    (tmp_path / "method").mkdir()
    (tmp_path / "method" / "unigram.yaml").write_text("# @package methods\nnoisy_unigram: {rounds: 2\n")
    path = toy_suite("""
        defaults:
          - method: unigram
          - _self_
        privacy: {epsilon: 1, delta: 1e-5}
        datasets: {toy_texts: {}}
        evaluators: {next_word: {}}
    """)
    out = CliRunner().invoke(cli, ["validate", str(path), "--no-data"])
    assert out.exit_code == 2 and "Traceback" not in out.output
    assert f"Error: {tmp_path / 'method' / 'unigram.yaml'}, line 3, column 1: not valid YAML" in out.output


def test_non_utf8_suite_is_one_line(toy_plugin, toy_suite):
    path = toy_suite()
    path.write_bytes(path.read_bytes() + b"description: caf\xe9\n")
    out = CliRunner().invoke(cli, ["validate", str(path), "--no-data"])
    assert out.exit_code == 2 and "Traceback" not in out.output
    assert out.output.startswith(f"Error: {path} (or a file its defaults: pull in) is not UTF-8: ")


def test_show_lists_each_option_with_type_default_and_meaning(toy_plugin):
    out = CliRunner().invoke(cli, ["show", "noisy_unigram"], env={"COLUMNS": "400"})
    assert out.exit_code == 0, out.output
    assert "method noisy_unigram (dpbench.testing.toy.NoisyUnigram, plugin toy)" in out.output
    rows = {cells[0]: cells[1:] for line in out.output.splitlines() if line.startswith("│")
            for cells in [[c.strip() for c in line.split("│")[1:-1]]] if cells[0]}
    assert rows["rounds"] == ["int", "3", ""]
    assert rows["round_seconds"] == ["float", "0.0", "sleep per round, so tests can kill a run between rounds"]


def test_show_prints_the_method_s_paper(toy_plugin, monkeypatch):
    monkeypatch.setattr(toy_plugin.NoisyUnigram, "citation", "@misc{toy2026,\n  title = {A Toy Method}\n}\n")
    out = CliRunner().invoke(cli, ["show", "noisy_unigram"], env={"COLUMNS": "400"})
    assert out.exit_code == 0, out.output
    assert "Cite:\n@misc{toy2026,\n  title = {A Toy Method}\n}\n" in out.output


@pytest.mark.parametrize(("module", "name", "authors", "eprint"), [
    ("dpbench_popri.method", "Popri",
     "Hou, Charlie and Wang, Mei-Yu and Zhu, Yige and Lazar, Daniel and Fanti, Giulia", "2504.16438"),
    ("dpbench_pe.method", "PrivateEvolution", "Xie, Chulin and Lin, Zinan", "2403.01749"),
    ("dpbench_dpfedavg.method", "DpFedAvg",
     "McMahan, H. Brendan and Ramage, Daniel and Talwar, Kunal and Zhang, Li", "1710.06963"),
])
def test_each_bundled_method_cites_its_paper(module, name, authors, eprint):
    import importlib

    cited = getattr(importlib.import_module(module), name).citation
    assert cited.startswith("@inproceedings{") and authors in cited and f"eprint = {{{eprint}}}" in cited
    assert cited.count("{") == cited.count("}")  # a well-formed entry


def test_show_answers_an_unknown_name_with_did_you_mean(toy_plugin):
    out = CliRunner().invoke(cli, ["show", "noisy_unigam"])
    assert out.exit_code == 2
    assert "unknown dataset, method or evaluator 'noisy_unigam'" in out.output and "noisy_unigram" in out.output
