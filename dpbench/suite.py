"""Suites: YAML files composed with hydra-core, validated, and expanded into run specs.

A suite names datasets, methods and evaluators (each ``name: {options}``), a privacy grid and
seeds. Command-line overrides use Hydra's grammar (``privacy.epsilon=[1,7] seeds=3
methods.popri.rounds=5``); keys the suite does not set yet are added without the ``+`` Hydra
would otherwise demand, so plugin options stay overridable. Interpolations may only refer to
other keys (``${a.b}``): resolvers such as ``${oc.env:...}`` are refused, in the suite, the files
its ``defaults:`` pull in and the overrides, because the resolved suite is recorded with every
run (``spec.json``) and uploaded when publishing.
"""

from __future__ import annotations

import hashlib
import json
import math
import shlex
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dpbench.api.config import build_config, config_dict
from dpbench.api.method import REFERENCE_EPSILON
from dpbench.api.privacy import PrivacyBudget
from dpbench.errors import ConfigError, DpbenchError, did_you_mean

SUITE_KEYS = {
    "name": "the suite's name (default: the file name)",
    "description": "one line shown in listings and leaderboards",
    "seeds": "how many seeds (n -> 0..n-1) or a list of seeds",
    "privacy": "epsilon (number or list), delta, accountant, noise (seeded or secure)",
    "datasets": "name -> options",
    "methods": "name -> options",
    "evaluators": "name -> options",
    "leaderboard": "metric (default: the first evaluator's primary metric), claims (orderings the board tests)",
    "runs_dir": "where run folders go (default: runs)",
    "device": "cpu, cuda or auto",
    "runtime": "where methods' client steps run: inprocess (default) or flower (Flower's simulation engine)",
    "publish": "wandb (bool), project, entity",
}
PRIVACY_KEYS = ("epsilon", "delta", "accountant", "noise")
PUBLISH_KEYS = ("wandb", "project", "entity")
PUBLISH_OVERRIDE = "publish.wandb=true"
"""what ``dpbench run --wandb`` adds to the overrides (publishing changes no result)"""
DEVICES = ("cpu", "cuda", "auto")


@dataclass(frozen=True)
class Claim:
    """An ordering a board tests, e.g. a paper's: at ``epsilon``, each method of ``order``
    (suite labels, best first) ahead of every later one; a tuple inside ``order`` is a tie,
    with no claim between its members."""

    epsilon: float
    order: tuple[tuple[str, ...], ...]
    source: str

    def pairs(self) -> list[tuple[str, str]]:
        """``(ahead, behind)`` for every pair the order claims."""
        return [(ahead, behind) for i, group in enumerate(self.order) for later in self.order[i + 1:]
                for ahead in group for behind in later]


@dataclass(frozen=True)
class PluginChoice:
    """One entry of a suite's datasets/methods/evaluators: its label, plugin and options."""

    label: str
    plugin: str
    options: Mapping[str, Any]
    version: str
    config: Any = field(default=None, compare=False, repr=False)
    """the validated options object, built once when the suite is loaded (``None`` when read
    back from JSON)"""

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "plugin": self.plugin, "options": dict(self.options), "version": self.version}


@dataclass(frozen=True)
class RunSpec:
    """One cell of a suite's grid: dataset x method x ε x seed, plus the shared evaluators."""

    suite: str
    dataset: PluginChoice
    method: PluginChoice
    evaluators: tuple[PluginChoice, ...]
    epsilon: float
    delta: float
    accountant: str
    seed: int
    device: str = "cpu"
    publish: Mapping[str, Any] = field(default_factory=dict, compare=False)
    noise: str = "seeded"
    runtime: str = "inprocess"

    @property
    def budget(self) -> PrivacyBudget:
        return PrivacyBudget(epsilon=self.epsilon, delta=self.delta)

    def identity(self) -> dict[str, Any]:
        """Everything that can change this run's numbers (and nothing else); the noise mode
        only when it is not the default ``seeded``, so the reference rows' run ids (which have
        no noise) stay as they were; the client runtime likewise."""
        identity = {
            "dataset": self.dataset.to_dict(),
            "method": self.method.to_dict(),
            "evaluators": [e.to_dict() for e in self.evaluators],
            "epsilon": _json_number(self.epsilon),
            "delta": self.delta,
            "accountant": self.accountant,
            "seed": self.seed,
        }
        if self.noise != "seeded":
            identity["noise"] = self.noise
        if self.runtime != "inprocess":  # same releases only at the same per-client arithmetic (docs/federation.md)
            identity["runtime"] = self.runtime
        return identity

    @property
    def config_hash(self) -> str:
        payload = json.dumps(self.identity(), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(payload.encode()).hexdigest()[:10]

    @property
    def run_id(self) -> str:
        eps = self.budget.label
        return f"{self.dataset.label}__{self.method.label}__eps{eps}__seed{self.seed}__{self.config_hash}"

    def to_dict(self) -> dict[str, Any]:
        return {"suite": self.suite, "run_id": self.run_id, "config_hash": self.config_hash,
                "device": self.device, "publish": dict(self.publish), "noise": self.noise,
                "runtime": self.runtime, **self.identity()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunSpec:
        def choice(d):
            return PluginChoice(d["label"], d["plugin"], d["options"], d["version"])

        return cls(
            suite=data["suite"], dataset=choice(data["dataset"]), method=choice(data["method"]),
            evaluators=tuple(choice(e) for e in data["evaluators"]), epsilon=float(data["epsilon"]),
            delta=data["delta"], accountant=data["accountant"], seed=data["seed"],
            device=data.get("device", "cpu"), publish=data.get("publish", {}), noise=data.get("noise", "seeded"),
            runtime=data.get("runtime", "inprocess"),
        )


@dataclass(frozen=True)
class Suite:
    """A validated suite and its expanded grid."""

    name: str
    path: Path
    config: Mapping[str, Any]
    overrides: tuple[str, ...]
    runs: tuple[RunSpec, ...]
    metric: str
    runs_dir: Path
    claims: tuple[Claim, ...] = ()
    """orderings its board tests (``leaderboard.claims``); they change no run"""

    @property
    def folder(self) -> Path:
        return self.runs_dir / self.name

    @property
    def cache_dir(self) -> Path:
        """Where expensive shared work (prepared datasets, embeddings, the evaluator's pretrained
        model) is kept: ``<runs_dir>/.cache``, shared by every suite
        run there. Entries are keyed by content, so suites reuse each other's work."""
        return self.runs_dir / ".cache"

    @property
    def command(self) -> str:
        """The ``dpbench run`` command line that produces (or resumes) this suite's runs."""
        parts = ["dpbench", "run", self.path.as_posix()]
        if self.runs_dir != Path(self.config.get("runs_dir") or "runs"):
            parts += ["--runs-dir", self.runs_dir.as_posix()]
        return shlex.join(parts + [o for o in self.overrides if o != PUBLISH_OVERRIDE])


def _json_number(x: float):
    return "inf" if math.isinf(x) else x


# ---------------------------------------------------------------- composition

def compose(path: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Compose the suite at ``path`` with Hydra and return it as a plain dict."""
    path = Path(path)
    if path.suffix not in (".yaml", ".yml"):
        raise ConfigError("suite", str(path), "a .yaml file")
    if not path.is_file():
        raise ConfigError("suite", str(path), "an existing suite file")
    import yaml
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(path.parent.resolve()), version_base="1.3", job_name="dpbench"):
            _check_overrides(overrides)
            base = hydra_compose(config_name=path.stem)
            _refuse_resolvers(OmegaConf.to_container(base, resolve=False))
            fixed = _plus_missing(base, overrides)
            for file in _files_read(path, fixed):
                _refuse_resolvers((yaml.safe_load(file.read_text(encoding="utf-8")) or {}).get("defaults"),
                                  f"{file}: defaults")
            cfg = hydra_compose(config_name=path.stem, overrides=fixed)
    except yaml.YAMLError as err:
        raise _yaml_error(err, path) from None
    except UnicodeDecodeError as err:
        raise DpbenchError(f"{path} (or a file its defaults: pull in) is not UTF-8: {err}") from None
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError("overrides" if overrides else "suite", " ".join(overrides) or str(path),
                          f"valid Hydra syntax and keys ({_first_line(err)})") from None
    finally:
        GlobalHydra.instance().clear()
    interpolations = _refuse_resolvers(OmegaConf.to_container(cfg, resolve=False))
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "suite"
        raise ConfigError(key, interpolations.get(key),
                          f"an interpolation that resolves ({_first_line(err)})") from None


def _first_line(err: BaseException | None) -> str:
    """The first line of ``err``'s message, or of its cause's (Hydra wraps some errors in an empty one)."""
    while err is not None:
        if str(err).strip():
            return str(err).strip().splitlines()[0]
        err = err.__cause__
    return "no details given"


def _yaml_error(err, path: Path) -> DpbenchError:
    """One line naming the file, line and column where the suite (or a file its ``defaults:``
    pull in) stops being valid YAML."""
    mark = getattr(err, "problem_mark", None)
    if mark is None:
        return DpbenchError(f"{getattr(err, 'name', None) or path}: not valid YAML ({_first_line(err)})")
    message = f"{mark.name}, line {mark.line + 1}, column {mark.column + 1}: not valid YAML: {err.problem}"
    if err.context and err.context_mark is not None:
        message += f" ({err.context} at line {err.context_mark.line + 1}, column {err.context_mark.column + 1})"
    return DpbenchError(message)


RESOLVERS_REFUSED = (
    "a plain value or a ${a.b} reference to another key; resolvers such as ${oc.env:...} and "
    "${oc.decode:...} are refused because their values would be written to spec.json and to "
    "uploaded configs: secrets belong in the environment (wandb reads WANDB_API_KEY itself)"
)


def _refuse_resolvers(value, where: str = "") -> dict[str, str]:
    """Fail on any interpolation in ``value`` (an unresolved config as plain containers, an
    override's value, a defaults list) that calls a resolver: resolvers read the environment or
    run code, and the resolved suite is recorded with every run. Returns ``{key path: raw
    string}`` of the interpolations found, all plain references."""
    from omegaconf.errors import GrammarParseError
    from omegaconf.grammar_parser import OmegaConfGrammarParser, parse

    def calls_resolver(tree) -> bool:
        if isinstance(tree, OmegaConfGrammarParser.InterpolationResolverContext):
            return True
        return any(calls_resolver(tree.getChild(i)) for i in range(tree.getChildCount()))

    found = dict(_interpolations(value, where))
    for key, text in found.items():
        try:
            refused = calls_resolver(parse(text))
        except GrammarParseError as err:
            raise ConfigError(key, text, f"a valid interpolation ({_first_line(err)})") from None
        if refused:
            raise ConfigError(key, text, RESOLVERS_REFUSED)
    return found


def _check_overrides(overrides: Sequence[str]) -> None:
    """Refuse Hydra sweeps (a suite is one grid; its lists are the sweep) and, through
    ``_refuse_resolvers``, resolvers in each override's value, group choices included."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for override in OverridesParser.create().parse_overrides(list(overrides)):
        if override.is_sweep_override():
            raise ConfigError(override.key_or_group, override.input_line,
                              f"one value or a list, e.g. {override.key_or_group}=[1,7]: a suite's lists are its "
                              "grid, so Hydra's sweep syntax (a=1,7, choice(), range()) is not used")
        _refuse_resolvers(override.value(), override.key_or_group)


def _files_read(path: Path, overrides: Sequence[str]) -> list[Path]:
    """The suite file and the files of the suite's folder its ``defaults:`` lists pull in."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    loader = GlobalHydra.instance().config_loader()
    defaults = loader.compute_defaults_list(config_name=path.stem, overrides=list(overrides), run_mode=RunMode.RUN)
    pulled = {path.parent / f"{d.config_path}.yaml" for d in defaults.defaults if d.config_path and not d.primary}
    return [path, *sorted(p for p in pulled if p.is_file())]


def _interpolations(value, where: str = "") -> Iterator[tuple[str, str]]:
    """``(key path, raw string)`` for every string of an unresolved config holding an interpolation."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _interpolations(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _interpolations(item, f"{where}[{i}]")
    elif isinstance(value, str) and "${" in value:
        yield where, value


def _plus_missing(base, overrides: Sequence[str]) -> list[str]:
    """Prefix ``+`` to overrides of keys the suite does not have yet."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    parser = OverridesParser.create()
    fixed = []
    for text in overrides:
        (override,) = parser.parse_overrides([text])
        key = override.key_or_group
        plain = not text.startswith(("+", "~")) and override.package is None
        if plain and OmegaConf.select(base, key, default=_MISSING) is _MISSING:
            text = "+" + text
        fixed.append(text)
    return fixed


_MISSING = object()


# ---------------------------------------------------------------- validation

def load_suite(path: str | Path, overrides: Sequence[str] = (), *, runs_dir: str | Path | None = None) -> Suite:
    """Compose, validate and expand a suite; every error names the field, value and what is allowed."""
    path = Path(path)
    config = compose(path, overrides)
    return build_suite(config, path=path, overrides=overrides, runs_dir=runs_dir)


def build_suite(config: Mapping[str, Any], *, path: Path, overrides: Sequence[str] = (),
                runs_dir: str | Path | None = None) -> Suite:
    from dpbench.plugins import get_registry

    for key in config:
        if key not in SUITE_KEYS:
            raise ConfigError(key, config[key], "one of the suite keys: " + ", ".join(SUITE_KEYS) + "."
                              + did_you_mean(key, SUITE_KEYS))
    name = config.get("name") or path.stem
    if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
        raise ConfigError("name", name, "letters, digits, '-' and '_'")
    seeds = _seeds(config.get("seeds", 1))
    privacy = config.get("privacy") or {}
    _check_keys("privacy", privacy, PRIVACY_KEYS)
    epsilons = _epsilons(privacy.get("epsilon"))
    delta = privacy.get("delta")
    if delta is None:
        raise ConfigError("privacy.delta", None, "a number in (0, 1), typically below 1/num_clients")
    PrivacyBudget(epsilon=1.0, delta=delta)  # validates δ
    accountant = privacy.get("accountant", "pld")
    from dpbench.privacy import ACCOUNTANTS

    if accountant not in ACCOUNTANTS:
        raise ConfigError("privacy.accountant", accountant, "one of " + ", ".join(ACCOUNTANTS) + "."
                          + did_you_mean(str(accountant), ACCOUNTANTS))
    from dpbench.api.privacy import NOISE_MODES

    noise = privacy.get("noise", "seeded")
    if noise not in NOISE_MODES:
        raise ConfigError("privacy.noise", noise, "seeded (reproducible; simulation only) or secure (OS CSPRNG)."
                          + did_you_mean(str(noise), NOISE_MODES))
    device = config.get("device", "cpu")
    if device not in DEVICES:
        raise ConfigError("device", device, "one of " + ", ".join(DEVICES))
    from dpbench.api.clients import CLIENT_RUNTIMES

    runtime = config.get("runtime", "inprocess")
    if runtime not in CLIENT_RUNTIMES:
        raise ConfigError("runtime", runtime, "one of " + ", ".join(CLIENT_RUNTIMES) + "."
                          + did_you_mean(str(runtime), CLIENT_RUNTIMES))
    publish = config.get("publish") or {}
    _check_keys("publish", publish, PUBLISH_KEYS)

    datasets = _choices("datasets", config, get_registry("dataset"))
    methods = _choices("methods", config, get_registry("method"))
    evaluators = _choices("evaluators", config, get_registry("evaluator"))
    leaderboard = config.get("leaderboard") or {}
    _check_keys("leaderboard", leaderboard, ("metric", "claims"))
    metric = _metric(leaderboard, evaluators)

    private_methods = [m for m in methods if get_registry("method").get(m.plugin).reference is None]
    if private_methods and not epsilons:
        raise ConfigError("privacy.epsilon", None, "a number > 0 or a list of them "
                          f"(methods {', '.join(m.label for m in private_methods)} need a budget)")

    runs = []
    for dataset in datasets:
        for method in methods:
            reference = get_registry("method").get(method.plugin).reference
            method_eps = [REFERENCE_EPSILON[reference]] if reference in REFERENCE_EPSILON else epsilons
            for eps in method_eps:
                for seed in seeds:
                    runs.append(RunSpec(
                        suite=name, dataset=dataset, method=method, evaluators=tuple(evaluators),
                        epsilon=float(eps), delta=float(delta), accountant=accountant, seed=seed,
                        device=device, publish=publish, noise=noise, runtime=runtime,
                    ))
    runs_dir = Path(runs_dir or config.get("runs_dir") or "runs")
    claims = _claims(leaderboard.get("claims") or [], [m.label for m in private_methods])
    return Suite(name=name, path=path, config=config, overrides=tuple(overrides), runs=tuple(runs),
                 metric=metric, runs_dir=runs_dir, claims=claims)


def check_machine(suite: Suite) -> None:
    """Refuse, before any work, what this machine cannot run: ``device: cuda`` without a CUDA
    GPU, a ``backend: vllm`` option without a CUDA GPU, with ``device: cpu`` or without an
    importable vLLM, and ``runtime: flower`` without Flower's simulation engine (flwr, ray).
    torch, vllm and flwr are imported only when the suite asks for them."""
    if suite.config.get("runtime") == "flower":
        for module in ("flwr", "ray"):
            problem = _import_problem(module)
            if problem:
                raise ConfigError("runtime", "flower", f"inprocess, or Flower's simulation engine installed "
                                  f"(pip install 'dpbench[fl]'): import {module} failed: {problem}")
    device = suite.config.get("device", "cpu")
    fields = sorted({f"{kind}.{choice.label}.backend" for spec in suite.runs
                     for kind, choices in (("methods", (spec.method,)), ("evaluators", spec.evaluators))
                     for choice in choices if getattr(choice.config, "backend", None) == "vllm"})
    if device == "cuda" and not _cuda_available():
        raise ConfigError("device", device, "cpu or auto: this machine has no CUDA GPU "
                          "(torch.cuda.is_available() is False)")
    for field_name in fields:
        if device == "cpu":
            raise ConfigError(field_name, "vllm", "transformers with device: cpu (vLLM runs on CUDA GPUs only); "
                              "or device: cuda")
        if not _cuda_available():
            raise ConfigError(field_name, "vllm", "transformers: vLLM needs a CUDA GPU and this machine has none "
                              "(torch.cuda.is_available() is False)")
        problem = _import_problem("vllm")
        if problem:
            raise ConfigError(field_name, "vllm", f"transformers, or vLLM installed (pip install 'dpbench[gpu]'): "
                              f"import vllm failed: {problem}")


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _import_problem(module: str) -> str | None:
    """Why ``import module`` fails (``None``: it imports)."""
    import importlib

    try:
        importlib.import_module(module)
    except Exception as err:  # a broken install fails with more than ImportError
        return f"{type(err).__name__}: {err}"
    return None


def _check_keys(where: str, mapping, allowed: Sequence[str]) -> None:
    if not isinstance(mapping, Mapping):
        raise ConfigError(where, mapping, "a mapping with keys " + ", ".join(allowed))
    for key in mapping:
        if key not in allowed:
            raise ConfigError(f"{where}.{key}", mapping[key], "one of " + ", ".join(allowed) + "."
                              + did_you_mean(key, allowed))


def _claims(raw, private: list[str]) -> tuple[Claim, ...]:
    """``leaderboard.claims``: a list of {epsilon, order, source}; every label in ``order`` a
    private method of the suite, each once."""
    if not isinstance(raw, list):
        raise ConfigError("leaderboard.claims", raw, "a list of {epsilon, order, source}")
    claims = []
    for i, item in enumerate(raw):
        where = f"leaderboard.claims[{i}]"
        _check_keys(where, item, ("epsilon", "order", "source"))
        epsilon = item.get("epsilon")
        if isinstance(epsilon, bool) or not isinstance(epsilon, int | float) or not 0 < epsilon:
            raise ConfigError(f"{where}.epsilon", epsilon, "a number > 0 (.inf: the noise-free rows)")
        order = item.get("order")
        if not isinstance(order, list) or len(order) < 2:
            raise ConfigError(f"{where}.order", order, "a list of at least two method labels, best first "
                              "(a list inside it: a tie)")
        groups = tuple(tuple(entry) if isinstance(entry, list) else (entry,) for entry in order)
        labels = [label for group in groups for label in group]
        for label in labels:
            if label not in private:
                raise ConfigError(f"{where}.order", label, "a private method of the suite: " + ", ".join(private)
                                  + "." + did_you_mean(str(label), private))
        if len(set(labels)) != len(labels) or not all(groups):
            raise ConfigError(f"{where}.order", order, "each method once, and no empty tie")
        if not isinstance(item.get("source"), str) or not item["source"].strip():
            raise ConfigError(f"{where}.source", item.get("source"), "where the claim comes from (paper, table)")
        claims.append(Claim(epsilon=float(epsilon), order=groups, source=item["source"].strip()))
    return tuple(claims)


def _seeds(value) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return list(range(value))
    if isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                 for s in value):
        if len(set(value)) != len(value):
            raise ConfigError("seeds", value, "distinct seeds")
        return list(value)
    raise ConfigError("seeds", value, "a count >= 1 or a non-empty list of integers >= 0")


def _epsilons(value) -> list[float]:
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    for v in values:
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v) and v > 0
        if not ok:
            raise ConfigError("privacy.epsilon", value, "a number > 0 or a list of them; .inf (YAML) or inf "
                              "(override) runs each private method without noise, its noise-free row")
    if len(set(values)) != len(values):
        raise ConfigError("privacy.epsilon", value, "distinct values")
    return [float(v) for v in values]


def _choices(kind: str, config: Mapping[str, Any], registry) -> list[PluginChoice]:
    entries = config.get(kind)
    if not isinstance(entries, Mapping) or not entries:
        raise ConfigError(kind, entries, f"a non-empty mapping of {registry.kind} name -> options")
    choices = []
    for label, options in entries.items():
        where = f"{kind}.{label}"
        options = dict(options or {})
        if not isinstance(options, dict):
            raise ConfigError(where, options, "a mapping of options")
        plugin = options.pop("plugin", label)
        cls = registry.get(plugin, field=f"{where}.plugin" if plugin != label else where)
        config_obj = build_config(cls.config_class, options, where=where)
        if not label.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(where, label, "a label of letters, digits, '-' and '_'")
        choices.append(PluginChoice(label=label, plugin=plugin, options=config_dict(config_obj),
                                    version=str(cls.version), config=config_obj))
    return choices


def _metric(leaderboard: Mapping[str, Any], evaluators: list[PluginChoice]) -> str:
    from dpbench.plugins import get_registry

    available = {m.name for e in evaluators for m in get_registry("evaluator").get(e.plugin).metrics}
    metric = leaderboard.get("metric")
    if metric is None:
        first = get_registry("evaluator").get(evaluators[0].plugin)
        return first.primary_metric
    if metric not in available:
        raise ConfigError("leaderboard.metric", metric, "one of the evaluators' metrics: "
                          + ", ".join(sorted(available)) + "." + did_you_mean(metric, available))
    return metric
