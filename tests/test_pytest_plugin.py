"""dpbench's pytest plugin as an installed dpbench provides it: through the ``pytest11`` entry
point the root ``pyproject.toml`` declares, to any project, without a ``conftest.py``."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import dpbench

ROOT = Path(dpbench.__file__).resolve().parents[1]
PLUGIN_PROJECT_TESTS = '''
import os
import sys


def test_a_test_without_fixtures_sees_nothing_of_dpbench():
    assert not hasattr(sys, "_called_from_test") and "WANDB_MODE" not in os.environ


def test_the_fixtures_come_from_the_entry_point(toy_plugin, toy_suite, hashing_embedder):
    from dpbench.plugins import get_registry

    assert get_registry("method").origin("noisy_unigram") == "toy"
    assert toy_suite().read_text().startswith("description: toy suite")
    assert hashing_embedder().encode(["w1 w2"]).shape == (1, 32)
'''


@pytest.fixture
def installed_entry_point(tmp_path) -> dict:
    """An environment whose sys.path has this checkout and a distribution declaring the root
    pyproject.toml's pytest11 entry points, as installing dpbench gives."""
    tomllib = pytest.importorskip("tomllib")
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["pytest11"]
    info = tmp_path / "site" / "dpbench_entry_points-0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: dpbench-entry-points\nVersion: 0\n")
    (info / "entry_points.txt").write_text("[pytest11]\n" + "".join(f"{k} = {v}\n" for k, v in declared.items()))
    env = {k: v for k, v in os.environ.items() if k != "WANDB_MODE"}
    return {**env, "PYTHONPATH": os.pathsep.join([str(info.parent), str(ROOT)])}


def _pytest(env: dict, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_a_plugin_project_gets_the_fixtures_and_nothing_else(installed_entry_point, tmp_path):
    project = tmp_path / "my-method-plugin"
    (project / "tests").mkdir(parents=True)
    (project / "tests" / "test_with_dpbench.py").write_text(PLUGIN_PROJECT_TESTS)
    out = _pytest(installed_entry_point, project)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 passed" in out.stdout


def test_this_checkout_registers_the_plugin_once_beside_the_entry_point(installed_entry_point):
    out = _pytest(installed_entry_point, ROOT, "--collect-only", "tests/test_plugins.py")
    assert out.returncode == 0, out.stdout + out.stderr
