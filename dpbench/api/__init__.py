"""The contracts every dataset, method and evaluator plugin implements, with what a plugin
needs around them: ``hookimpl``, the errors it raises and the atomic file writers. Methods
that generate or train build on ``dpbench.toolkit``."""

from dpbench.api.artifacts import Artifact, SyntheticTexts, TrainedModel
from dpbench.api.clients import CLIENT_RUNTIMES, ClientRuntime
from dpbench.api.config import NoOptions, build_config, config_dict
from dpbench.api.context import RunContext
from dpbench.api.dataset import Dataset, FederatedTextData, MethodData
from dpbench.api.evaluator import Evaluator, MetricSpec
from dpbench.api.method import Method
from dpbench.api.privacy import MechanismSpec, PrivacyBudget, PrivacySession
from dpbench.errors import ConfigError, DpbenchError, PrivacyMisuseError
from dpbench.files import atomic_write, read_sealed, write_json, write_sealed
from dpbench.hookspecs import hookimpl

__all__ = [
    "Artifact", "SyntheticTexts", "TrainedModel", "NoOptions", "build_config", "config_dict",
    "RunContext", "ClientRuntime", "CLIENT_RUNTIMES", "Dataset", "FederatedTextData", "MethodData", "Evaluator",
    "MetricSpec",
    "Method", "MechanismSpec", "PrivacyBudget", "PrivacySession",
    "hookimpl", "DpbenchError", "ConfigError", "PrivacyMisuseError",
    "atomic_write", "write_json", "write_sealed", "read_sealed",
]
