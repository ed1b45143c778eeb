"""The whole dpbench plugin contract.

A plugin is a module (or object) with functions marked ``@hookimpl`` whose names match the
specs below. Register hooks receive a ``register`` callback; the host validates every item as
it arrives (base class, duplicate names) and records which plugin registered it.
"""

import pluggy

hookspec = pluggy.HookspecMarker("dpbench")
hookimpl = pluggy.HookimplMarker("dpbench")


@hookspec
def register_datasets(register):
    """Call ``register(name, cls)`` for each dataset; ``cls`` subclasses ``dpbench.api.Dataset``
    (or is a lazy ``"module:attr"`` string naming one)."""


@hookspec
def register_methods(register):
    """Call ``register(name, cls)`` for each method; ``cls`` subclasses ``dpbench.api.Method``."""


@hookspec
def register_evaluators(register):
    """Call ``register(name, cls)`` for each evaluator; ``cls`` subclasses ``dpbench.api.Evaluator``."""


@hookspec
def run_finished(run, result, folder):
    """Called after a run's results are written: ``run`` is its ``RunSpec``, ``result`` the
    ``RunResult``, ``folder`` the run folder. Publishers (wandb, ...) implement this."""


@hookspec
def run_progress(run, step, entry):
    """Called while a run goes, for each round as it is made: ``step`` is the round (the index
    of its monitor entry in ``state/monitor.json``'s history, and of its release), ``entry`` a
    nested dict ``{"monitor": {...}}`` (``RunContext.report``) or ``{"release": {...}}`` (the
    session's diagnostics of a seeded release). Publishers log it live."""


@hookspec
def run_failed(run, error, folder):
    """Called when run ``run`` raised ``error`` (``folder``: its run folder, with ``error.json``
    when it got that far; the suite goes on with the other runs). Publishers close what they
    opened for it."""


@hookspec
def leaderboard_written(suite, leaderboard, paths):
    """Called after ``dpbench leaderboard`` writes its files: ``suite`` is the ``Suite``,
    ``leaderboard`` the ``Leaderboard``, ``paths`` the written files."""
