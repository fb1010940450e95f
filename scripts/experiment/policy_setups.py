"""Policy setups: which modules exist and which agent acts with which.

- ``shared``: one module (``DEFAULT_MODULE_ID``) for every agent: parameter sharing.
- ``per-agent``: one independent module per agent, module id ``str(agent_id)``.
- ``shared-encoder``: one encoder (``SHARED_ENCODER_ID``) and one policy/value
  head per agent (module id ``str(agent_id)``), built by
  ``marl.models.shared_encoder.shared_encoder_module_spec``; PPO steps the
  encoder once on the summed losses of all heads.

A ``--policy-mapping-fn`` replaces the setup's mapping; the module ids are then
what it returns for the env's agents (called as ``fn(agent_id, None)``), and
the setup decides how those modules are built (for ``shared``, one spec that
every returned id uses).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

from marl.algorithms.module_setup import agent_id_as_module_id, default_policy_mapping_fn

SETUPS = ("shared", "per-agent", "shared-encoder")


#: ``shared`` mapping: every agent acts with ``DEFAULT_MODULE_ID``. The library's own
#: function, so checkpoints of shared runs load anywhere ``marl`` is installed.
everyone_to_default_module = default_policy_mapping_fn


@dataclass
class PolicySetup:
    """The modules of a run and how agents map to them."""

    name: str
    module_ids: List[str]
    policy_mapping_fn: Callable[..., str]
    #: ``agent id -> module id`` as resolved for the env's agents (for printing).
    agent_to_module: Dict[Any, str]


def env_agent_ids(env: Any, env_config: Dict[str, Any]) -> List[Any]:
    """Build the env once and return its ``possible_agents`` (the setups need them)."""
    from envs.registry import make_env

    instance = make_env(env, env_config)
    try:
        return list(instance.possible_agents)
    finally:
        instance.close()


def make_policy_setup(
    name: str,
    agent_ids: Sequence[Any],
    mapping_fn: Optional[Callable[..., str]] = None,
) -> PolicySetup:
    """Module ids and mapping of setup ``name`` for ``agent_ids``.

    Raises ValueError naming the setup (and the agent) when the combination
    cannot work: an unknown setup, or a custom mapping that returns no str.
    """
    if name not in SETUPS:
        raise ValueError(f"unknown policy setup {name!r}; choose from {', '.join(SETUPS)}")
    if mapping_fn is None:
        mapping_fn = everyone_to_default_module if name == "shared" else agent_id_as_module_id
    table: Dict[Any, str] = {}
    for agent in agent_ids:
        module_id = mapping_fn(agent, None)
        if not isinstance(module_id, str):
            raise ValueError(
                f"policy_mapping_fn returned {module_id!r} ({type(module_id).__name__}) for agent "
                f"{agent!r}; module ids must be str"
            )
        table[agent] = module_id
    module_ids = sorted(set(table.values()))
    return PolicySetup(name=name, module_ids=module_ids, policy_mapping_fn=mapping_fn, agent_to_module=table)


def apply_policy_setup(config: Any, setup: PolicySetup, model_config: Dict[str, Any]) -> Any:
    """Set ``config``'s modules (``multi_agent`` and ``rl_module``) for ``setup``; returns it."""
    config.multi_agent(policies=set(setup.module_ids), policy_mapping_fn=setup.policy_mapping_fn)
    if setup.name == "shared-encoder":
        from marl import MASACConfig, SACConfig
        from marl.models.shared_encoder import shared_encoder_module_spec
        from marl.models.shared_encoder_sac import SharedEncoderSACHead

        sac = isinstance(config, SACConfig) and not isinstance(config, MASACConfig)
        spec = shared_encoder_module_spec(setup.module_ids, dict(model_config),
                                          head_class=SharedEncoderSACHead if sac else None)
        config.rl_module(rl_module_spec=spec, model_config=dict(model_config))
    else:
        config.rl_module(model_config=dict(model_config))
    return config
