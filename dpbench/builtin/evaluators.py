"""Built-in evaluators (default plugin): ``next_token``, the shared downstream yardstick.

Registered lazily so listing evaluators never imports torch.
"""

from dpbench.hookspecs import hookimpl


@hookimpl
def register_evaluators(register):
    """Register the built-in evaluators."""
    register("next_token", "dpbench.evaluation.next_token:NextTokenEvaluator")
