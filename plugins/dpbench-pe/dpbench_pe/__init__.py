"""Private Evolution for text (Aug-PE, Xie et al., ICML 2024) as a dpbench method plugin.

The class is registered lazily, so listing plugins never imports torch.
"""

from dpbench.api import hookimpl


@hookimpl
def register_methods(register):
    register("pe", "dpbench_pe.method:PrivateEvolution")
