"""Reading record files (JSON, JSONL, CSV, Parquet) and grouping records into clients."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from dpbench.builtin.datasets.common import DataError, read_json, read_text

FORMATS = ("auto", "json", "jsonl", "csv", "parquet")
LIST_RULES = ("first", "join")
_SUFFIXES = {
    ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet",
}


def detect_format(path: Path, fmt: str, option: str) -> str:
    if fmt != "auto":
        return fmt
    found = _SUFFIXES.get(path.suffix.lower())
    if found is None:
        raise DataError(
            f"{path}: cannot tell the format from the suffix {path.suffix!r}; set {option} to one of "
            + ", ".join(FORMATS[1:])
        )
    return found


def read_records(path: Path, fmt: str, records_path: str | None, *, option: str = "format",
                 file_option: str = "path") -> list[Mapping[str, Any]]:
    """The records of a file as a list of mappings.

    ``records_path`` is a dotted path to the list inside a JSON document (``papers`` for
    ``{"papers": [...]}``); ``None`` means the document itself is the list. ``option`` and
    ``file_option`` name the format and file options in error messages.
    """
    fmt = detect_format(path, fmt, option)
    if fmt == "json":
        value = read_json(path, file_option)
        for part in (records_path or "").split(".") if records_path else ():
            if not isinstance(value, Mapping) or part not in value:
                raise DataError(f"{path}: records_path {records_path!r}: no key {part!r} in the JSON document")
            value = value[part]
        if not isinstance(value, list):
            hint = " (set records_path to the key holding the list)" if isinstance(value, Mapping) else ""
            raise DataError(f"{path}: expected a JSON list of records, got {type(value).__name__}{hint}")
        records = value
    elif fmt == "jsonl":
        records = []
        for lineno, line in enumerate(read_text(path, file_option).split("\n"), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DataError(f"{path}: line {lineno} is not valid JSON ({err.msg})") from None
    else:
        import pandas as pd

        text = read_text(path, file_option) if fmt == "csv" else None
        try:
            if text is not None:
                frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
            else:
                frame = pd.read_parquet(path)
        except ValueError as err:  # pandas' ParserError, pyarrow's ArrowInvalid
            raise DataError(f"{path}: not a valid {fmt} file ({str(err).strip().splitlines()[0]})") from None
        records = frame.to_dict(orient="records")
    for i, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise DataError(f"{path}: record {i} is a {type(record).__name__}, not an object with fields")
    return records


def client_key(value: Any, *, separator: str | None, list_rule: str) -> str | None:
    """The client id a record's client field gives; ``None`` when the field is empty.

    Strings are split on ``separator`` first (e.g. ``"; "`` for author lists). A list keeps its
    first element (``list_rule="first"``; bioRxiv: the first listed category) or becomes one
    client id joining all elements (``"join"``). Non-string ids are JSON-encoded.
    """
    if isinstance(value, str) and separator:
        value = [v.strip() for v in value.split(separator) if v.strip()]
    if isinstance(value, (list, tuple)):
        if not value:
            return None
        value = value[0] if list_rule == "first" else " | ".join(_as_id(v) for v in value)
    if value is None or (isinstance(value, float) and value != value):  # None or NaN
        return None
    key = _as_id(value)
    return key if key.strip() else None


def _as_id(value: Any) -> str:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def group_records(
    records: Iterable[Mapping[str, Any]],
    *,
    source: str,
    text_field: str,
    client_field: str | None,
    separator: str | None = None,
    list_rule: str = "first",
) -> dict[str, list[str]]:
    """``{client_id: [texts]}`` in record order. ``client_field=None``: each record is a client.

    A record without ``text_field`` or ``client_field`` fails naming the source, the record and
    the field; a record whose client field is present but empty fails too.
    """
    clients: dict[str, list[str]] = {}
    count = 0
    for i, record in enumerate(records):
        count += 1
        if text_field not in record:
            raise DataError(f"{source}: record {i} has no text field {text_field!r} (fields: {_fields(record)})")
        text = record[text_field]
        if text is None:
            text = ""
        if not isinstance(text, str):
            raise DataError(f"{source}: record {i}: text field {text_field!r} is a {type(text).__name__}, not a string")
        if client_field is None:
            key = f"record-{i:06d}"
        else:
            if client_field not in record:
                raise DataError(
                    f"{source}: record {i} has no client field {client_field!r} (fields: {_fields(record)})"
                )
            key = client_key(record[client_field], separator=separator, list_rule=list_rule)
            if key is None:
                raise DataError(f"{source}: record {i}: client field {client_field!r} is empty")
        clients.setdefault(key, []).append(text)
    if count == 0:
        raise DataError(f"{source}: no records")
    return clients


def records_unit(client_field: str | None, list_rule: str) -> str:
    """What one client of ``group_records`` is, in words (a board's privacy unit)."""
    if client_field is None:
        return "one record"
    of_list = "its first entry" if list_rule == "first" else "all its entries together"
    return f"all records sharing one `{client_field}` value (of a list: {of_list})"


def _fields(record: Mapping[str, Any]) -> str:
    names = sorted(map(str, record))
    return ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
