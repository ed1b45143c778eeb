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


class SuiteCache:
    """Folders under ``root/<namespace>/<hash of key>``, built once and atomically.

    A half-built entry (killed mid-way) is never visible: entries are built in a temporary
    folder and renamed into place. One process builds an entry while others wait for it (a
    file lock beside the entry). The key is stored beside the entry for inspection.
    """

    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, namespace: str, key: Mapping[str, Any]) -> Path:
        return self.root / namespace / cache_key(key)

    def get_or_build(self, namespace: str, key: Mapping[str, Any], build: Callable[[Path], None]) -> Path:
        """Return the entry's folder, calling ``build(tmp_folder)`` first if it does not exist."""
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
