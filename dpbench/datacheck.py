"""Checks of a suite that need its data loaded.

``load_suite`` checks a suite's structure without reading any data; these checks read it, so
that a data problem (a malformed file, no clients, an empty test split, a δ too large for the
number of clients) fails once, before any run starts, naming the dataset and its file, instead
of failing every run and leaving a run folder behind for each. ``dpbench validate`` passes
``Runner(suite).dataset`` as the loader, so the data is read through the shared cache exactly as
a run reads it; ``Runner.run`` calls ``check_datasets`` before its first run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from dpbench.errors import ConfigError, DataError, DpbenchError

if TYPE_CHECKING:
    from dpbench.api import FederatedTextData
    from dpbench.suite import PluginChoice, Suite


def check_datasets(suite: Suite, load: Callable[[PluginChoice], FederatedTextData]) -> dict[str, dict[str, int]]:
    """Load every dataset of ``suite`` with ``load`` and check it; return each one's
    ``FederatedTextData.summary()`` (clients, train/validation/test/public text counts) by label,
    in suite order.

    Raises ``DataError`` (a ``DpbenchError``) when loading fails or the data is unusable,
    ``ConfigError`` on ``privacy.delta`` when a private method's δ is not below 1/num_clients;
    each message is one line starting with ``datasets.<label>`` or naming ``privacy.delta``.
    """
    from dpbench.plugins import get_registry

    methods = get_registry("method")
    choices = {spec.dataset.label: spec.dataset for spec in suite.runs}
    summaries = {}
    for label, choice in choices.items():
        try:
            data = load(choice)
        except (DpbenchError, OSError) as err:
            message = str(err) if isinstance(err, DpbenchError) else f"{type(err).__name__}: {err}"
            where = f"datasets.{label}"
            raise DataError(message if message.startswith(f"{where}:") else f"{where}: {message}") from None
        check_data(label, data)
        deltas = [spec.delta for spec in suite.runs
                  if spec.dataset.label == label and methods.get(spec.method.plugin).reference is None]
        if deltas:
            check_delta(label, data, max(deltas))
        summaries[label] = data.summary()
    return summaries


def check_data(label: str, data: FederatedTextData) -> None:
    """Fail unless the dataset labelled ``label`` has a private client and a test split."""
    source = data.info.get("source")
    where = f"datasets.{label}: {source}" if source else f"datasets.{label}"
    if data.num_clients == 0:
        raise DataError(f"{where}: no private clients (every client was filtered out or held out)")
    if not data.test:
        raise DataError(f"{where}: the test split is empty (evaluators score on it)")


def check_delta(label: str, data: FederatedTextData, delta: float) -> None:
    """Fail unless ``delta`` < 1/num_clients: publishing one random client's data in full already
    meets (0, 1/num_clients)-DP, so a larger δ promises nothing."""
    if delta >= 1 / data.num_clients:
        raise ConfigError("privacy.delta", delta,
                          f"a number below 1/num_clients = 1/{data.num_clients} for dataset {label!r}")
