"""The contracts every dataset, method and evaluator plugin implements."""

from dpbench.api.artifacts import Artifact, SyntheticTexts, TrainedModel
from dpbench.api.config import NoOptions, build_config, config_dict
from dpbench.api.context import RunContext
from dpbench.api.dataset import Dataset, FederatedTextData, MethodData
from dpbench.api.evaluator import Evaluator, MetricSpec
from dpbench.api.method import Method
from dpbench.api.privacy import MechanismSpec, PrivacyBudget, PrivacySession

__all__ = [
    "Artifact", "SyntheticTexts", "TrainedModel", "NoOptions", "build_config", "config_dict",
    "RunContext", "Dataset", "FederatedTextData", "MethodData", "Evaluator", "MetricSpec",
    "Method", "MechanismSpec", "PrivacyBudget", "PrivacySession",
]
