"""What a running method or evaluator gets from the harness."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from dpbench.files import read_json, write_json

if TYPE_CHECKING:
    from dpbench.api.artifacts import SyntheticTexts
    from dpbench.api.clients import ClientRuntime
    from dpbench.api.privacy import PrivacyBudget, PrivacySession
    from dpbench.cache import SuiteCache
    from dpbench.progress import Progress

T = TypeVar("T")


def _in_process():
    from dpbench.clients import InProcessClients

    return InProcessClients()


def derive_seed(seed: int, stream: str) -> int:
    """A 63-bit seed for the named stream, independent of other streams of the same run seed."""
    key = int.from_bytes(hashlib.sha256(stream.encode()).digest()[:8], "little")
    return int(np.random.SeedSequence([seed, key]).generate_state(2, np.uint64)[0] >> np.uint64(1))


@dataclass
class RunContext:
    """Seed, folders, device, privacy handle, cache, logger and progress of one run.

    ``privacy`` is ``None`` for the reference rows, which make no noisy release.
    ``downstream_model`` is the evaluator's model folder, resolved by the runner before the
    method runs when the method trains it itself (see ``initial_model``).
    ``validation_scorer`` scores a method's candidate texts with the suite's first evaluator
    on the validation split (see ``validation_score``). ``reporter`` takes what ``report`` is
    given (the runner passes it on to publishers). ``clients`` runs the method's client steps
    (``dpbench.api.clients``): in this process, or on Flower nodes under ``runtime: flower``.
    """

    run_id: str
    seed: int
    output_dir: Path
    budget: PrivacyBudget
    cache: SuiteCache
    device: str = "cpu"
    privacy: PrivacySession | None = None
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("dpbench.run"))
    progress: Progress | None = None
    downstream_model: Path | None = None
    validation_scorer: Callable[[SyntheticTexts], float] | None = None
    reporter: Callable[[int, dict], None] | None = None
    clients: ClientRuntime = field(default_factory=_in_process)

    @property
    def checkpoint_dir(self) -> Path:
        """Where a method keeps resumable state; survives a killed run."""
        path = self.output_dir / "state"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def save_state(self, name: str, value) -> None:
        """Keep the JSON-able ``value`` as the file ``name`` under ``checkpoint_dir``
        (``"monitor.json"``, ``"round000/round.json"``), written atomically: a killed run
        leaves the old file or the new one. Non-finite floats come back as strings."""
        write_json(self._state_path(name), value)

    def load_state(self, name: str, default=None):
        """What ``save_state`` kept as ``name``, or ``default`` if it was never saved."""
        path = self._state_path(name)
        return read_json(path) if path.exists() else default

    def _state_path(self, name: str) -> Path:
        folder = self.checkpoint_dir
        path = folder / name
        if path.resolve() == folder.resolve() or not path.resolve().is_relative_to(folder.resolve()):
            raise ValueError(f"state {name!r} is outside the checkpoint folder")
        return path

    def initial_model(self) -> Path:
        """The folder (``save_pretrained`` format) of the model the suite's evaluator scores;
        a method that trains it returns ``TrainedModel`` of its own copy. Never write into it."""
        from dpbench.errors import DpbenchError

        if self.downstream_model is None:
            raise DpbenchError("no downstream model was handed to this run: a method that trains it sets "
                               "Method.trains_downstream_model, and the suite needs an evaluator that provides one "
                               "(initial_model, such as next_token)")
        return self.downstream_model

    def validation_score(self, texts) -> float:
        """The suite's evaluator's primary metric of ``texts`` on the validation split (higher
        is better), for choosing among a method's own candidates; never reads test. Costs what
        one evaluation of that many texts costs (a fine-tuning for ``next_token``)."""
        from dpbench.errors import DpbenchError

        if self.validation_scorer is None:
            raise DpbenchError("no validation scorer was handed to this run: the runner sets one from the suite's "
                               "first evaluator")
        from dpbench.api.artifacts import SyntheticTexts

        return float(self.validation_scorer(SyntheticTexts(texts=tuple(texts))))

    def report(self, step: int, entry: Mapping) -> None:
        """Round ``step``'s monitor entry, as ``state/monitor.json``'s history will hold it at
        that index, reported when it is made so a long run can be followed live (wandb); a
        resumed run may report a round again."""
        if self.reporter is not None:
            self.reporter(step, {"monitor": dict(entry)})

    def seed_for(self, stream: str) -> int:
        return derive_seed(self.seed, stream)

    def rng(self, stream: str) -> np.random.Generator:
        """A generator for one named use (``"prompts"``, ``"shuffle"``...), so streams never
        share draws and adding a stream changes no other."""
        return np.random.default_rng(self.seed_for(stream))

    def track(self, items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
        """Iterate with a progress bar under the run's row."""
        if self.progress is None:
            yield from items
            return
        yield from self.progress.track(items, description=description, total=total)

    @contextmanager
    def phase(self, description: str) -> Iterator[None]:
        """Show ``description`` under the run's row while the block runs (one long step, such
        as sampling or a DPO round, which a log would otherwise not show)."""
        if self.progress is None:
            yield
            return
        with self.progress.phase(description):
            yield
