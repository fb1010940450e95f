"""Environments for `marl`: everything the library runs, as a PettingZoo ParallelEnv.

- `make_env` / `make_env_creator` / `register_env`: turn gymnasium ids, PettingZoo
  modules and registry names, classes and callables into envs (`envs.registry`).
- `SingleAgentParallelEnv` (gymnasium, `envs.gym_adapter`) and `TurnBasedParallelEnv`
  (PettingZoo AEC, `envs.turn_based`): adapters into the common interface;
  `to_parallel_env` picks the right one (`envs.to_parallel`).
- `MultiAgentCartPole`, `MultiAgentPendulum`: N independent CartPoles / Pendulums
  (`envs.independent_copies`), as RLlib's ``make_multi_agent`` builds them.
- `image_preset`, `pad_heterogeneous`, `pistonball_preset`: SuperSuit pipelines
  (`envs.supersuit_presets`).
- `MultiAgentEnvRunner` (`envs.sampling`): steps envs in lockstep with one
  batched module forward per step; `EnvRunnerGroup` runs several in worker
  processes. (`envs.env_runner` / `envs.worker_pool` remain as import paths.)
"""
from envs.gym_adapter import SingleAgentParallelEnv
from envs.independent_copies import MultiAgentCartPole, MultiAgentPendulum
from envs.registry import (
    EnvCreator,
    UnknownEnvError,
    make_env,
    make_env_creator,
    register_env,
)
from envs.supersuit_presets import image_preset, pad_heterogeneous, pistonball_preset
from envs.to_parallel import to_parallel_env
from envs.turn_based import TurnBasedParallelEnv

from marl.core.columns import BOOTSTRAP_OBS, BOOTSTRAP_STATE_IN
from envs.sampling import EnvRunnerGroup, MultiAgentEnvRunner, infer_module_spaces

__all__ = [
    "BOOTSTRAP_OBS",
    "BOOTSTRAP_STATE_IN",
    "EnvCreator",
    "EnvRunnerGroup",
    "MultiAgentEnvRunner",
    "infer_module_spaces",
    "MultiAgentCartPole",
    "MultiAgentPendulum",
    "SingleAgentParallelEnv",
    "TurnBasedParallelEnv",
    "UnknownEnvError",
    "image_preset",
    "make_env",
    "make_env_creator",
    "pad_heterogeneous",
    "pistonball_preset",
    "register_env",
    "to_parallel_env",
]
