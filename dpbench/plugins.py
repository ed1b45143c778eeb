"""Plugin discovery: built-in default plugins plus the ``dpbench`` entry-point group.

``DPBENCH_LOAD_PLUGINS=a,b`` loads only those installed plugins (``""``: none);
``DPBENCH_TRACE_PLUGINS=1`` prints every hook call to stderr. Built-ins always load and use the
same hooks as third-party plugins.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import importlib.util
import os
import sys
from pathlib import Path

import pluggy

from dpbench import hookspecs
from dpbench.errors import DpbenchError

DEFAULT_PLUGINS = (
    "dpbench.builtin.references",
    "dpbench.builtin.datasets",
    "dpbench.builtin.evaluators",
    "dpbench.builtin.wandb_publisher",
)
ENTRY_POINT_GROUP = "dpbench"

pm = pluggy.PluginManager("dpbench")
pm.add_hookspecs(hookspecs)
_loaded = False
_distributions: dict[str, importlib.metadata.Distribution] = {}  # installed plugin name -> its distribution


class PluginLoadError(DpbenchError):
    """An installed plugin named for loading could not be loaded."""


def load_plugins() -> pluggy.PluginManager:
    """Load default and installed plugins once; later calls are free."""
    global _loaded
    if _loaded:
        return pm
    _loaded = True
    if not getattr(sys, "_called_from_test", False):
        _load_entry_points(os.environ.get("DPBENCH_LOAD_PLUGINS"))
    for name in DEFAULT_PLUGINS:
        if pm.get_plugin(name) is None:
            pm.register(importlib.import_module(name), name=name)
    if os.environ.get("DPBENCH_TRACE_PLUGINS"):
        pm.add_hookcall_monitoring(_trace_before, _trace_after)
    pm.check_pending()
    return pm


def _load_entry_points(only: str | None) -> None:
    available = {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    if only is None:
        for name, entry_point in sorted(available.items()):
            if pm.get_plugin(name) is None and not pm.is_blocked(name):
                try:
                    pm.register(entry_point.load(), name=name)
                except Exception as err:  # one broken plugin must not take every command down
                    print(f"dpbench: skipping plugin {name!r} ({entry_point.value}), which failed to load: "
                          f"{type(err).__name__}: {err}", file=sys.stderr)
                    continue
                _distributions[name] = entry_point.dist
        return
    wanted = [n.strip() for n in only.split(",") if n.strip()]
    for name in wanted:
        if name not in available:
            from dpbench.errors import did_you_mean

            raise PluginLoadError(
                f"DPBENCH_LOAD_PLUGINS names {name!r}, which is not an installed dpbench plugin."
                + did_you_mean(name, available)
                + f" Installed: {', '.join(sorted(available)) or '(none)'}."
            )
        if pm.get_plugin(name) is None:
            pm.register(available[name].load(), name=name)
            _distributions[name] = available[name].dist


def load_plugins_dir(folder: str | Path) -> list[str]:
    """Register every ``*.py`` file in ``folder`` as a plugin (for local plugin development)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PluginLoadError(f"--plugins-dir: {str(folder)!r} is not a folder")
    names = []
    for path in sorted(folder.glob("*.py")):
        name = f"dpbench_local_{path.stem}"
        if pm.get_plugin(name) is not None:
            continue
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        pm.register(module, name=name)
        names.append(name)
    _reset_registries()
    return names


def get_plugins() -> list[dict]:
    """Every registered plugin with its distribution version and the hooks it implements."""
    load_plugins()
    from dpbench import __version__

    plugins = []
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda item: item[0]):
        if plugin is None:
            continue
        dist = _distributions.get(name)
        plugins.append(
            {
                "name": name,
                "version": dist.version if dist else (__version__ if name in DEFAULT_PLUGINS else None),
                "distribution": dist.metadata["Name"] if dist else None,
                "hooks": sorted(h.name for h in pm.get_hookcallers(plugin) or ()),
            }
        )
    return plugins


# Registries, filled by calling each plugin's register hook separately so every entry is
# tagged with the plugin that registered it.

_registries: dict[str, object] = {}


def _reset_registries() -> None:
    _registries.clear()


def _build_registry(kind: str):
    from dpbench.api import Dataset, Evaluator, Method
    from dpbench.registry import Registry

    base, hook = {
        "dataset": (Dataset, pm.hook.register_datasets),
        "method": (Method, pm.hook.register_methods),
        "evaluator": (Evaluator, pm.hook.register_evaluators),
    }[kind]
    registry = Registry(kind, base)
    for impl in hook.get_hookimpls():  # registration order: built-ins before later plugins
        plugin = impl.plugin_name

        def register(name, target, _plugin=plugin):
            registry.register(name, target, plugin=_plugin)

        impl.function(register=register)
    return registry


def get_registry(kind: str):
    """The registry of ``"dataset"``, ``"method"`` or ``"evaluator"`` plugins."""
    load_plugins()
    if kind not in _registries:
        _registries[kind] = _build_registry(kind)
    return _registries[kind]


def register_plugin(plugin, name: str) -> None:
    """Register a plugin object at run time (tests, notebooks); registries are rebuilt."""
    load_plugins()
    pm.register(plugin, name=name)
    pm.check_pending()
    _reset_registries()


def unregister_plugin(name: str) -> None:
    pm.unregister(name=name)
    _reset_registries()


@contextlib.contextmanager
def registered(plugin, name: str):
    """Register ``plugin`` for the duration of a ``with`` block (tests, notebooks)."""
    register_plugin(plugin, name)
    try:
        yield plugin
    finally:
        unregister_plugin(name)


def _trace_before(hook_name, hook_impls, kwargs):
    print(f"dpbench hook {hook_name}({', '.join(kwargs)}) -> {[i.plugin_name for i in hook_impls]}", file=sys.stderr)


def _trace_after(outcome, hook_name, hook_impls, kwargs):
    print(f"dpbench hook {hook_name} done", file=sys.stderr)
