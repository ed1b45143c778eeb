"""dpbench: compare differentially private methods for federated text at the same (ε, δ)."""

from dpbench.hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["hookimpl", "__version__"]
