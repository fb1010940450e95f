"""A leaner ``aec_to_parallel`` for AEC envs whose agents act in a fixed cycle (mpe2, butterfly, sisl).

PettingZoo builds mpe2's ``parallel_env`` as ``aec_to_parallel(OrderEnforcing(
AssertOutOfBounds(raw_env)))``. Per env step that costs, besides the physics:
the converter's ``last()`` for every agent (an observation computed and
thrown away), and every attribute read (``agents``, ``rewards``, ...) going
through two wrappers' ``__getattr__``; together about half of the step. This
converter does the same steps in the same order on the unwrapped env:

- ``reset`` and the end-of-step bookkeeping are PettingZoo's, line for line;
- ``step`` checks the same cycle order and steps each agent with its action,
  summing rewards as PettingZoo does, but skips the unused ``last()``;
- the wrappers it strips only *check* (call order, action bounds): the
  runner always calls ``reset`` first and sends actions from the action
  space (``AssertOutOfBounds`` asserts exactly that).

Equivalence is tested on seeded runs (same observations, rewards,
terminations, truncations and agents at every step) for each env family it
is used for (``FAST_PARALLEL_MODULE_PREFIXES``); other modules keep
PettingZoo's converter.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Dict, Tuple

from pettingzoo.utils.conversions import aec_to_parallel_wrapper
from pettingzoo.utils.env import ParallelEnv
from pettingzoo.utils.wrappers import AssertOutOfBoundsWrapper, OrderEnforcingWrapper

#: Env modules whose ``parallel_env`` is replaced (tested equivalent in tests/test_fast_parallel.py).
FAST_PARALLEL_MODULE_PREFIXES = ("mpe2.", "pettingzoo.butterfly.", "pettingzoo.sisl.")

_CHECK_ONLY_WRAPPERS = (OrderEnforcingWrapper, AssertOutOfBoundsWrapper)


def fast_parallel(parallel: Any) -> Any:
    """``parallel`` rebuilt on its unwrapped AEC env, if it is PettingZoo's converter over
    check-only wrappers; anything else is returned unchanged."""
    if type(parallel) is not aec_to_parallel_wrapper:
        return parallel
    aec = parallel.aec_env
    stripped = False
    while isinstance(aec, _CHECK_ONLY_WRAPPERS):
        aec, stripped = aec.env, True
    return CycleParallelEnv(aec) if stripped else parallel


class CycleParallelEnv(ParallelEnv):
    """PettingZoo's ``aec_to_parallel`` without the wrappers' checks and the unused ``last()``."""

    def __init__(self, aec_env: Any) -> None:
        self.aec_env = aec_env
        self.possible_agents = aec_env.possible_agents
        self.metadata = aec_env.metadata
        self.render_mode = getattr(aec_env, "render_mode", None)
        if hasattr(aec_env, "state_space"):
            self.state_space = aec_env.state_space

    def observation_space(self, agent: Any) -> Any:
        return self.aec_env.observation_space(agent)

    def action_space(self, agent: Any) -> Any:
        return self.aec_env.action_space(agent)

    @property
    def unwrapped(self) -> Any:
        return self.aec_env.unwrapped

    def reset(self, seed: Any = None, options: Any = None) -> Tuple[Dict[Any, Any], Dict[Any, Any]]:
        aec = self.aec_env
        aec.reset(seed=seed, options=options)
        self.agents = aec.agents[:]
        observations = {agent: aec.observe(agent) for agent in aec.agents
                        if not (aec.terminations[agent] or aec.truncations[agent])}
        return observations, dict(**aec.infos)

    def step(self, actions: Dict[Any, Any]) -> Tuple[Dict, Dict, Dict, Dict, Dict]:
        aec = self.aec_env
        rewards: Dict[Any, float] = defaultdict(int)
        for agent in aec.agents:
            if agent != aec.agent_selection:
                raise AssertionError(
                    f"expected agent {agent} got agent {aec.agent_selection}: the parallel "
                    "conversion expects agents to step in a cycle")
            aec.step(actions[agent])
            for other in aec.agents:
                rewards[other] += aec.rewards[other]
        terminations = dict(**aec.terminations)
        truncations = dict(**aec.truncations)
        infos = dict(**aec.infos)
        observations = {agent: aec.observe(agent) for agent in aec.agents}
        while aec.agents and (aec.terminations[aec.agent_selection] or aec.truncations[aec.agent_selection]):
            aec.step(None)
        self.agents = aec.agents
        return observations, rewards, terminations, truncations, infos

    def render(self) -> Any:
        return self.aec_env.render()

    def state(self) -> Any:
        return self.aec_env.state()

    def close(self) -> None:
        self.aec_env.close()
