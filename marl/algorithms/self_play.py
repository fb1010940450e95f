"""Self-play against a pool of past policies, through the public Algorithm API.

Two modules: ``main`` (trained) and ``opponent`` (never trained). Every episode
``main`` takes a random seat and ``opponent`` the others (`RandomSeats`).
`OpponentPool` keeps snapshots of ``main``'s weights and, every ``swap_every``
iterations, adds one and loads a random one into ``opponent``
(``algo.learner.module["opponent"].set_state(...)`` then
``algo.sync_weights_to_env_runners()``). Why a pool rather than the latest
``main``: a policy that only meets its current self can chase its own tail
(forget how to beat strategies it no longer plays); past selves keep them around.

    config = self_play_config(PPOConfig().environment("classic/connect_four-v3"))
    algo = config.build()
    pool = OpponentPool(algo, swap_every=5)
    for _ in range(20):
        result = pool.train()   # algo.train(), then the pool update; result["self_play"]
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from marl.algorithms.algorithm_config import AlgorithmConfig

MAIN = "main"
OPPONENT = "opponent"


@dataclass(frozen=True)
class RandomSeats:
    """``policy_mapping_fn``: per episode, ``main`` plays one random seat, ``opponent`` every other.

    The seat is drawn from the episode id, so every agent of one episode agrees
    on it and a run is reproducible under its seed.
    """

    agents: Tuple[Any, ...]
    main: str = MAIN
    opponent: str = OPPONENT

    def __call__(self, agent_id: Any, episode: Any = None, **kwargs: Any) -> str:
        if agent_id not in self.agents:
            raise ValueError(f"RandomSeats: agent {agent_id!r} is not one of the seats {list(self.agents)}.")
        episode_id = getattr(episode, "id_", 0)
        main_seat = random.Random(episode_id).randrange(len(self.agents))
        return self.main if self.agents.index(agent_id) == main_seat else self.opponent


def self_play_config(
    config: AlgorithmConfig,
    agents: Optional[Sequence[Any]] = None,
    main: str = MAIN,
    opponent: str = OPPONENT,
) -> AlgorithmConfig:
    """Set ``config`` up for self-play: modules ``main`` and ``opponent``, random seats, only ``main`` trained.

    ``agents`` defaults to the env's ``possible_agents`` (the env is built once to read them).
    """
    if agents is None:
        from envs.registry import make_env

        env = make_env(config.env, config.env_config)
        try:
            agents = list(env.possible_agents)
        finally:
            env.close()
    if len(agents) < 2:
        raise ValueError(f"self_play_config needs at least two agents (seats); got {list(agents)}.")
    return config.multi_agent(
        policies={main, opponent},
        policy_mapping_fn=RandomSeats(tuple(agents), main, opponent),
        policies_to_train=[main],
    )


class OpponentPool:
    """Past snapshots of ``main``; every ``swap_every`` iterations one more, and a random one plays ``opponent``.

    At construction the pool holds ``main``'s initial weights, which the
    opponent gets too (so both start as the same policy). Snapshots beyond
    ``max_size`` drop the oldest. ``seed`` seeds the choice of snapshot.
    """

    def __init__(self, algo: Any, swap_every: int = 5, max_size: int = 20, main: str = MAIN,
                 opponent: str = OPPONENT, seed: Optional[int] = None) -> None:
        for name, value in (("swap_every", swap_every), ("max_size", max_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"OpponentPool: {name} must be an int >= 1, got {value!r}.")
        modules = algo.learner.module
        for module_id in (main, opponent):
            if module_id not in modules:
                raise ValueError(f"OpponentPool: module {module_id!r} is not in the algorithm; "
                                 f"its modules are {sorted(modules.keys())} (see self_play_config).")
        self.algo = algo
        self.main, self.opponent = main, opponent
        self.swap_every, self.max_size = swap_every, max_size
        self.rng = random.Random(seed)
        #: (iteration the snapshot was taken at, main's weights then).
        self.snapshots: List[Tuple[int, Dict[str, Any]]] = []
        self.opponent_iteration = self.add_snapshot()
        self._load(self.snapshots[0][1])

    def add_snapshot(self) -> int:
        """Store ``main``'s current weights; returns the iteration they belong to."""
        iteration = int(self.algo.iteration)
        self.snapshots.append((iteration, self.algo.learner.module[self.main].get_state()))
        del self.snapshots[:-self.max_size]
        return iteration

    def swap_opponent(self) -> int:
        """Load a uniformly chosen snapshot into ``opponent`` (learner and env runners); returns its iteration."""
        iteration, state = self.rng.choice(self.snapshots)
        self._load(state)
        self.opponent_iteration = iteration
        return iteration

    def update(self) -> Dict[str, Any]:
        """Call after each ``algo.train()``: every ``swap_every`` iterations snapshot ``main`` and swap."""
        if self.algo.iteration % self.swap_every == 0:
            self.add_snapshot()
            self.swap_opponent()
        return {"pool_size": len(self.snapshots), "opponent_snapshot_iteration": self.opponent_iteration}

    def train(self) -> Dict[str, Any]:
        """``algo.train()`` then `update`; the pool's state is in ``result["self_play"]``."""
        result = self.algo.train()
        result["self_play"] = self.update()
        return result

    def _load(self, state: Dict[str, Any]) -> None:
        self.algo.learner.module[self.opponent].set_state(state)
        self.algo.sync_weights_to_env_runners()
