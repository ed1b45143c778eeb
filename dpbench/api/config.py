"""Plugin options: frozen dataclasses built from suite mappings, validated on creation."""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from dpbench.errors import ConfigError, did_you_mean


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """Options of a plugin that takes none."""


def build_config(cls: type, options: Mapping[str, Any] | None, *, where: str):
    """Instantiate the options dataclass ``cls`` from a suite mapping.

    Unknown keys fail with "did you mean"; lists become tuples where the field is a tuple.
    ``where`` is the suite path of the mapping (``methods.popri``) and prefixes every error.
    """
    options = dict(options or {})
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in options:
        if key not in fields:
            allowed = ", ".join(sorted(fields)) or "(no options)"
            raise ConfigError(
                f"{where}.{key}", options[key], f"one of the known options: {allowed}." + did_you_mean(key, fields)
            )
    hints = typing.get_type_hints(cls)
    for key, value in list(options.items()):
        if isinstance(value, list) and _is_tuple(hints.get(key)):
            options[key] = tuple(value)
    missing = [n for n, f in fields.items() if n not in options and _required(f)]
    if missing:
        raise ConfigError(f"{where}.{missing[0]}", None, "a value (this option is required)")
    try:
        return cls(**options)
    except ConfigError as err:
        if err.field.startswith(where):
            raise
        raise ConfigError(f"{where}.{err.field}", err.value, err.allowed) from None


OMIT_AT_DEFAULT = {"omit_at_default": True}
"""``field(metadata=OMIT_AT_DEFAULT)``: ``config_dict`` leaves the field out while it holds its
default, so adding an option keeps the run ids and cache keys of every config not using it."""


def config_dict(config) -> dict[str, Any]:
    """A JSON-ready dict of an options dataclass (tuples become lists), without the
    ``OMIT_AT_DEFAULT`` fields that hold their default."""
    plain = _plain(dataclasses.asdict(config))
    for f in dataclasses.fields(config):
        if f.metadata.get("omit_at_default") and getattr(config, f.name) == f.default:
            del plain[f.name]
    return plain


@dataclasses.dataclass(frozen=True)
class OptionDoc:
    name: str
    type: str
    default: str
    doc: str


def option_docs(cls: type) -> list[OptionDoc]:
    """Each option of the dataclass ``cls`` with its type, default and attribute docstring (the
    string literal under the field, inherited fields included), for ``dpbench show``."""
    import ast
    import inspect
    import itertools
    import textwrap

    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue  # builtins, classes made at run time
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for field, after in itertools.pairwise(body):
            if (isinstance(field, ast.AnnAssign) and isinstance(field.target, ast.Name)
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                docs[field.target.id] = " ".join(inspect.cleandoc(after.value.value).split())
    out = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            default = repr(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = repr(f.default_factory())
        else:
            default = "(required)"
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        out.append(OptionDoc(f.name, kind, default, docs.get(f.name, "")))
    return out


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _required(field: dataclasses.Field) -> bool:
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


def _is_tuple(hint) -> bool:
    return hint is tuple or typing.get_origin(hint) is tuple or (
        typing.get_origin(hint) in (typing.Union, getattr(__import__("types"), "UnionType", None))
        and any(_is_tuple(a) for a in typing.get_args(hint))
    )


# Validators for __post_init__; each raises ConfigError naming the field.

def check_positive(field: str, value, *, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(field, value, "a number >= 0" if allow_zero else "a number > 0")


def check_int(field: str, value, *, minimum: int = 0) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(field, value, f"an integer >= {minimum}")


def check_fraction(field: str, value, *, allow_zero: bool = False, allow_one: bool = True) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    low_ok = ok and (value > 0 or (allow_zero and value == 0))
    high_ok = ok and (value < 1 or (allow_one and value == 1))
    if not (low_ok and high_ok):
        lo = "[0" if allow_zero else "(0"
        hi = "1]" if allow_one else "1)"
        raise ConfigError(field, value, f"a number in {lo}, {hi}")


def check_bool(field: str, value) -> None:
    if not isinstance(value, bool):
        raise ConfigError(field, value, "true or false")


def check_bf16(field: str, value) -> None:
    """A ``bf16`` option: true, false or auto (bf16 where the hardware computes it natively)."""
    if not (isinstance(value, bool) or value == "auto"):
        raise ConfigError(field, value, "true, false or auto (bfloat16 where the device computes it natively)")


def check_choice(field: str, value, allowed: Iterable[str]) -> None:
    allowed = list(allowed)
    if value not in allowed:
        raise ConfigError(field, value, "one of " + ", ".join(map(repr, allowed)) + "."
                          + did_you_mean(str(value), allowed))
