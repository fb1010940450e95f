"""marl: RLlib-style RLModules, multi-agent containers and algorithms on PettingZoo.

Every public name is importable from here (``from marl import PPOConfig``);
names resolve lazily so that ``import marl`` stays cheap and import cycles
between the core, envs and learners packages cannot form.
"""
from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    # core
    "Columns": "marl.core.columns",
    "RLModule": "marl.core.rl_module",
    "RLModuleSpec": "marl.core.rl_module",
    "TorchRLModule": "marl.core.torch_rl_module",
    "MultiRLModule": "marl.core.multi_rl_module",
    "MultiRLModuleSpec": "marl.core.multi_rl_module",
    "DEFAULT_MODULE_ID": "marl.core.constants",
    "DEFAULT_AGENT_ID": "marl.core.constants",
    "SHARED_ENCODER_ID": "marl.core.constants",
    "ValueFunctionAPI": "marl.core.apis",
    "InferenceOnlyAPI": "marl.core.apis",
    "TargetNetworkAPI": "marl.core.apis",
    "QNetAPI": "marl.core.apis",
    "export_policy": "marl.core.export",
    "export_policy_from_checkpoint": "marl.core.export",
    # default models
    "DefaultModelConfig": "marl.models",
    "DefaultPPOTorchRLModule": "marl.models",
    "DefaultActorTorchRLModule": "marl.models",
    "DefaultBCTorchRLModule": "marl.models",
    "SharedEncoderMultiRLModule": "marl.models",
    # distributions
    "Distribution": "marl.distributions",
    "TorchCategorical": "marl.distributions",
    "TorchDiagGaussian": "marl.distributions",
    "TorchSquashedGaussian": "marl.distributions",
    "TorchDeterministic": "marl.distributions",
    "TorchMultiCategorical": "marl.distributions",
    "TorchMultiDistribution": "marl.distributions",
    # connectors
    "FlattenObservations": "marl.connectors",
    "MeanStdFilter": "marl.connectors",
    # algorithms
    "AlgorithmConfig": "marl.algorithms",
    "Algorithm": "marl.algorithms",
    "PPOConfig": "marl.algorithms",
    "PPO": "marl.algorithms",
    "MAPPOConfig": "marl.algorithms",
    "DQNConfig": "marl.algorithms",
    "DQN": "marl.algorithms",
    "QMIXConfig": "marl.algorithms",
    "QMIX": "marl.algorithms",
    "SACConfig": "marl.algorithms",
    "SAC": "marl.algorithms",
    "MASACConfig": "marl.algorithms",
    "MASAC": "marl.algorithms",
    "DefaultSACTorchRLModule": "marl.models",
    "VDNMixer": "marl.models",
    "QMixer": "marl.models",
    "DefaultDQNTorchRLModule": "marl.models",
    "MAPPO": "marl.algorithms",
    "CentralCriticTorchRLModule": "marl.models",
    "VPGConfig": "marl.algorithms",
    "VPG": "marl.algorithms",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'marl' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
