"""DP-FedAvg (McMahan et al., ICLR 2018, arXiv 1710.06963) and DP-FTRL (Kairouz et al., ICML
2021, arXiv 2103.00039), which shares its client loop, as dpbench method plugins.

The class is registered lazily, so listing plugins never imports torch.
"""

from dpbench.api import hookimpl


@hookimpl
def register_methods(register):
    register("dp_fedavg", "dpbench_dpfedavg.method:DpFedAvg")
    register("dp_ftrl", "dpbench_dpfedavg.method:DpFtrl")
