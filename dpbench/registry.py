"""Typed registries of datasets, methods and evaluators.

Entries may be classes or lazy ``"module:attr"`` strings, imported on first ``get`` so listing
plugins never imports torch. Duplicates are refused naming both origins; unknown names get a
"did you mean" answer.
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from typing import Generic, TypeVar

from dpbench.errors import DpbenchError, UnknownNameError

T = TypeVar("T")


class RegistrationError(DpbenchError, TypeError):
    """A plugin registered something that does not fit the contract."""


@dataclass
class Entry:
    name: str
    target: object  # a class, or "module:attr" until first use
    plugin: str


class Registry(Generic[T]):
    """Name -> class of one kind (``base``), filled by plugins through ``register``."""

    def __init__(self, kind: str, base: type[T]):
        self.kind, self.base = kind, base
        self._entries: dict[str, Entry] = {}
        self._lock = threading.Lock()

    def register(self, name: str, target: type[T] | str, *, plugin: str = "<direct>") -> None:
        if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
            raise RegistrationError(
                f"plugin {plugin!r}: {self.kind} name {name!r} must be letters, digits, '_' or '-'"
            )
        if isinstance(target, str):
            if ":" not in target:
                raise RegistrationError(
                    f"plugin {plugin!r}: lazy {self.kind} target {target!r} must look like 'module:attr'"
                )
        else:
            self._check_class(name, target, plugin)
        with self._lock:
            if name in self._entries:
                first = self._entries[name]
                raise RegistrationError(
                    f"{self.kind} {name!r} is registered twice: by plugin {first.plugin!r} "
                    f"({_describe(first.target)}) and by plugin {plugin!r} ({_describe(target)})"
                )
            self._entries[name] = Entry(name, target, plugin)

    def get(self, name: str, *, field: str | None = None) -> type[T]:
        entry = self._entries.get(name)
        if entry is None:
            raise UnknownNameError(self.kind, name, self._entries, field=field)
        if isinstance(entry.target, str):
            module_name, _, attr = entry.target.partition(":")
            target = getattr(importlib.import_module(module_name), attr)
            self._check_class(name, target, entry.plugin)
            entry.target = target
        return entry.target  # type: ignore[return-value]

    def origin(self, name: str) -> str:
        return self._entries[name].plugin

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def _check_class(self, name: str, target: object, plugin: str) -> None:
        if not (isinstance(target, type) and issubclass(target, self.base)):
            raise RegistrationError(
                f"plugin {plugin!r}: {self.kind} {name!r} must be a subclass of "
                f"{self.base.__module__}.{self.base.__qualname__}, got {_describe(target)}"
            )


def _describe(target: object) -> str:
    if isinstance(target, str):
        return target
    if isinstance(target, type):
        return f"{target.__module__}.{target.__qualname__}"
    return repr(target)
