"""``dpbench privacy epsilon|calibrate`` and ``dpbench audit``.

Only click and rich are imported here at import time; dp_accounting, numpy and opacus load when
a command runs, so ``dpbench --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import math

import click
from rich.console import Console
from rich.table import Table

from dpbench.errors import DpbenchError
from dpbench.privacy import ACCOUNTANTS, DEFAULT_ACCOUNTANT

MECHANISMS = ("gaussian", "tree_aggregation")  # = dpbench.api.privacy.MECHANISM_KINDS, without importing numpy

_accountant_option = click.option(
    "--accountant", "accountants", type=click.Choice(ACCOUNTANTS), multiple=True, default=(DEFAULT_ACCOUNTANT,),
    show_default=True, help="Accountant backend; repeat to compare several.",
)
_mechanism_option = click.option(
    "--mechanism", type=click.Choice(MECHANISMS), default="gaussian", show_default=True,
    help="'gaussian': a noisy sum per round; 'tree_aggregation': DP-FTRL's tree over the rounds.",
)
_sampling_option = click.option(
    "--sampling-rate", type=float, default=1.0, show_default=True, help="Poisson sampling rate of clients per round."
)
_rounds_option = click.option("--rounds", type=int, required=True, help="Number of noisy releases.")
_tree_option = click.option(
    "--rounds-per-tree", type=int, default=None,
    help="tree_aggregation only: restart the tree every this many rounds (each tree charged on its own).",
)
_delta_option = click.option("--delta", type=float, required=True, help="Target δ.")


@click.group()
def privacy():
    """Privacy accounting: ε for a noise multiplier, or the noise multiplier for an ε."""


@privacy.command()
@click.option("--noise-multiplier", type=float, required=True, help="Noise std / clip norm (σ).")
@_sampling_option
@_rounds_option
@_delta_option
@_accountant_option
@_mechanism_option
@_tree_option
def epsilon(noise_multiplier, sampling_rate, rounds, delta, accountants, mechanism, rounds_per_tree):
    """ε spent by ROUNDS releases at noise multiplier σ."""
    from dpbench.privacy.accountant import compute_epsilon

    heading = (f"ε of {rounds} {mechanism} releases{_trees(rounds_per_tree)} at σ={noise_multiplier:g}, "
               f"sampling rate {sampling_rate:g}, δ={delta:g}")
    table = Table("accountant", "ε")
    for accountant in accountants:
        with _errors():
            eps = compute_epsilon(noise_multiplier=noise_multiplier, sampling_rate=sampling_rate, rounds=rounds,
                                  delta=delta, mechanism=mechanism, rounds_per_tree=rounds_per_tree,
                                  accountant=accountant)
        table.add_row(accountant, _format_epsilon(eps))
    _show(heading, table)


@privacy.command()
@click.option("--epsilon", "target", type=float, required=True, help="Target ε.")
@_delta_option
@_sampling_option
@_rounds_option
@_accountant_option
@_mechanism_option
@_tree_option
def calibrate(target, delta, sampling_rate, rounds, accountants, mechanism, rounds_per_tree):
    """The smallest noise multiplier whose ε does not exceed the target."""
    from dpbench.privacy.accountant import compute_epsilon, compute_noise_multiplier

    heading = (f"σ for ε ≤ {target:g} over {rounds} {mechanism} releases{_trees(rounds_per_tree)}, "
               f"sampling rate {sampling_rate:g}, δ={delta:g}")
    table = Table("accountant", "σ", "ε at σ")
    for accountant in accountants:
        with _errors():
            sigma = compute_noise_multiplier(epsilon=target, delta=delta, sampling_rate=sampling_rate, rounds=rounds,
                                             mechanism=mechanism, rounds_per_tree=rounds_per_tree,
                                             accountant=accountant)
            achieved = compute_epsilon(noise_multiplier=sigma, sampling_rate=sampling_rate, rounds=rounds, delta=delta,
                                       mechanism=mechanism, rounds_per_tree=rounds_per_tree, accountant=accountant)
        table.add_row(accountant, f"{sigma:.6g}", _format_epsilon(achieved))
    _show(heading, table)


def _trees(rounds_per_tree: int | None) -> str:
    return "" if rounds_per_tree is None else f" (a tree every {rounds_per_tree})"


@click.command()
@click.argument("method")
@click.option("--trials", type=click.IntRange(min=20), default=2000, show_default=True,
              help="Releases per side (D, and D plus the canary); 100000 for factor-2 bugs.")
@click.option("--delta", type=float, default=1e-5, show_default=True, help="δ of the claim and the bound.")
@click.option("--alpha", type=float, default=0.05, show_default=True, help="Significance of the lower bound.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the audit's noise.")
def audit(method, trials, delta, alpha, seed):
    """Audit METHOD's noisy release: a Clopper–Pearson lower bound on ε beside the claimed ε.

    Exits with status 1 when the bound exceeds the claim (a privacy bug, at confidence 1 − alpha).
    """
    from dpbench.plugins import get_registry
    from dpbench.privacy.audit import run_audit

    with _errors():
        mechanism = get_registry("method").get(method, field="method")().audit_mechanism()
        if mechanism is None:
            raise click.ClickException(
                f"method {method!r} makes no noisy release to audit (its audit_mechanism() returned None)"
            )
        result = run_audit(mechanism, trials=trials, delta=delta, alpha=alpha, seed=seed)
    table = Table(show_header=False)
    rows = [
        ("mechanism", mechanism.name),
        ("noise multiplier σ", f"{mechanism.noise_multiplier:g}"),
        ("clip norm", f"{mechanism.clip_norm:g}"),
        ("δ", f"{delta:g}"),
        ("trials per side", f"{result.trials} (half select the threshold, half certify)"),
        ("claimed ε", _format_epsilon(result.epsilon_claimed)),
        (f"ε lower bound ({1 - alpha:.0%})", _format_epsilon(result.epsilon_lower_bound)),
        ("largest certifiable ε", _format_epsilon(result.epsilon_ceiling)),
        ("verdict", "VIOLATION: bound exceeds the claim" if result.violated else "ok: bound within the claim"),
        ("seconds", f"{result.seconds:.2f}"),
    ]
    for row in rows:
        table.add_row(*row)
    _show(f"Privacy audit of {method}", table)
    if result.violated:
        raise click.exceptions.Exit(1)


@contextlib.contextmanager
def _errors():
    """Show dpbench's own errors as one clean line instead of a traceback."""
    try:
        yield
    except DpbenchError as err:
        raise click.ClickException(str(err)) from None


def _show(heading: str, table: Table) -> None:
    console = Console()
    console.print(heading, markup=False, highlight=False)
    console.print(table)


def _format_epsilon(value: float) -> str:
    return "∞ (non-private)" if math.isinf(value) else f"{value:.6g}"
