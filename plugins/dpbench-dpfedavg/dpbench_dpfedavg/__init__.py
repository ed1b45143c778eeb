"""DP-FedAvg (McMahan et al., ICLR 2018, arXiv 1710.06963) as a dpbench method plugin.

The class is registered lazily, so listing plugins never imports torch.
"""

from dpbench.api import hookimpl


@hookimpl
def register_methods(register):
    register("dp_fedavg", "dpbench_dpfedavg.method:DpFedAvg")
