import json
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


def test_validate_reports_errors_without_traceback(toy_plugin, toy_suite):
    out = CliRunner().invoke(cli, ["validate", str(toy_suite()), "+methods.popri={}"])
    assert out.exit_code == 2
    assert "Error: methods.popri: unknown method 'popri'" in out.output
    assert "Traceback" not in out.output


def test_run_then_leaderboard(toy_plugin, toy_suite, tmp_path):
    path = str(toy_suite())
    runs, boards = str(tmp_path / "runs"), str(tmp_path / "boards")
    out = CliRunner().invoke(cli, ["run", path, "seeds=1", "--runs-dir", runs, "--leaderboards-dir", boards])
    assert out.exit_code == 0, out.output
    assert "4 completed, 0 already complete, 0 failed" in out.output
    again = CliRunner().invoke(cli, ["leaderboard", path, "seeds=1", "--runs-dir", runs, "--out", boards])
    assert again.exit_code == 0, again.output
    board = json.loads((tmp_path / "boards" / "toy.json").read_text())
    assert sorted(r["epsilon"] for r in board["rows"] if r["method"] == "noisy_unigram") == [1.0, 8.0]
    # both commands name the run command that reproduces the board; --wandb changes no result
    command = f"dpbench run {path} --runs-dir {runs} seeds=1"
    assert board["command"] == command
    assert f"Produced by `{command}`" in (tmp_path / "boards" / "toy.md").read_text()
    assert load_suite(path, ["seeds=1", PUBLISH_OVERRIDE], runs_dir=runs).command == command


def test_list_shows_origins(toy_plugin):
    out = CliRunner().invoke(cli, ["list", "methods"])
    assert out.exit_code == 0
    assert "noisy_unigram" in out.output and "public_only" in out.output


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
