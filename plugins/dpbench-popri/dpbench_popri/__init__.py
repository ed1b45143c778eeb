"""POPri (Hou et al., ICML 2025, arXiv 2504.16438) as a dpbench method plugin.

The class is registered lazily, so listing plugins never imports torch.
"""

from dpbench.api import hookimpl


@hookimpl
def register_methods(register):
    register("popri", "dpbench_popri.method:Popri")
