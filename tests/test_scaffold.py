"""`dpbench new method NAME` writes a plugin package that installs (its entry point is found),
passes its own contract test, and runs in a suite beside the other methods."""

import json
import os
import subprocess
import sys

from click.testing import CliRunner

from dpbench.cli import cli
from dpbench.plugins import registered
from dpbench.testing.pytest_plugin import DEFAULT_TOY_SUITE


def _env(*paths) -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([*map(str, paths), os.environ.get("PYTHONPATH", "")])}


def test_a_new_method_installs_passes_its_test_and_runs_in_a_suite(toy_plugin, toy_suite, tmp_path, monkeypatch):
    out = CliRunner().invoke(cli, ["new", "method", "demo_vote", "--out", str(tmp_path)])
    assert out.exit_code == 0, out.output
    package = tmp_path / "dpbench-demo-vote"
    assert "pip install -e " + str(package) in out.output

    own = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(package / "tests")],
                         env=_env(package), cwd=package, capture_output=True, text=True)
    assert own.returncode == 0 and "2 passed" in own.stdout, own.stdout + own.stderr

    site = tmp_path / "site"  # a real (non-editable) install: dpbench must find it by its entry point
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                          "--disable-pip-version-check", "--target", str(site), str(package)],
                         capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr
    show = subprocess.run([sys.executable, "-m", "dpbench", "show", "demo_vote"], env=_env(site),
                          capture_output=True, text=True)
    assert show.returncode == 0, show.stderr
    assert "method demo_vote (dpbench_demo_vote.method.DemoVote, plugin demo_vote)" in show.stderr
    assert "public texts returned" in show.stderr

    monkeypatch.syspath_prepend(str(package))
    import dpbench_demo_vote

    with registered(dpbench_demo_vote, name="demo_vote"):
        suite = toy_suite(DEFAULT_TOY_SUITE.replace("noisy_unigram: {rounds: 3}", "demo_vote: {num_texts: 10}"))
        run = CliRunner().invoke(cli, ["run", str(suite), "seeds=1", "--runs-dir", str(tmp_path / "runs")])
    assert run.exit_code == 0, run.output
    board = json.loads((tmp_path / "runs" / "toy" / "board" / "toy.json").read_text())
    assert sorted(r["epsilon"] for r in board["rows"] if r["method"] == "demo_vote") == [1.0, 8.0]


def test_new_method_refuses_a_bad_name_and_an_existing_folder(tmp_path):
    bad = CliRunner().invoke(cli, ["new", "method", "Demo-1", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "NAME: 'Demo-1' is not allowed; expected lower-case letters" in bad.output
    (tmp_path / "dpbench-demo").mkdir()
    again = CliRunner().invoke(cli, ["new", "method", "demo", "--out", str(tmp_path)])
    assert again.exit_code == 2 and "exists already" in again.output
