"""Private Evolution for text (Aug-PE, Xie et al., ICML 2024) and PE+SFT (PE, then PrE-Text's
fine-tuned expansion, Hou et al., ICML 2024) as dpbench method plugins.

The class is registered lazily, so listing plugins never imports torch.
"""

from dpbench.api import hookimpl


@hookimpl
def register_methods(register):
    register("pe", "dpbench_pe.method:PrivateEvolution")
    register("pe_sft", "dpbench_pe.sft:PeSft")
