"""Run a configured method once in a folder, as the runner would but without a suite: a real
privacy session under an infinite budget, the method's log captured, and everything it produced
read back, so that checks (``leaks``, ``conformance``) can compare runs byte for byte."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path

RUN_DIR = "out"
"""``folder/out`` is the run folder (ledger, releases, ``state/``); ``folder/cache`` the cache"""


def run_once(method, data, folder: Path, *, seed: int = 0, noise_multiplier: float = 1.0,
             downstream: Path | None = None, keep_releases: bool = False,
             wrap_session: Callable | None = None) -> dict[str, bytes]:
    """Run ``method`` on ``data`` (``MethodData``) under a seeded session on ``folder/out`` and
    return every file there, the log as ``"<log>"`` and the output as ``"<artifact>"`` (the
    texts, or the ``folder_digest`` of a ``TrainedModel``), as ``{name: bytes}``.

    A second call on the same folder resumes, as a rerun of the runner does. ``keep_releases``
    turns ``discard_release`` into a no-op (for a later run that replays every release);
    ``wrap_session(session)`` is what the method gets as ``ctx.privacy`` (default: the session).
    ``downstream`` is the model folder ``ctx.initial_model()`` hands out.
    """
    from dpbench.api import PrivacyBudget, RunContext, SyntheticTexts
    from dpbench.cache import SuiteCache
    from dpbench.privacy import open_session
    from dpbench.results import folder_digest

    folder = Path(folder)
    out = folder / RUN_DIR
    budget = PrivacyBudget(epsilon=math.inf, delta=1e-5)
    session = open_session(method.mechanism(data), noise_multiplier=noise_multiplier, budget=budget, run_dir=out,
                           clients=sorted(data.clients), seed=seed, accountant="rdp")
    if keep_releases:
        session.discard_release = lambda key: None
    log = logging.getLogger(f"dpbench.testing.{folder.name}")
    log.setLevel(logging.DEBUG)
    lines: list[str] = []
    handler = _ListHandler(lines)
    log.addHandler(handler)
    try:
        ctx = RunContext(run_id="testing", seed=seed, output_dir=out, budget=budget,
                         cache=SuiteCache(folder / "cache"), log=log,
                         privacy=wrap_session(session) if wrap_session else session,
                         downstream_model=downstream)
        artifact = type(method)(method.config).run(data, ctx)  # a fresh instance, as the runner makes
    finally:
        log.removeHandler(handler)
    files = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    files["<log>"] = "\n".join(lines).encode()
    files["<artifact>"] = ("\n".join(artifact.texts) if isinstance(artifact, SyntheticTexts)
                           else folder_digest(artifact.path)).encode()
    return files


class _ListHandler(logging.Handler):
    def __init__(self, lines: list[str]):
        super().__init__()
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def ledger_lines(folder: Path) -> list[dict]:
    """A run folder's ledger lines without their timestamps: what two runs of the same releases share."""
    from dpbench.privacy.ledger import LEDGER_NAME, read_ledger

    return [{key: value for key, value in line.items() if key != "time"} for line in read_ledger(folder / LEDGER_NAME)]
