"""Errors dpbench raises for bad input: each names the field, the value and what is allowed."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class DpbenchError(Exception):
    """Base class of every error dpbench raises on purpose."""


class ConfigError(DpbenchError, ValueError):
    """A configuration value is missing or not allowed."""

    def __init__(self, field: str, value: object, allowed: str):
        self.field, self.value, self.allowed = field, value, allowed
        super().__init__(f"{field}: {value!r} is not allowed; expected {allowed}")


class DataError(DpbenchError, ValueError):
    """Input data is missing, malformed or too small; the message names the file and field."""


class UnknownNameError(DpbenchError, KeyError):
    """A registry was asked for a name nobody registered."""

    def __init__(self, kind: str, name: str, available: Iterable[str], field: str | None = None):
        self.kind, self.name = kind, name
        self.available = sorted(available)
        where = f"{field}: " if field else ""
        message = f"{where}unknown {kind} {name!r}."
        close = difflib.get_close_matches(name, self.available, n=3, cutoff=0.6)
        if close:
            message += " Did you mean " + " or ".join(repr(c) for c in close) + "?"
        shown = ", ".join(self.available[:20]) or "(none registered)"
        if len(self.available) > 20:
            shown += f", ... ({len(self.available)} in all)"
        message += f" Available: {shown}."
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """A ' Did you mean ...?' suffix, or '' when nothing is close."""
    close = difflib.get_close_matches(name, sorted(choices), n=3, cutoff=0.6)
    return (" Did you mean " + " or ".join(repr(c) for c in close) + "?") if close else ""


class DamagedRunError(DpbenchError):
    """A run folder's records no longer agree with each other (a lost or torn ledger line, a
    changed output): the run is incomplete and is redone from scratch, never shown with a
    lower ε."""


class PrivacyMisuseError(DpbenchError):
    """A method used its privacy session against the mechanism it declared (a release from
    clients outside the round's cohort, more releases than planned)."""
