"""The cache of expensive shared work (``runs/.cache``, shared by the suites run there),
keyed by everything the work depends on."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any


def texts_key(texts: Sequence[str]) -> str:
    """A stable hash of a list of texts, for cache keys of work derived from them."""
    return hashlib.sha256(json.dumps(list(texts), ensure_ascii=False).encode()).hexdigest()[:20]


def cache_key(key: Mapping[str, Any]) -> str:
    """A stable hash of a JSON-able mapping."""
    payload = json.dumps(key, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


BUILT_ON = "built-on.json"
"""in a machine-dependent entry: the machine that built it (``machine_label``)"""


def machine_label() -> str:
    """This machine as far as float results go: its CPU model and whether it computes bf16
    natively (two machines that differ here train the same model to different bits)."""
    from dpbench.models.precision import cpuinfo, native_bf16

    return f"{cpuinfo().get('model name') or 'unknown CPU'} ({'' if native_bf16('cpu') else 'no '}native bf16)"


CACHE_INPUTS = "cache-inputs.json"
"""in a run folder: the machine-dependent cache entries the run read -> the machines that built them"""


def note_inputs(folder: Path, used: Mapping[str, str | None]) -> None:
    """Add ``used`` (``SuiteCache.used`` of a run's view) to ``folder``'s record, keeping what
    earlier attempts of the run noted (a resumed run may have read an entry built elsewhere).
    An entry that does not say where it was built (made before entries did) counts as built
    here."""
    from dpbench.files import write_json

    record = read_inputs(folder) or {}
    for entry, machine in used.items():
        record[entry] = sorted({*record.get(entry, []), machine or machine_label()})
    write_json(Path(folder) / CACHE_INPUTS, record)


def read_inputs(folder: Path) -> dict[str, list[str]] | None:
    """The run's record of machine-dependent cache entries; ``None`` for a run made before
    runs kept one."""
    path = Path(folder) / CACHE_INPUTS
    return json.loads(path.read_text()) if path.exists() else None


class SuiteCache:
    """Folders under ``root/<namespace>/<hash of key>``, built once and atomically.

    A half-built entry (killed mid-way) is never visible: entries are built in a temporary
    folder and renamed into place. One process builds an entry while others wait for it (a
    file lock beside the entry). The key is stored beside the entry for inspection. An entry
    built with ``machine_dependent=True`` (a trained model: its bits depend on the CPU) also
    stores the machine that built it, and a run's view of the cache (``for_run``) notes in
    ``used`` which such entries it read and where they were built, so a board can refuse rows
    scored against differently built yardsticks.
    """

    def __init__(self, root: Path, *, used: dict[str, str] | None = None):
        self.root = Path(root)
        self.used = used

    def for_run(self) -> SuiteCache:
        """The same cache, noting the machine-dependent entries one run reads in ``used``."""
        return SuiteCache(self.root, used={})

    def path(self, namespace: str, key: Mapping[str, Any]) -> Path:
        return self.root / namespace / cache_key(key)

    def get_or_build(self, namespace: str, key: Mapping[str, Any], build: Callable[[Path], None], *,
                     machine_dependent: bool = False) -> Path:
        """Return the entry's folder, calling ``build(tmp_folder)`` first if it does not exist."""
        final = self._get_or_build(namespace, key, build, machine_dependent)
        if machine_dependent and self.used is not None:
            built_on = final / BUILT_ON
            self.used[f"{namespace}/{final.name}"] = (json.loads(built_on.read_text())["machine"]
                                                      if built_on.exists() else None)
        return final

    def _get_or_build(self, namespace, key, build, machine_dependent: bool) -> Path:
        from filelock import FileLock

        final = self.path(namespace, key)
        if final.exists():
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(final.parent / f".{final.name}.lock"):
            if final.exists():  # built by another process while this one waited
                return final
            tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=final.parent))
            try:
                build(tmp)
                (tmp / "cache-key.json").write_text(json.dumps(key, sort_keys=True, default=str, indent=1))
                if machine_dependent:
                    (tmp / BUILT_ON).write_text(json.dumps({"machine": machine_label()}))
                os.rename(tmp, final)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
        return final

    def json(self, namespace: str, key: Mapping[str, Any], compute: Callable[[], Any]) -> Any:
        """A cached JSON value."""

        def build(folder: Path) -> None:
            (folder / "value.json").write_text(json.dumps(compute()))

        return json.loads((self.get_or_build(namespace, key, build) / "value.json").read_text())
