"""POPri's whole loop in seconds on dpbench's tiny random-init chat Llama and hashing embedder
(the ``tiny_llama`` and ``hashing_embedder`` fixtures of dpbench's pytest plugin)."""

from __future__ import annotations

from dpbench.testing.pytest_plugin import installed_plugin

popri_plugin = installed_plugin("dpbench_popri", "popri")
