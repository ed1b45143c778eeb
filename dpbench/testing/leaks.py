"""Does anything but a method's noisy releases depend on one client? A frozen-release differential check.

The method runs three times under a seeded session: twice on D (runs A and A2; whatever differs
between those is nondeterminism, such as timings, and is ignored) and once on D′ = D plus one
canary client (run B) whose session replays A's stored releases. After that, everything the
method writes, logs or returns is post-processing of the same released values, so a line that
is identical in A and A2 but differs in B depends on the canary client other than through a
release: a side channel (a logged cohort size, a per-client loss, an unnoised score). The
canary's marker text must also appear nowhere in B. Files written under ``ctx.cache`` (the
framework's private-data cache) are not compared; a leak on a line that also carries a timing
is missed.
"""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path

CANARY_MARKER = "zqxcanary7f3e"


def check_release_only(method, data, *, folder: Path, canary_texts: tuple[str, ...] | None = None,
                       seed: int = 0, noise_multiplier: float = 1.0, downstream: Path | None = None) -> list[str]:
    """The side channels of ``method`` (a configured ``Method``) on ``data`` (``MethodData``);
    ``[]`` when only its releases depend on the canary client. Runs in ``folder``.

    ``canary_texts`` are the canary client's texts (default: three sentences carrying
    ``CANARY_MARKER``); the first one is the marker searched for in run B's files.
    """
    from dataclasses import replace

    folder = Path(folder)
    texts = canary_texts or tuple(f"{CANARY_MARKER} {word} private text of the canary client"
                                  for word in ("one", "two", "three"))
    marker = CANARY_MARKER if canary_texts is None else canary_texts[0]
    canary = replace(data, clients={**data.clients, "~canary-client": tuple(texts)})
    if method.mechanism(data) != method.mechanism(canary):
        from dpbench.errors import ConfigError

        raise ConfigError("method", type(method).__name__, "a method whose declared mechanism is the same with one more "
                          "client (e.g. DP-FedAvg with clients_per_round >= the number of clients, so q = 1)")
    a = _run(method, data, folder / "a", seed, noise_multiplier, downstream)
    a2 = _run(method, data, folder / "a2", seed, noise_multiplier, downstream)
    (folder / "b" / "out").mkdir(parents=True)
    shutil.copy(folder / "a" / "out" / "ledger.jsonl", folder / "b" / "out" / "ledger.jsonl")
    shutil.copytree(folder / "a" / "out" / "releases", folder / "b" / "out" / "releases")
    b = _run(method, canary, folder / "b", seed, noise_multiplier, downstream)

    problems = []
    for name in sorted(set(a) | set(a2) | set(b)):
        first, again, other = a.get(name), a2.get(name), b.get(name)
        if first == again and other != first:
            problems += _differences(name, first, again, other)
        if other is not None and marker.encode() in other:
            problems.append(f"{name}: holds the canary client's private text")
    return problems


def _run(method, data, folder: Path, seed: int, sigma: float, downstream) -> dict:
    """Every file, the log and the artifact of one run, as ``{name: bytes}``."""
    from dpbench.api import PrivacyBudget, RunContext, SyntheticTexts
    from dpbench.cache import SuiteCache
    from dpbench.privacy import open_session
    from dpbench.results import folder_digest

    out = folder / "out"
    budget = PrivacyBudget(epsilon=math.inf, delta=1e-5)
    session = open_session(method.mechanism(data), noise_multiplier=sigma, budget=budget, run_dir=out,
                           clients=sorted(data.clients), seed=seed, accountant="rdp")
    session.discard_release = lambda key: None  # run B replays every release of run A
    log = logging.getLogger(f"dpbench.leaks.{folder.name}")
    log.setLevel(logging.DEBUG)
    lines: list[str] = []
    handler = _ListHandler(lines)
    log.addHandler(handler)
    try:
        ctx = RunContext(run_id="leak-check", seed=seed, output_dir=out, budget=budget,
                         cache=SuiteCache(folder / "cache"), privacy=session, log=log,
                         downstream=(lambda: downstream) if downstream else None)
        artifact = method.run(data, ctx)
    finally:
        log.removeHandler(handler)
    files = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    files["<log>"] = "\n".join(lines).encode()
    files["<artifact>"] = ("\n".join(artifact.texts) if isinstance(artifact, SyntheticTexts)
                           else folder_digest(artifact.path)).encode()
    return files


def _differences(name: str, first: bytes | None, again: bytes | None, other: bytes | None) -> list[str]:
    if first is None or other is None:
        return [f"{name}: written only {'with' if first is None else 'without'} the canary client"]
    try:
        lines = [x.decode().splitlines() for x in (first, again, other)]
    except UnicodeDecodeError:
        return [f"{name}: differs with the canary client"]
    first_lines, again_lines, other_lines = lines
    if len(other_lines) != len(first_lines):
        return [f"{name}: {len(other_lines)} lines with the canary client, {len(first_lines)} without"]
    return [f"{name}:{i + 1}: {x!r} becomes {y!r} with the canary client"
            for i, (x, x2, y) in enumerate(zip(first_lines, again_lines, other_lines)) if x == x2 and x != y]


class _ListHandler(logging.Handler):
    def __init__(self, lines: list[str]):
        super().__init__()
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
