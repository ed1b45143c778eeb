"""Does anything but a method's noisy releases depend on one client? A frozen-release differential check.

The method runs three times under a seeded session: twice on D (runs A and A2; whatever differs
between those is nondeterminism, such as timings, and is ignored) and once on D′ = D plus one
canary client (run B) whose session replays A's stored releases. After that, everything the
method writes, logs or returns is post-processing of the same released values, so a line that
is identical in A and A2 but differs in B depends on the canary client other than through a
release: a side channel (a logged cohort size, a per-client loss, an unnoised score). The
canary's marker text must also appear nowhere in B. Timings are masked before the comparison
(JSON keys ``seconds``, ``timings`` and ``*_s``; durations such as ``12.3 s`` in text), since
two short runs can time alike by chance while the third does not; a leak carried by a timing
is missed. Files written under ``ctx.cache`` (the framework's private-data cache) are not compared.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from dpbench.privacy.session import DIAGNOSTICS_NAME
from dpbench.testing.runs import RUN_DIR, run_once

CANARY_MARKER = "zqxcanary7f3e"
TIMING_KEY = re.compile(r"seconds|timings|\w+_s")
DURATION = re.compile(r"\b\d+(?:\.\d+)? ?s\b")


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

        raise ConfigError("method", type(method).__name__,
                          "a method whose declared mechanism is the same with one more client "
                          "(e.g. DP-FedAvg with clients_per_round >= the number of clients, so q = 1)")
    settings = dict(seed=seed, noise_multiplier=noise_multiplier, downstream=downstream, keep_releases=True)
    a = run_once(method, data, folder / "a", **settings)
    a2 = run_once(method, data, folder / "a2", **settings)
    replayed, replaying = folder / "a" / RUN_DIR, folder / "b" / RUN_DIR  # run B replays every release of run A
    replaying.mkdir(parents=True)
    shutil.copy(replayed / "ledger.jsonl", replaying / "ledger.jsonl")
    shutil.copytree(replayed / "releases", replaying / "releases")
    if (replayed / DIAGNOSTICS_NAME).exists():  # the session's notes on A's releases, which B replays
        shutil.copy(replayed / DIAGNOSTICS_NAME, replaying / DIAGNOSTICS_NAME)
    b = run_once(method, canary, folder / "b", **settings)

    problems = []
    for name in sorted(set(a) | set(a2) | set(b)):
        first, again, other = (_without_timings(name, run.get(name)) for run in (a, a2, b))
        if first == again and other != first:
            problems += _differences(name, first, again, other)
        if name in b and marker.encode() in b[name]:
            problems.append(f"{name}: holds the canary client's private text")
    return problems


def _without_timings(name: str, content: bytes | None) -> bytes | None:
    """``content`` with its timings masked: JSON (``.json``, each line of ``.jsonl``) without
    timing keys, durations in text replaced by ``<duration>``."""
    if content is None:
        return None
    try:
        text = content.decode()
    except UnicodeDecodeError:
        return content
    if name.endswith(".json") and (masked := _json_without_timings(text, indent=1)) is not None:
        return masked.encode()
    lines = text.splitlines()
    if name.endswith(".jsonl"):
        lines = [_json_without_timings(line) or line for line in lines]
    return "\n".join(DURATION.sub("<duration>", line) for line in lines).encode()


def _json_without_timings(text: str, indent: int | None = None) -> str | None:
    """``text`` as JSON without its timing keys, or None when it is not JSON."""
    try:
        return json.dumps(_drop_timing_keys(json.loads(text)), indent=indent, ensure_ascii=False)
    except ValueError:
        return None


def _drop_timing_keys(value):
    if isinstance(value, dict):
        return {k: _drop_timing_keys(v) for k, v in value.items() if not TIMING_KEY.fullmatch(k)}
    if isinstance(value, list):
        return [_drop_timing_keys(v) for v in value]
    return value


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
            for i, (x, x2, y) in enumerate(zip(first_lines, again_lines, other_lines, strict=True))
            if x == x2 and x != y]
