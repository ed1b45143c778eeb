"""Built-in datasets (default plugin).

``sotu`` (embedded, offline), ``biorxiv`` and ``congressional`` (the POPri paper's sets, from
the Hugging Face hub or the paper's processed files) and ``local`` (any records file). All
share the options and pipeline of ``dpbench.builtin.datasets.common``. Registered lazily, so
listing datasets imports nothing heavy.
"""

from dpbench.hookspecs import hookimpl

DATASETS = {
    "sotu": "dpbench.builtin.datasets.sotu:SotuDataset",
    "biorxiv": "dpbench.builtin.datasets.paper:BiorxivDataset",
    "congressional": "dpbench.builtin.datasets.paper:CongressionalDataset",
    "local": "dpbench.builtin.datasets.local:LocalFilesDataset",
}


@hookimpl
def register_datasets(register):
    """Register the built-in datasets."""
    for name, target in DATASETS.items():
        register(name, target)
