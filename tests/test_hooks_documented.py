"""Every hook of the plugin contract (``dpbench/hookspecs.py``) is documented with its exact
signature in README.md's "Writing a plugin" section, and implemented or called by a test."""

import inspect
import re
from pathlib import Path

import pytest

from dpbench import hookspecs

ROOT = Path(__file__).resolve().parents[1]
HOOKS = sorted(name for name, f in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(f, "dpbench_spec"))
TEST_CODE = [*(ROOT / "tests").rglob("*.py"), *ROOT.glob("plugins/*/tests/**/*.py"),
             *(ROOT / "dpbench" / "testing").rglob("*.py")]
"""dpbench's tests, the method plugins' tests, and the test plugins they register"""


def _writing_a_plugin() -> str:
    match = re.search(r"^## Writing a plugin\n(.*?)(?=^## |\Z)", (ROOT / "README.md").read_text(), re.M | re.S)
    assert match, "README.md has no '## Writing a plugin' section"
    return match.group(1)


def test_the_hooks_are_found():
    assert "register_methods" in HOOKS and len(HOOKS) >= 5


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented_with_its_signature(hook):
    signature = f"{hook}({', '.join(inspect.signature(getattr(hookspecs, hook)).parameters)})"
    if signature not in _writing_a_plugin():
        pytest.fail(f"{signature} is not in README.md's 'Writing a plugin' section")


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_exercised_by_a_test(hook):
    use = re.compile(rf"\bdef {hook}\(|\.{hook}\s*\(|\b{hook}\s*=\s*hookimpl\b")
    users = [path for path in TEST_CODE if path != Path(__file__).resolve() and use.search(path.read_text())]
    if not users:
        pytest.fail(f"no test implements or calls the hook {hook}")
