"""Plugins reach dpbench only through its public surface, ``dpbench.api`` and ``dpbench.toolkit``,
and PE stands on the toolkit alone, not on the POPri plugin."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import dpbench.toolkit

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"
SOURCES = sorted(PLUGINS.glob("*/dpbench_*/**/*.py"))


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every absolute import in ``path``, at any depth; ``from a import b``
    gives ``a.b``, since ``b`` may be a submodule."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def is_public(module: str) -> bool:
    """Whether an import of ``module`` (``a.b`` for ``from a import b``) stays on the public surface."""
    if module.split(".")[0] != "dpbench":
        return True
    return module.startswith(("dpbench.api.", "dpbench.toolkit.")) or module in ("dpbench.api", "dpbench.toolkit")


def test_there_are_plugin_sources():
    assert {p.parents[1].name for p in SOURCES} >= {"dpbench-popri", "dpbench-pe", "dpbench-dpfedavg"}


def test_the_check_catches_every_form_of_import(tmp_path):
    source = tmp_path / "example.py"
    source.write_text("import dpbench\nimport dpbench.files as f\nfrom dpbench import hookimpl\n"
                      "from dpbench.api import Method\nfrom dpbench import toolkit\n"
                      "def run():\n    from dpbench.models.generation import make_generator\n")
    assert [m for _, m in imported_modules(source) if not is_public(m)] == [
        "dpbench", "dpbench.files", "dpbench.hookimpl", "dpbench.models.generation.make_generator"]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PLUGINS)))
def test_plugins_import_only_the_public_surface(path):
    private = [f"line {line}: {module}" for line, module in imported_modules(path) if not is_public(module)]
    assert not private, f"{path.relative_to(PLUGINS)} imports beyond dpbench.api and dpbench.toolkit: {private}"


def test_pe_does_not_depend_on_popri():
    package = PLUGINS / "dpbench-pe"
    uses = [f"{path.name} line {line}: {module}" for path in sorted((package / "dpbench_pe").rglob("*.py"))
            for line, module in imported_modules(path) if module.split(".")[0] == "dpbench_popri"]
    assert not uses
    pyproject = (package / "pyproject.toml").read_text(encoding="utf-8")
    assert "dpbench-popri" not in pyproject and "dpbench_popri" not in pyproject


def test_every_toolkit_name_resolves():
    missing = [name for name in dpbench.toolkit.__all__ if not hasattr(dpbench.toolkit, name)]
    assert not missing
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        dpbench.toolkit.nothing  # noqa: B018


def test_importing_the_toolkit_loads_no_heavy_package():
    code = ("import sys, dpbench.toolkit; "
            "heavy = [m for m in ('numpy', 'torch', 'transformers', 'scipy') if m in sys.modules]; "
            "assert not heavy, heavy")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
