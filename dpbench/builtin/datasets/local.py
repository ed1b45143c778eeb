"""``local``: any JSON / JSONL / CSV / Parquet file of records with a text and a client field.

Examples (``suites/shared-*.yaml`` use both)::

    dataset: local
    options:    # bioRxiv 2014 abstracts, one client per subject category
      path: data/biorxiv-2014/data1.txt
      format: json            # the file is JSON despite its .txt suffix
      records_path: papers    # {"papers": [...]}
      text_field: abstract
      client_field: category  # a list: its first element is the client (list_rule: first)

    dataset: local
    options:    # ConVote House floor debates, one client per speaker
      path: data/convote/convote_stage3.jsonl
      text_field: text
      client_field: speaker
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from dpbench.api.config import check_choice
from dpbench.api.dataset import Dataset, FederatedTextData
from dpbench.builtin.datasets.common import (
    CommonOptions,
    RawData,
    check_public_fraction,
    load_cached,
    read_json,
    require_file,
)
from dpbench.builtin.datasets.records import (
    FORMATS,
    LIST_RULES,
    detect_format,
    group_records,
    read_records,
    records_unit,
)
from dpbench.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class LocalOptions(CommonOptions):
    """Options of ``local`` (plus the common ones, see ``CommonOptions``).

    ``path``: the records file (relative paths are relative to the working directory).
    ``format``: ``auto`` (from the suffix), ``json``, ``jsonl``, ``csv`` or ``parquet``.
    ``records_path``: dotted key of the record list inside a JSON document (``papers``).
    ``text_field`` / ``client_field``: the fields holding the text and the client id;
    ``client_field: null`` makes every record its own client.
    ``client_separator``: split string client fields on this first (``"; "`` for author lists).
    ``list_rule``: a list-valued client field becomes its first element (``first``) or one id
    joining all elements (``join``).
    ``public_path`` / ``test_path``: optional files (same format and text field, or a JSON list
    of strings) for the public and test splits; without ``public_path``, ``public_fraction`` of
    the clients become the public split.
    """

    path: str
    format: str = "auto"
    records_path: str | None = None
    text_field: str = "text"
    client_field: str | None = None
    client_separator: str | None = None
    list_rule: str = "first"
    public_path: str | None = None
    test_path: str | None = None
    public_fraction: float = 0.1

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.path, str) or not self.path:
            raise ConfigError("path", self.path, "the path of a records file")
        check_choice("format", self.format, FORMATS)
        check_choice("list_rule", self.list_rule, LIST_RULES)
        if not isinstance(self.text_field, str) or not self.text_field:
            raise ConfigError("text_field", self.text_field, "a field name")
        check_public_fraction(self.public_fraction)


class LocalFilesDataset(Dataset):
    """Federated text from a local records file; see the module docstring for examples."""

    version: ClassVar[str] = "1"
    config_class: ClassVar[type] = LocalOptions

    def load(self, cache) -> FederatedTextData:
        return load_cached("local", self.version, self.config, self._read, cache)

    def _read(self) -> RawData:
        c: LocalOptions = self.config
        path = require_file(c.path, "path")
        records = read_records(path, c.format, c.records_path)
        clients = group_records(
            records,
            source=str(path),
            text_field=c.text_field,
            client_field=c.client_field,
            separator=c.client_separator,
            list_rule=c.list_rule,
        )
        public = self._read_texts(c.public_path, "public_path") if c.public_path else None
        test = self._read_texts(c.test_path, "test_path") if c.test_path else None
        return RawData(
            clients=clients,
            source=str(path),
            public=public,
            test=test,
            public_fraction=0.0 if public is not None else c.public_fraction,
            info={"path": str(path), "privacy_unit": records_unit(c.client_field, c.list_rule)},
        )

    def _read_texts(self, name: str, option: str) -> list[str]:
        c: LocalOptions = self.config
        path = require_file(name, option)
        if detect_format(path, c.format, "format") == "json":
            value = read_json(path, option)
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                return value
        records = read_records(path, c.format, c.records_path, file_option=option)
        per_record = group_records(records, source=f"{path} [{option}]", text_field=c.text_field, client_field=None)
        return [text for texts in per_record.values() for text in texts]

