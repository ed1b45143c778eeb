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

CACHE_INPUTS = "cache-inputs.json"
"""in a run folder: the machine-dependent cache entries the run read -> the machines that built them"""


def machine_label(cpu: str | None, native_bf16: bool, gpu: str | None = None) -> str:
    """A machine as far as float results go: the GPU the work ran on, or else the CPU model and
    whether it computes bf16 natively (machines that differ here train one model to other bits)."""
    return f"GPU {gpu}" if gpu else f"{cpu or 'unknown CPU'} ({'' if native_bf16 else 'no '}native bf16)"


def this_machine(device: str) -> str:
    """``machine_label`` of this machine's ``device`` (``cpu``, ``cuda``, ``cuda:1``)."""
    from dpbench.models.precision import cpuinfo, native_bf16

    if device.startswith("cuda"):
        import torch

        return machine_label(None, True, gpu=torch.cuda.get_device_name(torch.device(device)))
    return machine_label(cpuinfo().get("model name"), native_bf16("cpu"))


def built_on(entry: Path, device: str) -> str:
    """The machine that built the machine-dependent cache entry ``entry``: the one it names,
    or this one for an entry made before entries named theirs (or not yet made here)."""
    path = Path(entry) / BUILT_ON
    return json.loads(path.read_text())["machine"] if path.exists() else this_machine(device)


def note_inputs(folder: Path, used: Mapping[str, str]) -> None:
    """Add ``used`` (entry -> the machine that built it) to ``folder``'s record, keeping what
    earlier attempts of the run noted (a resumed run may read an entry built elsewhere)."""
    from dpbench.files import write_json

    record = read_inputs(folder) or {}
    for entry, machine in used.items():
        record[entry] = sorted({*record.get(entry, []), machine})
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
    whose bits depend on the machine that computes it (a trained model) also stores that
    machine, and a run's view of the cache (``for_run``) notes in the run folder which such
    entries the run read and where they were built, so a board can refuse rows scored against
    differently built yardsticks.
    """

    def __init__(self, root: Path, *, run_folder: Path | None = None):
        self.root = Path(root)
        self.run_folder = run_folder

    def for_run(self, folder: Path) -> SuiteCache:
        """The same cache, noting each machine-dependent entry it serves in ``folder``'s
        ``CACHE_INPUTS`` as it serves it (an empty record at once: a run that reads none says so)."""
        note_inputs(folder, {})
        return SuiteCache(self.root, run_folder=Path(folder))

    def path(self, namespace: str, key: Mapping[str, Any]) -> Path:
        return self.root / namespace / cache_key(key)

    def get_or_build(self, namespace: str, key: Mapping[str, Any], build: Callable[[Path], None], *,
                     machine_dependent: str | None = None) -> Path:
        """Return the entry's folder, calling ``build(tmp_folder)`` first if it does not exist.
        ``machine_dependent``: the device ``build`` computes on, when the entry's bits depend on
        the machine (a trained model); the entry then records the machine that built it."""
        final = self._get_or_build(namespace, key, build, machine_dependent)
        if machine_dependent and self.run_folder is not None:
            note_inputs(self.run_folder, {f"{namespace}/{final.name}": built_on(final, machine_dependent)})
        return final

    def _get_or_build(self, namespace, key, build, machine_dependent: str | None) -> Path:
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
                    (tmp / BUILT_ON).write_text(json.dumps({"machine": this_machine(machine_dependent)}))
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
