"""ε for a δ from mechanism parameters, and the noise multiplier that meets a target ε.

Three backends: ``"pld"`` (dp_accounting's privacy-loss-distribution accountant, near-tight; the
default), ``"rdp"`` (dp_accounting's Rényi accountant) and ``"opacus"`` (opacus's RDP analysis with
its default orders, as POPri and PrE-Text computed their published ε; a cross-check). Every privacy
parameter is keyword-only. Neighbouring relation: add/remove one client.

Tree aggregation (DP-FTRL, one tree over ``rounds`` steps, each client at most once per tree):
dp_accounting's RDP accountant has the event (``SingleEpochTreeAggregationDpEvent``, RDP
α·depth/(2z²) with depth = ⌈log₂(rounds + 1)⌉); PLD and opacus have none. A client changes at most
``depth`` tree nodes by at most the clip norm each, so all node releases together are one Gaussian
mechanism of L2 sensitivity √depth: those two backends account ``Gaussian(z / √depth)``, which has
exactly the RDP above. Restarts (a new tree every ``rounds_per_tree`` rounds, each client once per
tree) compose one such event per tree, with fresh noise: never one tree over all the rounds,
which would charge ⌈log₂⌉ of the total instead of the sum of the trees' depths.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

from dpbench.api.config import check_choice, check_fraction, check_int, check_positive
from dpbench.api.privacy import MECHANISM_KINDS, MechanismSpec, tree_sizes
from dpbench.errors import ConfigError, DpbenchError
from dpbench.privacy import ACCOUNTANTS, DEFAULT_ACCOUNTANT

MAX_NOISE_MULTIPLIER = 1e6  # calibration gives up above this: the target is unreachable
CALIBRATION_TOLERANCE = 1e-4  # relative width of the final bisection bracket
PLD_DISCRETIZATION = 1e-4  # dp_accounting's default; coarser is faster and still a valid (looser) bound


class Charge(NamedTuple):
    """``count`` releases of one mechanism; a single tree for ``kind="tree_aggregation"``."""

    kind: str
    noise_multiplier: float
    sampling_rate: float
    count: int


def compute_epsilon(
    *,
    noise_multiplier: float,
    sampling_rate: float,
    rounds: int,
    delta: float,
    mechanism: str = "gaussian",
    rounds_per_tree: int | None = None,
    accountant: str = DEFAULT_ACCOUNTANT,
) -> float:
    """ε at ``delta`` after ``rounds`` releases (trees restarted every ``rounds_per_tree``);
    σ = 0 gives ∞, sampling rate 0 gives 0."""
    charges = planned_charges(mechanism=mechanism, noise_multiplier=noise_multiplier, sampling_rate=sampling_rate,
                              rounds=rounds, rounds_per_tree=rounds_per_tree)
    return epsilon_of_charges(charges, delta=delta, accountant=accountant)


def epsilon_for(
    spec: MechanismSpec, *, noise_multiplier: float, delta: float, accountant: str = DEFAULT_ACCOUNTANT
) -> float:
    """ε at ``delta`` of the whole run ``spec`` describes, at noise multiplier σ."""
    return compute_epsilon(
        noise_multiplier=noise_multiplier,
        sampling_rate=spec.sampling_rate,
        rounds=spec.rounds,
        delta=delta,
        mechanism=spec.kind,
        rounds_per_tree=spec.rounds_per_tree,
        accountant=accountant,
    )


def planned_charges(*, mechanism: str, noise_multiplier: float, sampling_rate: float, rounds: int,
                    rounds_per_tree: int | None = None) -> list[Charge]:
    """The charges of ``rounds`` releases: one per tree for a tree release, one otherwise."""
    check_int("rounds", rounds, minimum=1)
    if rounds_per_tree is None or mechanism != "tree_aggregation":
        if rounds_per_tree is not None:
            raise ConfigError("rounds_per_tree", rounds_per_tree, "None unless the mechanism is tree_aggregation")
        return [Charge(mechanism, noise_multiplier, sampling_rate, rounds)]
    check_int("rounds_per_tree", rounds_per_tree, minimum=1)
    return [Charge(mechanism, noise_multiplier, sampling_rate, size) for size in tree_sizes(rounds, rounds_per_tree)]


def _rdp_start(problem: dict) -> float:
    """The RDP accountant's σ for ``problem``: where the PLD and opacus searches start. dp-accounting's
    warnings that a Rényi order's series did not converge (the order is left out, which only
    loosens RDP's ε) say nothing about the accountant that calibrates, so they are not logged."""
    from absl import logging as absl_logging

    def keep(record) -> bool:
        return "failed to converge" not in record.getMessage()

    logger = absl_logging.get_absl_logger()
    logger.addFilter(keep)
    try:
        return compute_noise_multiplier(**problem, accountant="rdp")
    finally:
        logger.removeFilter(keep)


def compute_noise_multiplier(
    *,
    epsilon: float,
    delta: float,
    sampling_rate: float,
    rounds: int,
    mechanism: str = "gaussian",
    rounds_per_tree: int | None = None,
    accountant: str = DEFAULT_ACCOUNTANT,
) -> float:
    """The smallest σ (to relative precision 1e-4) whose ε does not exceed ``epsilon``.

    Bisection on a bracket [lo, hi] with ε(lo) > target ≥ ε(hi); returns ``hi``, whose ε was
    computed, so the answer never overshoots. Target ∞ (or sampling rate 0) needs no noise: 0.
    The PLD and opacus searches start from the (fast) RDP answer, as small σ is slow under PLD.
    """
    if not _is_number(epsilon) or math.isnan(epsilon) or epsilon <= 0:
        raise ConfigError("epsilon", epsilon, "a number > 0 (no finite noise multiplier gives ε = 0)")
    problem = dict(sampling_rate=sampling_rate, rounds=rounds, mechanism=mechanism, rounds_per_tree=rounds_per_tree)
    for charge in planned_charges(noise_multiplier=1.0, **problem):
        _validate_charge(charge)
    _validate_accounting(delta=delta, accountant=accountant)
    if math.isinf(epsilon) or sampling_rate == 0:
        return 0.0
    problem.update(epsilon=epsilon, delta=delta)

    def meets(sigma: float) -> bool:
        charges = planned_charges(mechanism=mechanism, noise_multiplier=sigma, sampling_rate=sampling_rate,
                                  rounds=rounds, rounds_per_tree=rounds_per_tree)
        return epsilon_of_charges(charges, delta=delta, accountant=accountant) <= epsilon

    hi = 1.0 if accountant == "rdp" else _rdp_start(problem)
    if meets(hi):
        lo = hi * 0.8
        while meets(lo):
            lo, hi = lo * 0.8, lo
            if lo < 1e-6:
                return hi
    else:
        lo = hi
        while not meets(hi := hi * 2):
            lo = hi
            if hi > MAX_NOISE_MULTIPLIER:
                raise ConfigError(
                    "epsilon", epsilon,
                    f"a target reachable with noise multiplier <= {MAX_NOISE_MULTIPLIER:g} at δ={delta:g}, "
                    f"{rounds} rounds, sampling rate {sampling_rate:g}",
                )
    while hi - lo > CALIBRATION_TOLERANCE * hi:
        mid = (lo + hi) / 2
        if meets(mid):
            hi = mid
        else:
            lo = mid
    return hi


def calibrate_noise_multiplier(
    spec: MechanismSpec, *, epsilon: float, delta: float, accountant: str = DEFAULT_ACCOUNTANT
) -> float:
    """The smallest σ for ``spec`` whose ε at ``delta`` does not exceed ``epsilon``."""
    return compute_noise_multiplier(
        epsilon=epsilon,
        delta=delta,
        sampling_rate=spec.sampling_rate,
        rounds=spec.rounds,
        mechanism=spec.kind,
        rounds_per_tree=spec.rounds_per_tree,
        accountant=accountant,
    )


def epsilon_of_charges(charges: Iterable[Charge], *, delta: float, accountant: str = DEFAULT_ACCOUNTANT) -> float:
    """ε at ``delta`` of the composition of ``charges`` (what a ledger holds)."""
    _validate_accounting(delta=delta, accountant=accountant)
    charges = list(charges)
    for charge in charges:
        _validate_charge(charge)
    charges = [c for c in charges if c.sampling_rate > 0]  # nobody takes part: nothing leaks
    if not charges:
        return 0.0
    if any(c.noise_multiplier == 0 for c in charges):
        return math.inf
    return float(_BACKENDS[accountant](charges, delta))


def tree_depth(rounds: int) -> int:
    """Nodes of one tree over ``rounds`` steps that a single step's value enters."""
    return math.ceil(math.log2(rounds + 1))


def _validate_accounting(*, delta: float, accountant: str) -> None:
    check_fraction("delta", delta, allow_one=False)
    check_choice("accountant", accountant, ACCOUNTANTS)


def _validate_charge(charge: Charge) -> None:
    check_choice("mechanism", charge.kind, MECHANISM_KINDS)
    check_positive("noise_multiplier", charge.noise_multiplier, allow_zero=True)
    check_fraction("sampling_rate", charge.sampling_rate, allow_zero=True)
    check_int("rounds", charge.count, minimum=1)
    if charge.kind == "tree_aggregation" and charge.sampling_rate not in (0, 1):
        raise ConfigError(
            "sampling_rate", charge.sampling_rate, "1 for tree aggregation (it has no sampling amplification)"
        )


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _gaussian_equivalent(charge: Charge) -> tuple[float, int]:
    """(σ, count) of the Gaussian composition with the same privacy as ``charge``."""
    if charge.kind == "tree_aggregation":
        return charge.noise_multiplier / math.sqrt(tree_depth(charge.count)), 1
    return charge.noise_multiplier, charge.count


def _dp_event(charge: Charge):
    import dp_accounting as dpa

    if charge.kind == "tree_aggregation":
        return dpa.SingleEpochTreeAggregationDpEvent(charge.noise_multiplier, charge.count)
    event = dpa.GaussianDpEvent(charge.noise_multiplier)
    if charge.sampling_rate < 1:
        event = dpa.PoissonSampledDpEvent(charge.sampling_rate, event)
    return dpa.SelfComposedDpEvent(event, charge.count)


def _rdp(charges: list[Charge], delta: float) -> float:
    from dp_accounting import NeighboringRelation
    from dp_accounting.rdp import RdpAccountant

    trees = {c.kind == "tree_aggregation" for c in charges}
    if len(trees) > 1:
        raise DpbenchError("the rdp accountant cannot compose tree aggregation with other mechanisms")
    relation = NeighboringRelation.REPLACE_SPECIAL if trees == {True} else NeighboringRelation.ADD_OR_REMOVE_ONE
    accountant = RdpAccountant(neighboring_relation=relation)
    for charge in charges:
        accountant.compose(_dp_event(charge))
    return accountant.get_epsilon(delta)


def _pld(charges: list[Charge], delta: float) -> float:
    import dp_accounting as dpa
    from dp_accounting.pld import PLDAccountant

    accountant = PLDAccountant(value_discretization_interval=PLD_DISCRETIZATION)
    for charge in charges:
        if charge.kind == "tree_aggregation":
            sigma, count = _gaussian_equivalent(charge)
            accountant.compose(dpa.SelfComposedDpEvent(dpa.GaussianDpEvent(sigma), count))
        else:
            accountant.compose(_dp_event(charge))
    return accountant.get_epsilon(delta)


def _opacus(charges: list[Charge], delta: float) -> float:
    try:
        from opacus.accountants import RDPAccountant
        from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent
    except ImportError as err:
        raise DpbenchError("the opacus accountant needs opacus: pip install 'dpbench[fl]'") from err
    orders = RDPAccountant.DEFAULT_ALPHAS
    rdp = 0.0
    for charge in charges:
        sigma, count = _gaussian_equivalent(charge)
        rdp = rdp + compute_rdp(q=charge.sampling_rate, noise_multiplier=sigma, steps=count, orders=orders)
    epsilon, _ = get_privacy_spent(orders=orders, rdp=rdp, delta=delta)
    return epsilon


_BACKENDS = {"pld": _pld, "rdp": _rdp, "opacus": _opacus}
