"""The dataset contract: private federated clients plus held-out splits."""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from dpbench.api.config import NoOptions

if TYPE_CHECKING:
    from dpbench.cache import SuiteCache


@dataclass(frozen=True)
class MethodData:
    """What a method may see: private clients, the validation split, the public seed set.

    ``validation`` serves model selection (checkpoints, rounds) and is disjoint from the test
    split; ``public`` texts never overlap private clients and may seed prompts freely.
    """

    clients: Mapping[str, tuple[str, ...]]
    validation: tuple[str, ...] = ()
    public: tuple[str, ...] = ()

    @property
    def num_clients(self) -> int:
        return len(self.clients)

    def training_texts(self) -> tuple[str, ...]:
        """All private training texts, clients in sorted order."""
        return tuple(t for cid in sorted(self.clients) for t in self.clients[cid])


@dataclass(frozen=True)
class FederatedTextData(MethodData):
    """A loaded dataset. ``test`` is the held-out private evaluation split: only evaluators
    see it, never methods (the runner hands methods ``for_method()``)."""

    test: tuple[str, ...] = ()
    info: Mapping[str, object] = field(default_factory=dict)

    def for_method(self) -> MethodData:
        return MethodData(clients=self.clients, validation=self.validation, public=self.public)

    def fingerprint(self) -> str:
        """A content hash; caches of work derived from this data are keyed by it."""
        digest = hashlib.sha256()
        for part in (
            sorted((k, list(v)) for k, v in self.clients.items()),
            list(self.validation),
            list(self.public),
            list(self.test),
        ):
            digest.update(json.dumps(part, ensure_ascii=False).encode())
        return digest.hexdigest()[:16]

    def summary(self) -> dict[str, int | str]:
        """Split sizes, and what one client is (``info["privacy_unit"]``) where the dataset says."""
        sizes = {
            "clients": self.num_clients,
            "train_texts": sum(len(v) for v in self.clients.values()),
            "validation_texts": len(self.validation),
            "test_texts": len(self.test),
            "public_texts": len(self.public),
        }
        unit = self.info.get("privacy_unit")
        return sizes | {"privacy_unit": unit} if unit else sizes


class Dataset(ABC):
    """A federated text dataset plugin.

    Constructors are cheap; ``load`` does the reading. Subclasses set ``config_class`` (a frozen
    dataclass of options) and bump ``version`` whenever the texts they produce change.
    """

    version: ClassVar[str] = "1"
    config_class: ClassVar[type] = NoOptions

    def __init__(self, config=None):
        self.config = config if config is not None else self.config_class()

    @abstractmethod
    def load(self, cache: SuiteCache) -> FederatedTextData:
        """Read and split the data; ``cache`` keeps expensive preprocessing between runs."""
