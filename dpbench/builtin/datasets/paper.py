"""``biorxiv`` and ``congressional``: the POPri paper's data sets (LargeFedBench).

Two sources:

* ``source: hub`` (default) reads the Hugging Face datasets ``hazylavender/biorxiv-abstract``
  / ``hazylavender/CongressionalDataset`` through ``datasets`` (imported only then). It needs a
  network, or a copy in the ``datasets`` cache; with ``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE``
  set and no cached copy it fails at once with a message pointing at ``source: files``.
  ``hub_id`` may also be a local folder written by ``datasets.Dataset.save_to_disk``.
  Records are grouped into clients by ``client_field``: bioRxiv by first author (the paper's
  clients are authors; the hub records carry the bioRxiv API's ``"A; B; C"`` author string),
  Congressional by ``speaker``. The hub sets ship no public seed set or test split, so
  ``public_fraction`` / ``test_fraction`` / ``validation_fraction`` of the clients are held out.
* ``source: files`` reads the paper's processed format (UTF-8 JSON): ``client_file``
  ``{client_id: [texts]}``, ``eval_file`` ``[texts]`` (the test split), ``public_file``
  (the paper's "initial set") ``[texts]`` and optionally ``validation_file`` ``[texts]``;
  without it, ``validation_fraction`` of the clients are held out for validation.

The hub record schemas were read from the collection scripts
(``hazylavender/fl_llm_benchmark_dataset``), not from the hub itself: the field options exist
so a changed schema needs no code change.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from dpbench.api.config import check_choice
from dpbench.api.dataset import Dataset, FederatedTextData
from dpbench.builtin.datasets.common import (
    CommonOptions,
    DataError,
    RawData,
    check_public_fraction,
    load_cached,
    read_client_file,
    read_text_list,
    require_file,
)
from dpbench.builtin.datasets.records import LIST_RULES, group_records, records_unit
from dpbench.errors import ConfigError

SOURCES = ("hub", "files")


@dataclass(frozen=True, kw_only=True)
class PaperOptions(CommonOptions):
    """Options of the paper's data sets (plus the common ones, see ``CommonOptions``).

    ``source``: ``hub`` or ``files`` (module docstring).
    ``client_file`` / ``eval_file`` / ``public_file`` / ``validation_file``: the paper's
    processed files (``source: files``; ``client_file`` required).
    ``hub_id`` / ``hub_revision`` / ``hub_split``: what ``datasets.load_dataset`` reads.
    ``text_field`` / ``client_field`` / ``client_separator`` / ``list_rule``: how hub records
    become clients (as in ``local``).
    ``public_fraction``: share of clients moved to the public split when no public file exists.
    """

    source: str = "hub"
    client_file: str | None = None
    eval_file: str | None = None
    public_file: str | None = None
    validation_file: str | None = None
    hub_id: str = ""
    hub_revision: str | None = None
    hub_split: str = "train"
    text_field: str = "text"
    client_field: str | None = None
    client_separator: str | None = None
    list_rule: str = "first"
    public_fraction: float = 0.1

    def __post_init__(self):
        super().__post_init__()
        check_choice("source", self.source, SOURCES)
        check_choice("list_rule", self.list_rule, LIST_RULES)
        check_public_fraction(self.public_fraction)
        if self.source == "files" and not self.client_file:
            raise ConfigError(
                "client_file", self.client_file, "a path to {client_id: [texts]} JSON (source is 'files')"
            )
        if self.source == "hub" and not self.hub_id:
            raise ConfigError("hub_id", self.hub_id, "a Hugging Face dataset id or a save_to_disk folder")


@dataclass(frozen=True, kw_only=True)
class BiorxivOptions(PaperOptions):
    hub_id: str = "hazylavender/biorxiv-abstract"
    text_field: str = "abstract"
    client_field: str | None = "authors"
    client_separator: str | None = ";"


@dataclass(frozen=True, kw_only=True)
class CongressionalOptions(PaperOptions):
    hub_id: str = "hazylavender/CongressionalDataset"
    text_field: str = "data"
    client_field: str | None = "speaker"


class PaperDataset(Dataset):
    """Base of the paper's data sets; see the module docstring."""

    version: ClassVar[str] = "1"
    name: ClassVar[str] = ""

    def load(self, cache) -> FederatedTextData:
        return load_cached(self.name, self.version, self.config, self._read, cache)

    def _read(self) -> RawData:
        c: PaperOptions = self.config
        if c.source == "files":
            return self._read_files(c)
        return self._read_hub(c)

    def _read_files(self, c: PaperOptions) -> RawData:
        path = require_file(c.client_file, "client_file")
        clients = read_client_file(path, "client_file")

        def optional(name: str | None, option: str) -> list[str] | None:
            return read_text_list(require_file(name, option), option) if name else None

        public = optional(c.public_file, "public_file")
        return RawData(
            clients=clients,
            source=str(path),
            test=optional(c.eval_file, "eval_file"),
            validation=optional(c.validation_file, "validation_file"),
            public=public,
            public_fraction=0.0 if public is not None else c.public_fraction,
            info={"source": "files", "client_file": str(path), "privacy_unit": "one client of the client file"},
        )

    def _read_hub(self, c: PaperOptions) -> RawData:
        records = load_hub_records(c.hub_id, revision=c.hub_revision, split=c.hub_split, dataset=self.name)
        source = f"{c.hub_id} (split {c.hub_split!r})"
        clients = group_records(
            records,
            source=source,
            text_field=c.text_field,
            client_field=c.client_field,
            separator=c.client_separator,
            list_rule=c.list_rule,
        )
        return RawData(
            clients=clients,
            source=source,
            public_fraction=c.public_fraction,
            info={"source": "hub", "hub_id": c.hub_id, "hub_revision": c.hub_revision,
                  "privacy_unit": records_unit(c.client_field, c.list_rule)},
        )


class BiorxivDataset(PaperDataset):
    """bioRxiv abstracts, clients = first authors (the paper's ``biorxiv``)."""

    name = "biorxiv"
    config_class: ClassVar[type] = BiorxivOptions


class CongressionalDataset(PaperDataset):
    """U.S./U.K./Canadian parliamentary speeches, clients = speakers (the paper's Congressional set)."""

    name = "congressional"
    config_class: ClassVar[type] = CongressionalOptions


_TRUE = {"1", "true", "yes", "on"}


def hub_offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def load_hub_records(hub_id: str, *, revision: str | None, split: str, dataset: str):
    """The records of one split of a hub dataset (or of a ``save_to_disk`` folder)."""
    try:
        import datasets
    except ImportError:
        raise DataError(
            f"{dataset}: source 'hub' needs the 'datasets' package (pip install 'dpbench[ml]'); "
            "or use source: files with the paper's processed JSON files"
        ) from None
    local = Path(hub_id).expanduser()
    if local.is_dir():
        loaded = datasets.load_from_disk(str(local))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise DataError(f"{local}: hub_split {split!r} not found; splits: {', '.join(loaded)}")
            loaded = loaded[split]
        return loaded
    try:
        return datasets.load_dataset(hub_id, revision=revision, split=split)
    except Exception as err:  # network, missing repo, missing split
        offline = " (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set and no cached copy exists)" if hub_offline() else ""
        raise DataError(
            f"{dataset}: could not load {hub_id!r} split {split!r} from the Hugging Face hub{offline}: "
            f"{type(err).__name__}: {err}. Without a network, use source: files with the paper's "
            "processed JSON files (client_file, eval_file, public_file), or the 'local' dataset."
        ) from None
