import json
import os
import subprocess
import sys
import textwrap
import types

import pluggy
import pytest

from dpbench import hookimpl
from dpbench.plugins import (
    DEFAULT_PLUGINS,
    get_plugins,
    get_registry,
    pm,
    register_plugin,
    registered,
    unregister_plugin,
)


def test_default_plugins_are_loaded_with_their_hooks():
    plugins = {p["name"]: p for p in get_plugins()}
    for name in DEFAULT_PLUGINS:
        assert name in plugins
    assert "register_methods" in plugins["dpbench.builtin.references"]["hooks"]
    assert set(plugins["dpbench.builtin.wandb_publisher"]["hooks"]) == {"run_progress", "run_finished", "run_failed",
                                                                        "leaderboard_written"}


def test_builtin_references_use_the_same_hooks():
    methods = get_registry("method")
    assert {"public_only", "nonprivate"} <= set(methods.names())
    assert methods.origin("public_only") == "dpbench.builtin.references"


def test_registered_plugin_is_tagged_and_removed(toy_plugin):
    assert get_registry("method").origin("noisy_unigram") == "toy"
    unregister_plugin("toy")
    assert "noisy_unigram" not in get_registry("method")
    register_plugin(toy_plugin, name="toy")  # the fixture unregisters it


def test_misspelled_hook_fails_loudly():
    plugin = types.ModuleType("typo_plugin")

    @hookimpl
    def register_method(register):  # missing the final "s"
        pass

    plugin.register_method = register_method
    with pytest.raises(pluggy.PluginValidationError, match="unknown hook 'register_method'"):
        register_plugin(plugin, name="typo")
    pm.unregister(name="typo")


def test_duplicate_names_across_plugins_fail_naming_both():
    plugin = types.ModuleType("clash")

    @hookimpl
    def register_methods(register):
        from dpbench.builtin.references import PublicOnly

        register("public_only", PublicOnly)

    plugin.register_methods = register_methods
    register_plugin(plugin, name="clash")
    try:
        with pytest.raises(TypeError, match="'public_only' is registered twice.*dpbench.builtin.references.*'clash'"):
            get_registry("method")
    finally:
        unregister_plugin("clash")


def test_publisher_hooks_get_every_finished_run_and_the_written_leaderboard(toy_plugin, toy_suite, tmp_path):
    from click.testing import CliRunner

    from dpbench.cli import cli

    finished, boards = [], []
    plugin = types.ModuleType("recorder")

    @hookimpl
    def run_finished(run, result, folder):
        assert folder == tmp_path / "runs" / "toy" / run.run_id
        finished.append((run.run_id, result.run_id, (folder / "result.json").exists()))

    @hookimpl
    def leaderboard_written(suite, leaderboard, paths):
        boards.append((suite.name, leaderboard.suite, len(leaderboard.rows), [p.name for p in paths if p.exists()]))

    plugin.run_finished, plugin.leaderboard_written = run_finished, leaderboard_written
    with registered(plugin, name="recorder"):
        out = CliRunner().invoke(cli, ["run", str(toy_suite()), "seeds=1", "--runs-dir", str(tmp_path / "runs"),
                                       "--leaderboards-dir", str(tmp_path / "boards")])
    assert out.exit_code == 0, out.output
    assert len(finished) == 4 and all(run == result and saved for run, result, saved in finished)
    completed = sorted(p.parent.name for p in (tmp_path / "runs").glob("toy/*/result.json"))
    assert sorted(run for run, _, _ in finished) == completed
    assert boards == [("toy", "toy", 4, ["toy.md", "toy.json", "toy.csv"])]


@pytest.fixture
def installed_plugin(tmp_path):
    """A plugin distribution installed through entry-point metadata on a temporary sys.path."""
    (tmp_path / "dpbench_hello.py").write_text(textwrap.dedent('''
        from dpbench import hookimpl
        from dpbench.builtin.references import PublicOnly

        class Hello(PublicOnly):
            pass

        @hookimpl
        def register_methods(register):
            register("hello", Hello)
    '''))
    info = tmp_path / "dpbench_hello-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: dpbench-hello\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text("[dpbench]\nhello = dpbench_hello\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    env.pop("DPBENCH_LOAD_PLUGINS", None)
    return env


def _dpbench(env, *args):
    return subprocess.run([sys.executable, "-m", "dpbench", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def test_entry_point_plugin_is_discovered(installed_plugin):
    out = _dpbench(installed_plugin, "plugins", "--json")
    assert out.returncode == 0, out.stderr
    plugins = {p["name"]: p for p in json.loads(out.stdout)}
    assert plugins["hello"]["version"] == "1.2.3"
    assert plugins["hello"]["hooks"] == ["register_methods"]
    listed = _dpbench(installed_plugin, "list", "methods")
    assert "hello" in listed.stdout + listed.stderr


def test_load_plugins_env_restricts_loading(installed_plugin):
    none = _dpbench({**installed_plugin, "DPBENCH_LOAD_PLUGINS": ""}, "plugins", "--json")
    assert "hello" not in {p["name"] for p in json.loads(none.stdout)}
    only = _dpbench({**installed_plugin, "DPBENCH_LOAD_PLUGINS": "hello"}, "plugins", "--json")
    assert "hello" in {p["name"] for p in json.loads(only.stdout)}
    typo = _dpbench({**installed_plugin, "DPBENCH_LOAD_PLUGINS": "helo"}, "plugins")
    assert typo.returncode != 0
    assert "Did you mean 'hello'?" in typo.stderr


def test_a_broken_installed_plugin_is_skipped_with_its_name(installed_plugin, tmp_path):
    broken = tmp_path / "broken"
    (broken / "dpbench_broken-0.1.dist-info").mkdir(parents=True)
    (broken / "dpbench_broken-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: dpbench-broken\nVersion: 0.1\n")
    (broken / "dpbench_broken-0.1.dist-info" / "entry_points.txt").write_text("[dpbench]\nbroken = dpbench_broken\n")
    (broken / "dpbench_broken.py").write_text("import a_module_that_does_not_exist\n")
    env = {**installed_plugin, "PYTHONPATH": os.pathsep.join([str(broken), installed_plugin["PYTHONPATH"]])}
    out = _dpbench(env, "plugins", "--json")
    assert out.returncode == 0, out.stderr
    assert "skipping plugin 'broken'" in out.stderr and "a_module_that_does_not_exist" in out.stderr
    assert "hello" in {p["name"] for p in json.loads(out.stdout)}
