"""Policy setups: which modules exist and which agent acts with which.

- ``shared``: one module (``DEFAULT_MODULE_ID``) for every agent: parameter sharing.
- ``per-agent``: one independent module per agent, module id ``str(agent_id)``.
- ``shared-encoder``: one encoder (``SHARED_ENCODER_ID``) and one policy/value
  head per agent (module id ``str(agent_id)``), built by
  ``marl.models.shared_encoder.shared_encoder_module_spec``; PPO steps the
  encoder once on the summed losses of all heads.

The policy module ids are the setup's (``DEFAULT_MODULE_ID`` for ``shared``,
the agent ids otherwise) or those given to ``--policies``. A
``--policy-mapping-fn`` replaces the setup's mapping and must return one of
them for every agent (it is called as ``fn(agent_id, None)`` here, before
anything is built): an id it makes up, such as a typo, is refused, naming the
valid ids, rather than silently becoming a new module. The setup decides how
the modules are built (for ``shared``, one spec that every id uses).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

from marl.algorithms.module_setup import agent_id_as_module_id, default_policy_mapping_fn
from marl.core.constants import DEFAULT_MODULE_ID, SHARED_ENCODER_ID

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
    policies: Optional[Sequence[str]] = None,
) -> PolicySetup:
    """Module ids and mapping of setup ``name`` for ``agent_ids``.

    ``policies`` are the module ids the mapping may return (default: the
    setup's). Raises ValueError naming the setup (and the agent) when the
    combination cannot work: an unknown setup, a mapping that returns no str
    or an id outside ``policies``.
    """
    if name not in SETUPS:
        raise ValueError(f"unknown policy setup {name!r}; choose from {', '.join(SETUPS)}")
    mapper = "policy_mapping_fn" if mapping_fn is not None else f"the mapping of --policy-setup {name}"
    if mapping_fn is None:
        mapping_fn = everyone_to_default_module if name == "shared" else agent_id_as_module_id
    valid = list(policies) if policies else [DEFAULT_MODULE_ID] if name == "shared" else [str(a) for a in agent_ids]
    if SHARED_ENCODER_ID in valid and name == "shared-encoder":
        raise ValueError(f"{SHARED_ENCODER_ID!r} is the id of the shared encoder that --policy-setup "
                         "shared-encoder adds, not a policy; give the policies other ids")
    declared_by = "--policies" if policies else f"--policy-setup {name}"
    table: Dict[Any, str] = {}
    for agent in agent_ids:
        table[agent] = _checked_module_id(mapping_fn(agent, None), agent, valid, mapper, declared_by)
    module_ids = sorted(set(table.values()))
    return PolicySetup(name=name, module_ids=module_ids, policy_mapping_fn=mapping_fn, agent_to_module=table)


def _checked_module_id(module_id: Any, agent: Any, valid: List[str], mapper: str, declared_by: str) -> str:
    """``module_id`` if it names a policy; else the error a user can act on (the valid ids)."""
    if not isinstance(module_id, str):
        raise ValueError(
            f"{mapper} returned {module_id!r} ({type(module_id).__name__}) for agent "
            f"{agent!r}; module ids must be str"
        )
    if module_id in valid:
        return module_id
    if module_id == SHARED_ENCODER_ID:
        why = "the id of a shared encoder, which is not a policy (it has no action head)"
    else:
        close = difflib.get_close_matches(module_id, valid, n=1)
        why = f"which {declared_by} does not define" + (f" (did you mean {close[0]!r}?)" if close else "")
    hint = "map the agents to them with --policy-mapping-fn" if declared_by == "--policies" else \
        "declare other ids with --policies ID,ID"
    raise ValueError(
        f"{mapper} mapped agent {agent!r} to module id {module_id!r}, {why}; "
        f"valid module ids: {', '.join(valid)} ({hint})"
    )


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
