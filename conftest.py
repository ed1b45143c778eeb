"""Registers dpbench's pytest plugin for this checkout's tests when pytest has not: the
installed dpbench may predate its ``pytest11`` entry point, and registering it twice is an error."""

import importlib

PLUGIN = "dpbench.testing.pytest_plugin"


def pytest_configure(config):
    plugin = importlib.import_module(PLUGIN)
    if not config.pluginmanager.is_registered(plugin):
        config.pluginmanager.register(plugin, PLUGIN)
