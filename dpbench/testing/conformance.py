"""Does a method keep the plugin contract? ``check_method`` runs it the ways the runner does and
lists what breaks.

A conformant method, on the data it is given: declares a ``MechanismSpec``; makes exactly the
releases it declares, through ``ctx.privacy`` (counted in the run folder's ledger); gives the
same output and the same releases (ledger keys and sha256s) for the same seed; killed right after
its first release and rerun on the same folder, ends with exactly the ledger and output of an
uninterrupted run, each release charged once; and lets nothing but its releases depend on a
client (``leaks.check_release_only``). Every run has a real seeded session at σ = 1 under an
infinite budget (``runs.run_once``) and its own method instance, as the runner makes one per run.
"""

from __future__ import annotations

import json
from pathlib import Path

from dpbench.api import MechanismSpec
from dpbench.errors import PrivacyMisuseError
from dpbench.privacy.ledger import LEDGER_NAME, LedgerError
from dpbench.testing.leaks import check_release_only
from dpbench.testing.runs import run_once


def check_method(method, data, *, folder: Path, downstream: Path | None = None, seed: int = 0,
                 canary_texts: tuple[str, ...] | None = None) -> list[str]:
    """How ``method`` (a configured ``Method``) breaks the contract on ``data`` (``MethodData``),
    one line per problem, each starting with the check that found it; ``[]`` when conformant.

    Runs in ``folder`` (empty). ``downstream`` is the model folder (``save_pretrained``) that
    ``ctx.initial_model()`` hands a method returning a ``TrainedModel``; ``canary_texts`` go to
    ``check_release_only``, which raises ``ConfigError`` for a method whose mechanism changes
    with one more client. The session's refusals (``PrivacyMisuseError``, ``LedgerError``) are
    problems; any other error of the method propagates.
    """
    spec = method.mechanism(data)
    if not isinstance(spec, MechanismSpec):
        return [f"mechanism: mechanism(data) returned {spec!r}, not a MechanismSpec"]
    folder = Path(folder)
    settings = dict(seed=seed, downstream=downstream)
    problems: list[str] = []
    try:
        first = run_once(method, data, folder / "first", **settings)
        again = run_once(method, data, folder / "again", **settings)
        problems += _release_count_problems(spec, first)
        problems += _difference_problems(
            first, again, releases="determinism: two runs with the same seed made different releases",
            output="determinism: two runs with the same seed gave different output")
        problems += _resume_problems(method, data, folder / "killed", first, settings)
        problems += [f"release-only: {p}" for p in check_release_only(
            method, data, folder=folder / "release-only", canary_texts=canary_texts, **settings)]
    except (PrivacyMisuseError, LedgerError) as err:
        problems.append(f"session: refused the method: {type(err).__name__}: {err}")
    return problems


def _ledger(run: dict[str, bytes]) -> list[tuple[str, str]]:
    """``(key, sha256)`` of each ledger line of a ``run_once`` run."""
    return [(r["key"], r["sha256"]) for r in map(json.loads, run.get(LEDGER_NAME, b"").decode().splitlines())]


def _release_count_problems(spec: MechanismSpec, run: dict[str, bytes]) -> list[str]:
    made = len(_ledger(run))
    if made == spec.rounds:
        return []
    return [f"releases: made {made} releases through ctx.privacy; its MechanismSpec declares {spec.rounds}"]


def _difference_problems(expected: dict[str, bytes], got: dict[str, bytes], *, releases: str,
                         output: str) -> list[str]:
    """``releases`` (followed by what differs) when ``got`` made other releases than
    ``expected``, ``output`` when it gave other output."""
    problems = []
    if _ledger(expected) != _ledger(got):
        problems.append(f"{releases}: {_ledger_difference(expected, got)}")
    if expected["<artifact>"] != got["<artifact>"]:
        problems.append(output)
    return problems


def _resume_problems(method, data, folder: Path, first: dict[str, bytes], settings: dict) -> list[str]:
    """Kill a run right after its first release, rerun it on the same folder with a fresh
    session and instance, and compare with the uninterrupted ``first``."""
    try:
        run_once(method, data, folder, wrap_session=_DiesAfterFirstRelease, **settings)
    except _Killed:
        pass
    resumed = run_once(method, data, folder, **settings)
    return _difference_problems(
        first, resumed, releases="resume: rerun after a kill, its releases differ from an uninterrupted run's",
        output="resume: rerun after a kill, its output differs from an uninterrupted run's")


def _ledger_difference(expected: dict[str, bytes], got: dict[str, bytes]) -> str:
    want, have = _ledger(expected), _ledger(got)
    if [k for k, _ in want] != [k for k, _ in have]:
        return f"keys {[k for k, _ in have]} instead of {[k for k, _ in want]}"
    return f"other values (sha256) for {[k for (k, a), (_, b) in zip(want, have, strict=True) if a != b]}"


class _Killed(BaseException):
    """Stands for a kill; not an ``Exception``, so a method's error handling cannot swallow it."""


class _DiesAfterFirstRelease:
    """The session, killed right after the run's first release is stored and ledgered (before
    the method sees the value)."""

    def __init__(self, session):
        self._session = session

    def __getattr__(self, name):
        return getattr(self._session, name)

    def release_clipped_sum(self, key, contributions, **kwargs):
        self._session.release_clipped_sum(key, contributions, **kwargs)
        raise _Killed(f"killed after release {key!r}")
