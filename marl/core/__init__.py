"""Module core: columns, RLModule, specs, multi-module containers, API mix-ins."""
from marl.core.apis import InferenceOnlyAPI, QNetAPI, TargetNetworkAPI, ValueFunctionAPI
from marl.core.columns import Columns
from marl.core.constants import DEFAULT_AGENT_ID, DEFAULT_MODULE_ID, SHARED_ENCODER_ID
from marl.core.multi_rl_module import MultiRLModule, MultiRLModuleSpec
from marl.core.rl_module import RLModule, RLModuleSpec
from marl.core.torch_rl_module import TorchRLModule

__all__ = [
    "Columns",
    "DEFAULT_AGENT_ID",
    "DEFAULT_MODULE_ID",
    "InferenceOnlyAPI",
    "MultiRLModule",
    "MultiRLModuleSpec",
    "QNetAPI",
    "RLModule",
    "RLModuleSpec",
    "SHARED_ENCODER_ID",
    "TargetNetworkAPI",
    "TorchRLModule",
    "ValueFunctionAPI",
]
