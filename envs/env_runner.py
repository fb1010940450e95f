"""`MultiAgentEnvRunner`: steps PettingZoo ParallelEnvs in lockstep and returns per-module batches.

The one sampling loop of the library (single-agent gymnasium envs arrive
wrapped as one-agent ParallelEnvs, turn-based AEC games as ParallelEnvs that
ask one agent per step). Each lockstep step:

1. the observations of the agents that act next, gathered over all envs, are
   grouped by module id (``policy_mapping_fn``, called once per agent per
   episode) and run through the env-to-module connector pieces of that module,
   one batched call per module;
2. ONE ``forward_exploration`` (or ``forward_inference``) call on the whole
   ``MultiRLModule`` computes all modules' outputs; actions are sampled per
   module with ``marl.core.action_sampling.actions_from_outputs``;
   (modules whose action distribution is exactly ``TorchCategorical`` are
   sampled by an equivalent Gumbel-max sampler in this file instead: the
   same distribution and log-probabilities at a fraction of the cost; see
   ``MultiAgentEnvRunner.fast_categorical_sampling``);
3. each module's rows are written as one block into a preallocated buffer
   (``envs.episode_buffers.ModuleStepBuffer``); rewards that arrive later are
   added to the row of the agent's last action;
4. every env steps; finished episodes are recorded and their env reset.

At the end of ``sample()`` the rows are re-ordered so that each agent
trajectory segment (the steps of one agent in one episode within this call)
is contiguous. The batch format is described in :meth:`MultiAgentEnvRunner.sample`.
"""
from __future__ import annotations

import contextlib
import logging
import math
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import gymnasium as gym
import numpy as np
import torch

from marl.core.action_sampling import actions_from_outputs
from marl.core.columns import Columns
from marl.core.constants import DEFAULT_MODULE_ID, SHARED_ENCODER_ID
from marl.core.multi_rl_module import MultiRLModule, MultiRLModuleSpec
from marl.core.rl_module import RLModule, RLModuleSpec
from marl.distributions import TorchCategorical

from envs.episode_buffers import (
    ModuleStepBuffer,
    stack_observations,
    take_rows,
    zeros_like_rows,
)

logger = logging.getLogger(__name__)

#: Batch key: per segment, the observation after the segment's last step (post-connector).
BOOTSTRAP_OBS = "bootstrap_obs"
#: Batch key (stateful modules): per segment, the recurrent state to feed with BOOTSTRAP_OBS.
BOOTSTRAP_STATE_IN = "bootstrap_state_in"

#: How often the env creator may fail in a row before the runner gives up.
MAX_CONSECUTIVE_CREATOR_FAILURES = 3
#: How often recreating + resetting one env may fail in a row before the runner gives up.
MAX_CONSECUTIVE_RESET_FAILURES = 5
#: How many episodes in a row one env may crash (with no episode completing in
#: between) before the runner gives up: a deterministic bug would otherwise loop forever.
MAX_CONSECUTIVE_EPISODE_CRASHES = 20

# Agent-episode ids and episode ids: worker index in the high bits, so they are
# unique across the env runners of one training run.
_ID_SHIFT = 40

PolicyMappingFn = Callable[..., str]


def default_policy_mapping_fn(agent_id: Any, episode: Any, **kwargs: Any) -> str:
    """Every agent acts with ``DEFAULT_MODULE_ID`` (parameter sharing)."""
    return DEFAULT_MODULE_ID


class EpisodeHandle:
    """What ``policy_mapping_fn(agent_id, episode)`` sees of an episode.

    Attributes:
        id_: unique episode id (an int, unique across env runners).
        env_index: which of the runner's envs plays the episode.
        agent_ids: the agents that appeared so far, in order of appearance.
        worker_index: the env runner's worker index.
    """

    __slots__ = ("id_", "env_index", "agent_ids", "worker_index")

    def __init__(self, id_: int, env_index: int, agent_ids: Optional[List[Any]] = None,
                 worker_index: int = 0) -> None:
        self.id_ = id_
        self.env_index = env_index
        self.agent_ids = agent_ids if agent_ids is not None else []
        self.worker_index = worker_index

    def __repr__(self) -> str:
        return (f"EpisodeHandle(id_={self.id_}, env_index={self.env_index}, "
                f"agent_ids={self.agent_ids})")


# --------------------------------------------------------------------------
# Connector pipelines and module spaces.
# --------------------------------------------------------------------------


class _Pipeline:
    """The env-to-module connector pieces of one module and their input spaces."""

    __slots__ = ("pieces", "input_spaces", "raw_space", "output_space")

    def __init__(self, connector: Any, env: Any, raw_space: gym.Space) -> None:
        pieces = _make_pieces(connector, env)
        self.raw_space = raw_space
        self.pieces = pieces
        self.input_spaces: List[gym.Space] = []
        space = raw_space
        for piece in pieces:
            if not hasattr(piece, "recompute_output_observation_space"):
                raise TypeError(
                    f"env_to_module_connector returned {piece!r} (type {type(piece).__name__}), "
                    "which is not a connector piece: a piece has "
                    "recompute_output_observation_space(space) and __call__(batch, space)"
                )
            self.input_spaces.append(space)
            space = piece.recompute_output_observation_space(space)
        self.output_space = space

    def __call__(self, raw_observations: List[Any]) -> Any:
        """Stack raw per-agent observations, then run every piece on the batch."""
        batch = stack_observations(raw_observations)
        for piece, space in zip(self.pieces, self.input_spaces):
            batch = piece(batch, space)
        return batch


def _make_pieces(connector: Any, env: Any) -> List[Any]:
    if connector is None:
        return []
    if hasattr(connector, "recompute_output_observation_space"):
        # A piece instance passed directly (instead of a factory ``env -> piece``).
        return [connector]
    pieces = connector(env)
    if pieces is None:
        return []
    if isinstance(pieces, (list, tuple)):
        return list(pieces)
    return [pieces]


def infer_module_spaces(
    env: Any,
    policy_mapping_fn: Optional[PolicyMappingFn] = None,
    env_to_module_connector: Any = None,
) -> Dict[str, Tuple[gym.Space, gym.Space]]:
    """``{module_id: (observation_space_after_connectors, action_space)}`` from one env.

    Every agent in ``env.possible_agents`` is mapped once (with a stand-in
    episode); the spaces of the agents mapped to one module must agree.

    Raises:
        ValueError: naming both agents and both spaces when two agents of one
            module have different observation or action spaces (pad them to
            one space with ``envs.supersuit_presets.pad_heterogeneous``).
    """
    mapping_fn = policy_mapping_fn or default_policy_mapping_fn
    agents = list(env.possible_agents)
    episode = EpisodeHandle(id_=-1, env_index=0, agent_ids=list(agents))
    result: Dict[str, Tuple[gym.Space, gym.Space]] = {}
    owner: Dict[str, Any] = {}
    for agent in agents:
        module_id = mapping_fn(agent, episode)
        obs_space = _Pipeline(env_to_module_connector, env, env.observation_space(agent)).output_space
        act_space = env.action_space(agent)
        if module_id not in result:
            result[module_id] = (obs_space, act_space)
            owner[module_id] = agent
            continue
        first = owner[module_id]
        known_obs, known_act = result[module_id]
        for what, known, new in (("observation", known_obs, obs_space),
                                  ("action", known_act, act_space)):
            if known != new:
                raise ValueError(
                    f"agents {first!r} and {agent!r} both map to module {module_id!r} but have "
                    f"different {what} spaces: {known} vs {new}. One module needs one space: "
                    "pad them to a common space with envs.supersuit_presets.pad_heterogeneous, "
                    "or map the agents to different modules"
                )
    return result


# --------------------------------------------------------------------------
# Actions: module format -> env format.
# --------------------------------------------------------------------------


class _ActionAdapter:
    """Turns a batch of module actions into one env action per row.

    Discrete / MultiDiscrete: the space's ``start`` is added (distributions
    produce 0-based indices). Box, as RLlib's ``normalize_actions`` /
    ``clip_actions`` say: with ``normalize_actions`` a bounded float Box reads
    module actions as living in [-1, 1] and maps them linearly onto
    [low, high] (then clips), so a unit-variance Gaussian explores the whole
    range whatever the env's scale; otherwise ``clip_actions`` clips to the
    bounds and without either the raw action goes to the env. The batch always
    records the module's own action, so ``ACTION_LOGP`` matches it.
    Dict / Tuple: per component.
    """

    def __init__(self, space: Optional[gym.Space], normalize_actions: bool = True,
                 clip_actions: bool = False) -> None:
        self.space = space
        self.kind = "raw"
        self.scale: Optional[np.ndarray] = None
        if isinstance(space, gym.spaces.Discrete):
            self.kind = "discrete"
            self.start = int(space.start)
        elif isinstance(space, gym.spaces.MultiDiscrete):
            self.kind = "multidiscrete"
            self.start = np.asarray(space.start)
            self.has_start = bool(np.any(self.start != 0))
        elif isinstance(space, gym.spaces.Box):
            self.kind = "box"
            self.low = space.low
            self.high = space.high
            self.dtype = space.dtype
            bounded = bool(np.all(space.bounded_below) and np.all(space.bounded_above))
            if normalize_actions and bounded and np.issubdtype(space.dtype, np.floating):
                self.scale = ((space.high - space.low) / 2.0).astype(np.float64)
            self.clip = self.scale is not None or bool(clip_actions)
        elif isinstance(space, gym.spaces.Dict):
            self.kind = "dict"
            self.children = {k: _ActionAdapter(s, normalize_actions, clip_actions)
                             for k, s in space.spaces.items()}
        elif isinstance(space, gym.spaces.Tuple):
            self.kind = "tuple"
            self.children = tuple(_ActionAdapter(s, normalize_actions, clip_actions) for s in space.spaces)

    def env_format_array(self, actions: Any) -> Any:
        """Batched env-format actions (start added); Box NOT clipped (for PREV_ACTIONS)."""
        if self.kind == "discrete":
            return actions + self.start if self.start else actions
        if self.kind == "multidiscrete":
            return actions + self.start if self.has_start else actions
        if self.kind == "dict":
            return {k: c.env_format_array(actions[k]) for k, c in self.children.items()}
        if self.kind == "tuple":
            return tuple(c.env_format_array(actions[i]) for i, c in enumerate(self.children))
        return actions

    def to_env(self, actions: Any) -> List[Any]:
        """One env action per batch row."""
        kind = self.kind
        if kind == "discrete":
            if self.start:
                actions = actions + self.start
            # numpy scalars, not Python ints: gymnasium's Discrete.contains (which
            # many envs call on every action) is ~2x slower on Python ints.
            return list(actions)
        if kind == "box":
            if self.scale is not None:  # [-1, 1] -> [low, high]
                actions = self.low + (np.asarray(actions, np.float64) + 1.0) * self.scale
            if self.clip:
                actions = np.clip(actions, self.low, self.high)
            return list(actions.astype(self.dtype, copy=False))
        if kind == "multidiscrete":
            if self.has_start:
                actions = actions + self.start
            return list(actions)
        if kind == "dict":
            cols = {k: c.to_env(actions[k]) for k, c in self.children.items()}
            n = len(next(iter(cols.values()))) if cols else 0
            return [{k: v[i] for k, v in cols.items()} for i in range(n)]
        if kind == "tuple":
            cols = [c.to_env(actions[i]) for i, c in enumerate(self.children)]
            n = len(cols[0]) if cols else 0
            return [tuple(v[i] for v in cols) for i in range(n)]
        if isinstance(actions, np.ndarray):
            return list(actions)
        return list(actions)


_ROWS = np.arange(4096)
_TINY = {np.dtype(np.float32): np.finfo(np.float32).tiny, np.dtype(np.float64): np.finfo(np.float64).tiny}


def _sample_categorical(outputs: Dict[str, Any], explore: bool,
                        rng: np.random.Generator) -> Optional[Dict[str, Any]]:
    """``actions_from_outputs`` for a ``TorchCategorical`` module, without building distributions.

    Exploring: Gumbel-max sampling, ``argmax(log_softmax(logits) - log(-log(u)))``
    with ``u ~ U[0, 1)``, which draws exactly from the categorical distribution of
    the logits (masked logits at ``finfo.min`` keep probability 0, and so does any
    action whose ``u`` is 0); ``ACTION_LOGP`` is the log-softmax at the sampled
    index, as ``TorchCategorical.logp`` computes it. Greedy: the argmax of the
    logits (``to_deterministic()``). ACTIONS / ACTION_LOGP come back as numpy
    arrays (the runner converts everything to numpy anyway); numpy does the small
    elementwise work because its per-call overhead is a third of torch's.
    Returns None (use the generic path) when the outputs do not fit that shape.
    """
    if Columns.ACTIONS in outputs:
        return None
    logits = outputs.get(Columns.ACTION_DIST_INPUTS)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or not logits.is_cpu:
        return None
    if logits.requires_grad:
        logits = logits.detach()
    out = dict(outputs)
    if not explore:
        out[Columns.ACTIONS] = logits.argmax(-1).numpy()
        return out
    logp_all = torch.log_softmax(logits, -1).numpy()
    dtype = logp_all.dtype if logp_all.dtype in _TINY else np.dtype(np.float64)
    u = rng.random(logp_all.shape, dtype=dtype)
    np.maximum(u, _TINY[dtype], out=u)  # u == 0 would make log(-log(u)) a warning
    actions = (logp_all - np.log(-np.log(u))).argmax(-1)
    out[Columns.ACTIONS] = actions
    if Columns.ACTION_LOGP not in out:
        rows = _ROWS[: len(actions)] if len(actions) <= len(_ROWS) else np.arange(len(actions))
        out[Columns.ACTION_LOGP] = logp_all[rows, actions]
    return out


def _to_numpy(x: Any) -> Any:
    if type(x) is np.ndarray:
        return x
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, Mapping):
        return {k: _to_numpy(v) for k, v in x.items()}
    if isinstance(x, tuple):
        return tuple(_to_numpy(v) for v in x)
    return np.asarray(x)


def _state_to_torch(weights: Mapping[str, Mapping[str, Any]]) -> Dict[str, Dict[str, torch.Tensor]]:
    """``{module_id: {name: tensor}}`` from tensors or numpy arrays (as sent to workers)."""
    return {mid: {k: torch.as_tensor(v) for k, v in state.items()} for mid, state in weights.items()}


def _to_tensor(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x) if x.flags.writeable else torch.as_tensor(np.array(x))
    if isinstance(x, Mapping):
        return {k: _to_tensor(v) for k, v in x.items()}
    if isinstance(x, tuple):
        return tuple(_to_tensor(v) for v in x)
    return torch.as_tensor(x)


# --------------------------------------------------------------------------
# Per-module and per-env bookkeeping.
# --------------------------------------------------------------------------


class _ModuleInfo:
    """What the runner keeps per module id: pipeline, buffer, recurrent state store."""

    __slots__ = ("module_id", "module", "pipeline", "buffer", "adapter", "fast_explore", "fast_greedy",
                 "step_rows", "step_rewards", "stateful",
                 "initial_state", "state_store", "needs_prev_action", "needs_prev_reward",
                 "prev_action_store", "prev_reward_store")

    def __init__(self, module_id: str, module: RLModule, pipeline: _Pipeline, num_envs: int,
                 num_slots: int, capacity: int, adapter: _ActionAdapter) -> None:
        self.module_id = module_id
        self.module = module
        self.pipeline = pipeline
        self.buffer = ModuleStepBuffer(capacity)
        self.adapter = adapter
        # Rewards of the current step, added to the buffer in one vectorised op.
        self.step_rows: List[int] = []
        self.step_rewards: List[float] = []
        # Exactly TorchCategorical (not a subclass that may change sampling):
        # the runner's fast sampler gives the same distribution.
        try:
            self.fast_explore = module.get_exploration_action_dist_cls() is TorchCategorical
            self.fast_greedy = module.get_inference_action_dist_cls() is TorchCategorical
        except Exception:  # noqa: BLE001 - no default distribution: the generic path decides
            self.fast_explore = self.fast_greedy = False
        init = module.get_initial_state() or {}
        self.stateful = bool(init)
        self.initial_state = {k: _to_numpy(v) for k, v in init.items()}
        self.state_store: Dict[str, np.ndarray] = {
            k: np.zeros((num_envs, num_slots) + v.shape, v.dtype) for k, v in self.initial_state.items()
        }
        cfg = getattr(module, "model_config", None) or {}
        use_lstm = self.stateful and bool(cfg.get("use_lstm", True))
        self.needs_prev_action = use_lstm and bool(cfg.get("lstm_use_prev_action", False))
        self.needs_prev_reward = use_lstm and bool(cfg.get("lstm_use_prev_reward", False))
        self.prev_action_store: Optional[np.ndarray] = None
        self.prev_reward_store = np.zeros((num_envs, num_slots), np.float32)
        if self.needs_prev_action:
            space = module.action_space
            if isinstance(space, gym.spaces.Discrete):
                shape, dtype = (), np.int64
            elif isinstance(space, gym.spaces.MultiDiscrete):
                shape, dtype = tuple(space.shape), np.int64
            else:
                shape, dtype = tuple(space.shape), np.float32
            self.prev_action_store = np.zeros((num_envs, num_slots) + shape, dtype)

    def ensure_slots(self, num_slots: int) -> None:
        """Grow the per-(env, slot) stores when late-joining agents add slots."""
        def grow(a: np.ndarray) -> np.ndarray:
            if a.shape[1] >= num_slots:
                return a
            new = np.zeros((a.shape[0], max(num_slots, 2 * a.shape[1])) + a.shape[2:], a.dtype)
            new[:, : a.shape[1]] = a
            return new

        self.state_store = {k: grow(v) for k, v in self.state_store.items()}
        self.prev_reward_store = grow(self.prev_reward_store)
        if self.prev_action_store is not None:
            self.prev_action_store = grow(self.prev_action_store)


class _EnvState:
    """One env and its current episode, with per-agent-slot bookkeeping in lists.

    Slots: a fixed agent order per env (``possible_agents``, then late joiners
    appended), so per-agent data lives at ``[env_index, slot]`` in arrays.
    """

    __slots__ = ("index", "env", "episode", "slot_of", "agents", "mod", "eps", "row", "pending",
                 "done", "ret", "sink", "live", "ep_len", "num_resets", "num_recreations",
                 "consecutive_crashes")

    def __init__(self, index: int, env: Any) -> None:
        self.index = index
        self.env = env
        self.episode: Optional[EpisodeHandle] = None
        self.slot_of: Dict[Any, int] = {}
        self.agents: List[Any] = []
        self.mod: List[Optional[str]] = []
        self.eps: List[int] = []
        self.row: List[int] = []
        self.pending: List[bool] = []
        self.done: List[bool] = []
        self.ret: List[float] = []
        self.sink: List[Optional[_ModuleInfo]] = []  # the module info of the slot's module
        self.live = 0
        self.ep_len = 0
        self.num_resets = 0
        self.num_recreations = 0
        self.consecutive_crashes = 0
        for agent in getattr(env, "possible_agents", []) or []:
            self.add_slot(agent)

    def add_slot(self, agent: Any) -> int:
        s = len(self.agents)
        self.slot_of[agent] = s
        self.agents.append(agent)
        self.mod.append(None)
        self.eps.append(-1)
        self.row.append(-1)
        self.pending.append(False)
        self.done.append(False)
        self.ret.append(0.0)
        self.sink.append(None)
        return s

    def clear_episode(self, episode: EpisodeHandle) -> None:
        self.episode = episode
        n = len(self.agents)
        self.mod = [None] * n
        self.eps = [-1] * n
        self.row = [-1] * n
        self.pending = [False] * n
        self.done = [False] * n
        self.ret = [0.0] * n
        self.sink = [None] * n
        self.live = 0
        self.ep_len = 0

    def episode_eps_ids(self) -> List[int]:
        return [e for e, m in zip(self.eps, self.mod) if m is not None]


class _Collect:
    """Raw observations of one module gathered during a step (Python lists, one entry per agent)."""

    __slots__ = ("raw", "envs", "slots", "agents", "eps", "runs", "last_env")

    def __init__(self) -> None:
        # One (env state, first position) per env: each env's agents are contiguous.
        self.runs: List[Tuple[Any, int]] = []
        self.last_env: Any = None
        self.raw: List[Any] = []
        self.envs: List[int] = []
        self.slots: List[int] = []
        self.agents: List[Any] = []
        self.eps: List[int] = []


class _Group:
    """The agents of one module that act at the next step, with post-connector observations."""

    __slots__ = ("obs", "obs_t", "envs", "slots", "agents", "eps", "runs", "_env_idx", "_slot_idx")

    def __init__(self, obs: Any, c: _Collect) -> None:
        self.obs = obs
        self.obs_t = _to_tensor(obs)
        self.envs = c.envs
        self.slots = c.slots
        self.agents = c.agents
        self.runs = c.runs
        self.eps = np.asarray(c.eps, dtype=np.int64)
        self._env_idx: Optional[np.ndarray] = None
        self._slot_idx: Optional[np.ndarray] = None

    @property
    def env_idx(self) -> np.ndarray:
        """Env index per row (built on demand: only per-agent stores need it)."""
        if self._env_idx is None:
            self._env_idx = np.asarray(self.envs, dtype=np.intp)
        return self._env_idx

    @property
    def slot_idx(self) -> np.ndarray:
        """Agent slot per row (built on demand)."""
        if self._slot_idx is None:
            self._slot_idx = np.asarray(self.slots, dtype=np.intp)
        return self._slot_idx


# --------------------------------------------------------------------------
# The runner.
# --------------------------------------------------------------------------


class MultiAgentEnvRunner:
    """Samples ``num_envs`` PettingZoo ParallelEnvs in lockstep with one MultiRLModule.

    Args:
        env_creator: ``env_config -> ParallelEnv``. For ``EnvRunnerGroup`` with
            worker processes it must be picklable (a module-level function or
            class).
        env_config: passed to ``env_creator`` (a copy per env).
        module_spec: how to build the ``MultiRLModule``; sub-specs without
            spaces get the spaces of :meth:`get_spaces`.
        module: an already built ``MultiRLModule`` (a single ``RLModule`` is
            wrapped under ``DEFAULT_MODULE_ID``); takes precedence over
            ``module_spec``. With neither, only :meth:`get_spaces` works until
            :meth:`set_module` is called.
        policy_mapping_fn: ``(agent_id, episode) -> module_id``, called once
            per agent per episode, at the agent's first observation (default:
            everything to ``DEFAULT_MODULE_ID``).
        num_envs: envs stepped in lockstep.
        rollout_fragment_length: lockstep steps of a ``sample()`` without
            arguments.
        env_to_module_connector: ``env -> piece | [pieces]`` (or a piece);
            called once per module id; pieces run on stacked batches.
        seed: env ``i`` first resets with ``seed + 1000 * worker_index + i``
            (later resets are unseeded: the env's RNG continues; an env
            recreated after a crash is seeded with a derived seed). Action
            sampling uses private RNGs seeded with ``seed + 1000 *
            worker_index``: a ``torch.Generator`` (swapped in around
            ``actions_from_outputs``) and a numpy ``Generator`` (the fast
            categorical sampler). The global torch/numpy RNGs are untouched
            and a module's own forward pass runs on the global torch RNG. Same
            seed and same weights give identical batches. None: unseeded.
        worker_index: 0 for a local runner, 1.. in worker processes.
        explore: default for ``sample(explore=None)``.
    """

    #: Sample modules whose action distribution is exactly ``TorchCategorical``
    #: with the runner's own Gumbel-max sampler (same distribution, same
    #: log-probabilities, several times cheaper than building a
    #: torch.distributions object per step); False routes every module through
    #: ``marl.core.action_sampling.actions_from_outputs``.
    fast_categorical_sampling: bool = True

    def __init__(
        self,
        *,
        env_creator: Callable[[dict], Any],
        env_config: Optional[dict] = None,
        module_spec: Optional[MultiRLModuleSpec] = None,
        module: Optional[RLModule] = None,
        policy_mapping_fn: Optional[PolicyMappingFn] = None,
        num_envs: int = 1,
        rollout_fragment_length: int = 200,
        env_to_module_connector: Any = None,
        seed: Optional[int] = None,
        worker_index: int = 0,
        explore: bool = True,
        normalize_actions: bool = True,
        clip_actions: bool = False,
        metrics_num_episodes: Optional[int] = None,
    ) -> None:
        if not callable(env_creator):
            raise TypeError(f"env_creator must be callable (env_config -> env), got {env_creator!r}")
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be an int >= 1, got {num_envs!r}")
        if (isinstance(rollout_fragment_length, bool) or not isinstance(rollout_fragment_length, int)
                or rollout_fragment_length < 1):
            raise ValueError(
                f"rollout_fragment_length must be an int >= 1, got {rollout_fragment_length!r}")
        self.env_creator = env_creator
        self.env_config = dict(env_config or {})
        self.policy_mapping_fn = policy_mapping_fn or default_policy_mapping_fn
        self.num_envs = num_envs
        self.rollout_fragment_length = rollout_fragment_length
        self.env_to_module_connector = env_to_module_connector
        self.seed = seed
        self.worker_index = int(worker_index)
        self.explore = bool(explore)
        self.normalize_actions = bool(normalize_actions)
        self.clip_actions = bool(clip_actions)
        # Episode statistics of a call cover at most its latest N episodes
        # (RLlib: metrics_num_episodes_for_smoothing / number of runners).
        self.metrics_num_episodes = None if metrics_num_episodes is None else max(1, int(metrics_num_episodes))

        self._envs: List[_EnvState] = [
            _EnvState(i, self._create_env()) for i in range(num_envs)
        ]
        self._spaces = infer_module_spaces(
            self._envs[0].env, self.policy_mapping_fn, env_to_module_connector)

        self.module: Optional[MultiRLModule] = None
        if module is not None:
            self.set_module(module)
        elif module_spec is not None:
            self.set_module(self._build_module(module_spec))

        # Private RNGs for action sampling (the global ones stay untouched): torch's
        # for modules sampled through actions_from_outputs, numpy's for the fast
        # categorical sampler.
        self._rng: Optional[torch.Generator] = None
        sampling_seed = None if seed is None else int(seed) + 1000 * self.worker_index
        if sampling_seed is not None:
            self._rng = torch.Generator().manual_seed(sampling_seed)
        self._np_rng = np.random.default_rng(sampling_seed)

        self._modules: Dict[str, _ModuleInfo] = {}
        self._groups: Dict[str, _Group] = {}
        self._pending_connector_states: Dict[str, List[Any]] = {}
        self._needs_reset_all = True
        self._episode_counter = 0
        self._agent_eps_counter = 0
        # Per call: agent-episodes whose rows are dropped (env crashed), and
        # truncation bootstraps {eps_id: (obs [1, ...], state {k: [1, ...]} | None)}.
        self._dropped_eps: set = set()
        self._trunc_boot: Dict[int, Tuple[Any, Any]] = {}
        self._completed: List[Tuple[float, int, Dict[Any, float], Dict[str, float]]] = []
        self._num_env_steps_call = 0
        self._num_episodes_dropped_call = 0
        # Lifetime counters.
        self._num_env_steps_lifetime = 0
        self._num_agent_steps_lifetime = 0
        self._num_episodes_lifetime = 0
        self._num_env_errors = 0
        self._num_episodes_dropped_lifetime = 0

    # ------------------------------------------------------------ module setup
    def _build_module(self, spec: Any) -> RLModule:
        if isinstance(spec, RLModuleSpec):
            spec = MultiRLModuleSpec(rl_module_specs=spec)
        spec = spec.copy()
        ids = list(self._spaces)
        specs = spec.module_specs(ids)
        distinct = []
        for pair in self._spaces.values():
            if pair not in distinct:
                distinct.append(pair)
        for module_id, sub in specs.items():
            pair = self._spaces.get(module_id)
            if pair is None and len(distinct) == 1:
                # No agent maps to this module (yet, e.g. a mapping that varies per
                # episode); all agents share one pair of spaces, so use it.
                pair = distinct[0]
            if pair is not None:
                obs_space, act_space = pair
                if sub.observation_space is None:
                    sub.observation_space = obs_space
                if sub.action_space is None:
                    sub.action_space = act_space
        spec.rl_module_specs = specs
        return spec.build()

    def set_module(self, module: RLModule) -> None:
        """Use ``module`` (a ``MultiRLModule``, or one ``RLModule`` as ``DEFAULT_MODULE_ID``)."""
        if not isinstance(module, MultiRLModule):
            if not isinstance(module, RLModule):
                raise TypeError(f"module must be a MultiRLModule or RLModule, got {type(module).__name__}")
            module = module.as_multi_rl_module()
        self.module = module
        self._modules = {}
        self._needs_reset_all = True

    # ------------------------------------------------------------------ public
    def get_spaces(self) -> Dict[str, Tuple[gym.Space, gym.Space]]:
        """``{module_id: (observation space after connectors, action space)}``."""
        return dict(self._spaces)

    def get_weights(self) -> Dict[str, Dict[str, torch.Tensor]]:
        """``{module_id: state_dict}`` of the runner's modules."""
        self._require_module()
        return self.module.get_state()

    def set_weights(self, weights: Mapping[str, Mapping[str, Any]]) -> None:
        """Load ``{module_id: state_dict}`` (modules not named keep their weights)."""
        self._require_module()
        self.module.set_state(_state_to_torch(weights))

    def pop_connector_deltas(self) -> Dict[str, List[Any]]:
        """``{module_id: [delta per piece]}`` of connector pieces with running
        statistics (``pop_delta()``, e.g. MeanStdFilter); ``{}`` if none changed."""
        out: Dict[str, List[Any]] = {}
        for module_id, info in self._modules.items():
            deltas = [p.pop_delta() if hasattr(p, "pop_delta") else None for p in info.pipeline.pieces]
            if any(d is not None for d in deltas):
                out[module_id] = deltas
        return out

    def apply_connector_deltas(self, deltas_list: Sequence[Mapping[str, List[Any]]]) -> None:
        """Pool other runners' connector deltas into this runner's pieces."""
        for deltas in deltas_list:
            for module_id, piece_deltas in deltas.items():
                info = self._modules.get(module_id)
                if info is None:
                    continue
                for piece, delta in zip(info.pipeline.pieces, piece_deltas):
                    if delta is not None and hasattr(piece, "apply_deltas"):
                        piece.apply_deltas([delta])

    def get_state(self) -> Dict[str, Any]:
        """Weights, connector states and counters (everything a restore needs)."""
        state: Dict[str, Any] = {
            "num_env_steps_sampled_lifetime": self._num_env_steps_lifetime,
            "num_agent_steps_sampled_lifetime": self._num_agent_steps_lifetime,
            "num_episodes_lifetime": self._num_episodes_lifetime,
            "num_env_errors": self._num_env_errors,
            "num_episodes_dropped_lifetime": self._num_episodes_dropped_lifetime,
        }
        if self.module is not None:
            state["rl_module"] = self.module.get_state()
        connector_states = {}
        for module_id, info in self._modules.items():
            connector_states[module_id] = [
                p.get_state() if hasattr(p, "get_state") else {} for p in info.pipeline.pieces]
        state["env_to_module"] = connector_states
        return state

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`get_state` returned (missing keys are left alone)."""
        if "rl_module" in state:
            self._require_module()
            self.module.set_state(_state_to_torch(state["rl_module"]))
        self._num_env_steps_lifetime = int(state.get("num_env_steps_sampled_lifetime",
                                                     self._num_env_steps_lifetime))
        self._num_agent_steps_lifetime = int(state.get("num_agent_steps_sampled_lifetime",
                                                       self._num_agent_steps_lifetime))
        self._num_episodes_lifetime = int(state.get("num_episodes_lifetime", self._num_episodes_lifetime))
        self._num_env_errors = int(state.get("num_env_errors", self._num_env_errors))
        self._num_episodes_dropped_lifetime = int(state.get(
            "num_episodes_dropped_lifetime", self._num_episodes_dropped_lifetime))
        for module_id, piece_states in (state.get("env_to_module") or {}).items():
            info = self._modules.get(module_id)
            if info is None:  # pipeline not built yet: applied when the module first appears
                self._pending_connector_states[module_id] = list(piece_states)
                continue
            _set_pipeline_state(info.pipeline, piece_states)

    def stop(self) -> None:
        """Close every env."""
        for st in self._envs:
            try:
                st.env.close()
            except Exception:  # closing a broken env must not hide the real problem
                logger.debug("env %d failed to close", st.index, exc_info=True)

    def sample(
        self,
        num_timesteps: Optional[int] = None,
        num_episodes: Optional[int] = None,
        explore: Optional[bool] = None,
    ) -> Tuple[Dict[str, Dict[str, Any]], Dict[str, Any]]:
        """Step the envs and return ``(batches, metrics)``.

        ``num_timesteps=T``: ``ceil(T / num_envs)`` lockstep steps (default:
        ``rollout_fragment_length`` lockstep steps); episodes continue across
        calls. ``num_episodes=K``: step until at least K episodes completed
        (all that complete on the last step are kept); only completed
        episodes are returned and in-progress ones are discarded, so the next
        call starts fresh episodes (so does this one, if a previous
        ``num_timesteps`` call left episodes running).

        ``batches[module_id]`` holds flat arrays over all N rows (one per agent
        action) of that module, ordered so each segment (one agent's steps in
        one episode within this call) is contiguous, segments sorted by
        ``EPS_ID``:

        - ``OBS`` [N, *obs] (post-connector; a dict of arrays for dict obs),
        - ``ACTIONS`` [N, ...] (as sampled: 0-based, Box actions unclipped),
        - ``ACTION_LOGP`` [N] (when exploring), ``ACTION_DIST_INPUTS`` [N, D],
          ``VF_PREDS`` [N] (if the module's forward returned them),
        - ``REWARDS`` [N] float32: everything the agent received for that
          action (including rewards that arrived while it waited its turn),
        - ``TERMINATEDS`` / ``TRUNCATEDS`` [N] bool: True only on an agent's
          last step of a terminated / truncated episode (a step that is both
          counts as terminated only),
        - ``EPS_ID`` [N] int64: unique per agent-episode, stable across calls,
        - ``STATE_IN`` {k: [N, ...]} (stateful modules; the state before the
          step), ``PREV_ACTIONS`` / ``PREV_REWARDS`` (modules with
          ``lstm_use_prev_action`` / ``lstm_use_prev_reward``),
        - ``SEQ_LENS`` [S] int64: segment lengths in order (sum N),
        - ``BOOTSTRAP_OBS`` [S, *obs]: observation after each segment's last
          step (next obs if the episode goes on past this call, the final obs
          on truncation, zeros on termination), ``BOOTSTRAP_STATE_IN`` {k: [S, ...]}.

        A segment cut by the end of the call ends with both flags False. An
        action whose next observation has not arrived yet (turn-based envs:
        the agent waits for its turn) is held back and returned by the next
        call, so its reward is always complete. An agent the env drops
        without a done flag (``env.agents`` empties) counts as truncated.

        ``metrics``: ``num_env_steps_sampled`` (one per env per lockstep step;
        a turn for turn-based envs), ``num_agent_steps_sampled`` (rows
        returned), ``num_module_steps_sampled`` {module: rows},
        ``num_env_steps_sampled_lifetime``, ``num_agent_steps_sampled_lifetime``,
        ``num_env_errors`` (lifetime count of recovered env crashes),
        ``num_episodes_dropped`` (this call), ``num_episodes`` and, over the
        episodes completed in this call, ``episode_return_mean/min/max`` (sum
        over all agents, including rewards an agent got before its first
        action), ``episode_len_mean`` (env steps), ``agent_episode_return_mean``
        {agent: mean}, ``module_episode_return_mean`` {module: mean} plus the
        matching ``agent_episode_count`` / ``module_episode_count`` for
        merging. When no episode completed these return/length keys are
        omitted (never NaN, no stale values).
        """
        self._require_module()
        explore = self.explore if explore is None else bool(explore)
        if num_timesteps is not None and num_episodes is not None:
            raise ValueError(
                f"sample() takes num_timesteps or num_episodes, not both (got {num_timesteps} "
                f"and {num_episodes})")
        episodes_mode = num_episodes is not None
        if episodes_mode and (not isinstance(num_episodes, int) or num_episodes < 1):
            raise ValueError(f"num_episodes must be an int >= 1, got {num_episodes!r}")
        if num_timesteps is not None and (not isinstance(num_timesteps, (int, np.integer))
                                          or num_timesteps < 0):
            raise ValueError(f"num_timesteps must be an int >= 0, got {num_timesteps!r}")

        self._completed = []
        self._num_env_steps_call = 0
        self._num_episodes_dropped_call = 0

        if self._needs_reset_all or (episodes_mode and any(st.ep_len > 0 for st in self._envs)):
            self._reset_all()

        if episodes_mode:
            while len(self._completed) < num_episodes:
                self._step(explore)
        else:
            steps = (self.rollout_fragment_length if num_timesteps is None
                     else math.ceil(int(num_timesteps) / self.num_envs))
            for _ in range(steps):
                self._step(explore)

        discard: set = set()
        if episodes_mode:
            for st in self._envs:
                discard.update(st.episode_eps_ids())
        batches = self._build_batches(explore, discard)
        if episodes_mode:
            self._needs_reset_all = True
        metrics = self._metrics(batches)
        deltas = self.pop_connector_deltas()
        if deltas:
            metrics["connector_deltas"] = deltas
        return batches, metrics

    # --------------------------------------------------------------- internals
    def _require_module(self) -> None:
        if self.module is None:
            raise RuntimeError(
                "MultiAgentEnvRunner has no module: pass module= or module_spec= to the "
                "constructor, or call set_module() (get_spaces() works without one)")

    @contextlib.contextmanager
    def _sampling_context(self) -> Iterator[None]:
        """Forward + sampling on the runner's own torch generator, without arg validation.

        The global torch RNG is left as it was (the runner's generator state is
        swapped in and out), so a seeded runner is reproducible no matter what
        else uses torch in the process. torch.distributions' argument
        validation is switched off for the duration: it costs about a third
        of the sampling time per step, and invalid (NaN) logits still fail
        loudly in ``torch.multinomial``.
        """
        validate = torch.distributions.Distribution._validate_args
        torch.distributions.Distribution._validate_args = False
        if self._rng is None:
            try:
                yield
            finally:
                torch.distributions.Distribution._validate_args = validate
            return
        saved = torch.get_rng_state()
        torch.set_rng_state(self._rng.get_state())
        try:
            yield
        finally:
            self._rng.set_state(torch.get_rng_state())
            torch.set_rng_state(saved)
            torch.distributions.Distribution._validate_args = validate

    def _create_env(self) -> Any:
        """Call the creator; give up (re-raising its error) after 3 failures in a row."""
        errors: List[BaseException] = []
        while True:
            try:
                return self.env_creator(dict(self.env_config))
            except Exception as exc:  # noqa: BLE001 - retried, re-raised below
                errors.append(exc)
                logger.warning("env creator failed (%d/%d): %r", len(errors),
                               MAX_CONSECUTIVE_CREATOR_FAILURES, exc)
                if len(errors) >= MAX_CONSECUTIVE_CREATOR_FAILURES:
                    original = errors[0]
                    original.add_note(
                        f"MultiAgentEnvRunner (worker {self.worker_index}): the env creator "
                        f"{self.env_creator!r} raised {len(errors)} times in a row; giving up")
                    raise original

    def _env_seed(self, st: _EnvState) -> Optional[int]:
        if self.seed is None:
            return None
        base = int(self.seed) + 1000 * self.worker_index + st.index
        if st.num_recreations == 0:
            return base if st.num_resets == 0 else None
        # A recreated env has a fresh RNG: seed it deterministically, differently each time.
        return base + 7919 * st.num_recreations if st.num_resets == 0 else None

    def _module_info(self, module_id: str, agent: Any, st: _EnvState) -> _ModuleInfo:
        info = self._modules.get(module_id)
        if info is None:
            pipeline = _Pipeline(self.env_to_module_connector, st.env,
                                 st.env.observation_space(agent))
            info = _ModuleInfo(
                module_id, self.module[module_id], pipeline, self.num_envs,
                max(len(st.agents), 1),
                capacity=self.rollout_fragment_length * self.num_envs,
                adapter=_ActionAdapter(self.module[module_id].action_space,
                                       self.normalize_actions, self.clip_actions))
            self._modules[module_id] = info
            if module_id in self._pending_connector_states:
                _set_pipeline_state(pipeline, self._pending_connector_states.pop(module_id))
        return info

    def _first_appearance(self, st: _EnvState, agent: Any, s: int) -> str:
        episode = st.episode
        module_id = self.policy_mapping_fn(agent, episode)
        valid = self.module.policy_module_ids
        if module_id not in valid:
            hint = ""
            if module_id == SHARED_ENCODER_ID or module_id in self.module:
                hint = f" ({module_id!r} is a non-policy module, e.g. a shared encoder)"
            raise ValueError(
                f"policy_mapping_fn mapped agent {agent!r} to module id {module_id!r}, which is "
                f"not a policy module of the MultiRLModule{hint}; valid module ids: {sorted(valid)}")
        st.mod[s] = module_id
        self._agent_eps_counter += 1
        st.eps[s] = (self.worker_index << _ID_SHIFT) | self._agent_eps_counter
        episode.agent_ids.append(agent)
        st.live += 1
        info = self._module_info(module_id, agent, st)
        st.sink[s] = info
        if info.stateful or info.needs_prev_action or info.needs_prev_reward:
            info.ensure_slots(len(st.agents))
            e = st.index
            for k, v in info.initial_state.items():
                info.state_store[k][e, s] = v
            info.prev_reward_store[e, s] = 0.0
            if info.prev_action_store is not None:
                info.prev_action_store[e, s] = 0
        return module_id

    def _new_episode(self, st: _EnvState) -> None:
        self._episode_counter += 1
        st.clear_episode(EpisodeHandle(
            id_=(self.worker_index << _ID_SHIFT) | self._episode_counter,
            env_index=st.index, worker_index=self.worker_index))

    def _reset_env(self, st: _EnvState, collect: Dict[str, _Collect]) -> None:
        """Reset (recreating the env after failures) and queue the first observations."""
        failures = 0
        while True:
            try:
                obs, _infos = st.env.reset(seed=self._env_seed(st))
                st.num_resets += 1
                if not obs:
                    raise RuntimeError(
                        f"env {st.index} returned no observations from reset(); at least one "
                        "agent must act first")
                break
            except Exception as exc:  # noqa: BLE001 - recovered: the env is recreated
                failures += 1
                self._num_env_errors += 1
                logger.warning("env %d (worker %d) failed in reset(): %r; recreating it",
                               st.index, self.worker_index, exc)
                if failures >= MAX_CONSECUTIVE_RESET_FAILURES:
                    raise RuntimeError(
                        f"env {st.index} (worker {self.worker_index}) failed to reset "
                        f"{failures} times in a row after being recreated") from exc
                self._recreate_env(st)
        self._new_episode(st)
        self._queue_observations(st, obs, collect)

    def _recreate_env(self, st: _EnvState) -> None:
        try:
            st.env.close()
        except Exception:  # noqa: BLE001 - a broken env may fail to close
            pass
        st.env = self._create_env()
        st.num_recreations += 1
        st.num_resets = 0
        for agent in getattr(st.env, "possible_agents", []) or []:
            if agent not in st.slot_of:
                st.add_slot(agent)

    def _reset_all(self) -> None:
        for info in self._modules.values():
            info.buffer.clear()
        collect: Dict[str, _Collect] = {}
        for st in self._envs:
            self._reset_env(st, collect)
        self._groups = self._make_groups(collect)
        self._needs_reset_all = False
        self._dropped_eps.clear()
        self._trunc_boot.clear()

    def _queue_observations(self, st: _EnvState, obs: Mapping[Any, Any],
                            collect: Dict[str, _Collect]) -> None:
        """Queue the observations of the agents that act next (skips finished agents)."""
        e = st.index
        slot_of = st.slot_of
        # Local bindings: these lists are only replaced at episode start, never here.
        done, mod, pending, eps = st.done, st.mod, st.pending, st.eps
        for agent, o in obs.items():
            s = slot_of.get(agent)
            if s is None:
                s = st.add_slot(agent)
            if done[s]:
                continue
            module_id = mod[s]
            if module_id is None:
                module_id = self._first_appearance(st, agent, s)
            pending[s] = False
            c = collect.get(module_id)
            if c is None:
                c = collect[module_id] = _Collect()
            if c.last_env is not st:
                c.last_env = st
                c.runs.append((st, len(c.raw)))
            c.raw.append(o)
            c.envs.append(e)
            c.slots.append(s)
            c.agents.append(agent)
            c.eps.append(eps[s])

    def _make_groups(self, collect: Dict[str, _Collect]) -> Dict[str, _Group]:
        groups = {}
        for module_id, c in collect.items():
            if c.raw:
                groups[module_id] = _Group(self._modules[module_id].pipeline(c.raw), c)
        return groups

    def _step(self, explore: bool) -> None:
        """One lockstep step: one module forward pass, then every env steps once."""
        groups = self._groups
        envs = self._envs
        env_actions: List[Dict[Any, Any]] = [{} for _ in envs]
        if groups:
            self._act(groups, explore, env_actions)

        collect: Dict[str, _Collect] = {}
        modules = self._modules
        num_stepped = 0
        for e, st in enumerate(envs):
            try:
                obs, rewards, terms, truncs, _infos = st.env.step(env_actions[e])
            except Exception as exc:  # noqa: BLE001 - recovered: drop the episode, recreate the env
                self._on_env_crash(st, exc, collect)
                continue
            st.ep_len += 1
            num_stepped += 1
            slot_of = st.slot_of
            ret = st.ret
            row_of = st.row
            sink = st.sink
            # Rewards: credited to the agent's last action (possibly an earlier step's).
            for agent, r in rewards.items():
                s = slot_of.get(agent)
                if s is None:
                    s = st.add_slot(agent)
                ret[s] += r
                row = row_of[s]
                if row >= 0:
                    info = sink[s]
                    info.step_rows.append(row)
                    info.step_rewards.append(r)
                    if info.needs_prev_reward:
                        info.prev_reward_store[e, s] += r
            if any(terms.values()) or any(truncs.values()):
                self._on_dones(st, obs, terms, truncs)
            if not st.env.agents:
                self._end_episode(st, obs)
                self._reset_env(st, collect)
                continue
            self._queue_observations(st, obs, collect)
            if st.live == 0:
                self._end_episode(st, obs)
                self._reset_env(st, collect)
        self._num_env_steps_call += num_stepped
        for info in modules.values():
            if info.step_rows:
                # Each row appears once per step (one reward per agent per env step).
                info.buffer.rewards[info.step_rows] += info.step_rewards
                info.step_rows = []
                info.step_rewards = []
        self._groups = self._make_groups(collect)

    def _act(self, groups: Dict[str, _Group], explore: bool,
             env_actions: List[Dict[Any, Any]]) -> None:
        """One forward call for all modules; record rows; fill the env action dicts."""
        modules = self._modules
        fwd: Dict[str, Dict[str, Any]] = {}
        extras: Dict[str, Dict[str, Any]] = {}
        for module_id, g in groups.items():
            info = modules[module_id]
            batch = {Columns.OBS: g.obs_t}
            extra: Dict[str, Any] = {}
            if info.stateful:
                state_in = {k: v[g.env_idx, g.slot_idx] for k, v in info.state_store.items()}
                extra[Columns.STATE_IN] = state_in
                batch[Columns.STATE_IN] = {k: torch.from_numpy(v) for k, v in state_in.items()}
            if info.needs_prev_action:
                prev_a = info.prev_action_store[g.env_idx, g.slot_idx]
                extra[Columns.PREV_ACTIONS] = prev_a
                batch[Columns.PREV_ACTIONS] = torch.from_numpy(prev_a)
            if info.needs_prev_reward:
                prev_r = info.prev_reward_store[g.env_idx, g.slot_idx]
                extra[Columns.PREV_REWARDS] = prev_r
                batch[Columns.PREV_REWARDS] = torch.from_numpy(prev_r)
            fwd[module_id] = batch
            extras[module_id] = extra

        module = self.module
        if explore:
            outputs = module.forward_exploration(fwd)
        else:
            outputs = module.forward_inference(fwd)
        results: Dict[str, Dict[str, Any]] = {}
        generic: List[str] = []
        for module_id in groups:
            info = modules[module_id]
            fast = None
            if self.fast_categorical_sampling and (
                    info.fast_explore if explore else info.fast_greedy):
                fast = _sample_categorical(outputs[module_id], explore, self._np_rng)
            if fast is None:
                generic.append(module_id)
            else:
                results[module_id] = fast
        if generic:
            with self._sampling_context():
                for module_id in generic:
                    results[module_id] = actions_from_outputs(
                        module[module_id], outputs[module_id], explore)

        for module_id, g in groups.items():
            info = modules[module_id]
            res = results[module_id]
            actions = _to_numpy(res[Columns.ACTIONS])
            blocks: Dict[str, Any] = {Columns.OBS: g.obs, Columns.ACTIONS: actions}
            if explore and Columns.ACTION_LOGP in res:
                blocks[Columns.ACTION_LOGP] = _to_numpy(res[Columns.ACTION_LOGP])
            if Columns.ACTION_DIST_INPUTS in res:
                blocks[Columns.ACTION_DIST_INPUTS] = _to_numpy(res[Columns.ACTION_DIST_INPUTS])
            if Columns.VF_PREDS in res:
                blocks[Columns.VF_PREDS] = _to_numpy(res[Columns.VF_PREDS])
            blocks.update(extras[module_id])
            n = len(g.agents)
            r0 = info.buffer.append(n, g.eps, blocks)
            env_acts = info.adapter.to_env(actions)

            if info.stateful:
                state_out = res.get(Columns.STATE_OUT)
                if state_out is None:
                    raise KeyError(
                        f"module {module_id!r} is stateful (get_initial_state() is not empty) "
                        f"but its forward pass returned no {Columns.STATE_OUT!r}")
                for k, v in state_out.items():
                    info.state_store[k][g.env_idx, g.slot_idx] = _to_numpy(v)
            if info.needs_prev_action:
                info.prev_action_store[g.env_idx, g.slot_idx] = info.adapter.env_format_array(actions)
            if info.needs_prev_reward:
                info.prev_reward_store[g.env_idx, g.slot_idx] = 0.0

            runs = g.runs
            for j, (st, a) in enumerate(runs):
                b = runs[j + 1][1] if j + 1 < len(runs) else n
                env_actions[st.index].update(zip(g.agents[a:b], env_acts[a:b]))
                row_of, pending = st.row, st.pending
                for s, row in zip(g.slots[a:b], range(r0 + a, r0 + b)):
                    row_of[s] = row
                    pending[s] = True

    def _on_dones(self, st: _EnvState, obs: Mapping[Any, Any], terms: Mapping[Any, Any],
                  truncs: Mapping[Any, Any]) -> None:
        for agent in {**terms, **truncs}:
            terminated = bool(terms.get(agent, False))
            truncated = bool(truncs.get(agent, False))
            if not (terminated or truncated):
                continue
            s = st.slot_of.get(agent)
            if s is None or st.mod[s] is None or st.done[s]:
                continue
            st.done[s] = True
            st.live -= 1
            row = st.row[s]
            if row < 0:
                continue
            info = self._modules[st.mod[s]]
            st.pending[s] = False
            if terminated:
                info.buffer.terminateds[row] = True
            else:
                info.buffer.truncateds[row] = True
                self._store_trunc_bootstrap(info, st, s, row, obs.get(agent))

    def _store_trunc_bootstrap(self, info: _ModuleInfo, st: _EnvState, s: int, row: int,
                               raw_obs: Any) -> None:
        """Keep the (post-connector) final observation of a truncated agent for bootstrapping."""
        if raw_obs is not None:
            boot_obs = info.pipeline([raw_obs])
        else:  # the env did not return a final observation: fall back to the last one seen
            boot_obs = take_rows(info.buffer.columns[Columns.OBS], slice(row, row + 1))
        state = None
        if info.stateful:
            state = {k: v[st.index, s][None].copy() for k, v in info.state_store.items()}
        self._trunc_boot[st.eps[s]] = (boot_obs, state)

    def _end_episode(self, st: _EnvState, obs: Mapping[Any, Any]) -> None:
        # Agents the env dropped without a done flag count as truncated.
        for s, module_id in enumerate(st.mod):
            if module_id is None or st.done[s]:
                continue
            st.done[s] = True
            row = st.row[s]
            if row >= 0:
                info = self._modules[module_id]
                info.buffer.truncateds[row] = True
                st.pending[s] = False
                self._store_trunc_bootstrap(info, st, s, row, obs.get(st.agents[s]))
        st.live = 0
        agent_returns: Dict[Any, float] = {}
        module_returns: Dict[str, float] = {}
        for s, module_id in enumerate(st.mod):
            if module_id is None:
                continue
            agent_returns[st.agents[s]] = st.ret[s]
            module_returns[module_id] = module_returns.get(module_id, 0.0) + st.ret[s]
        self._completed.append((float(sum(st.ret)), st.ep_len, agent_returns, module_returns))
        st.consecutive_crashes = 0
        self._num_episodes_lifetime += 1

    def _on_env_crash(self, st: _EnvState, exc: BaseException, collect: Dict[str, _Collect]) -> None:
        self._num_env_errors += 1
        self._num_episodes_dropped_call += 1
        self._num_episodes_dropped_lifetime += 1
        logger.warning("env %d (worker %d) raised in step(): %r; dropping its episode and "
                       "recreating the env", st.index, self.worker_index, exc)
        self._dropped_eps.update(st.episode_eps_ids())
        st.consecutive_crashes += 1
        if st.consecutive_crashes >= MAX_CONSECUTIVE_EPISODE_CRASHES:
            raise RuntimeError(
                f"env {st.index} (worker {self.worker_index}) crashed in {st.consecutive_crashes} "
                "episodes in a row without completing one; giving up (last error above)") from exc
        self._recreate_env(st)
        self._reset_env(st, collect)

    # ---------------------------------------------------------------- batches
    def _build_batches(self, explore: bool, discard: set) -> Dict[str, Dict[str, Any]]:
        # Where each live agent-episode's next observation is: queued to act
        # (complete last step) or its own held-back action (pending).
        queued: Dict[int, Tuple[str, int]] = {}
        for module_id, g in self._groups.items():
            for pos, eps in enumerate(g.eps.tolist()):
                queued[eps] = (module_id, pos)
        held_back: Dict[str, List[Tuple[_EnvState, int]]] = {}
        held_row: Dict[int, int] = {}
        excluded = set(self._dropped_eps) | discard
        for st in self._envs:
            for s, module_id in enumerate(st.mod):
                if module_id is not None and st.pending[s] and st.eps[s] not in excluded:
                    held_back.setdefault(module_id, []).append((st, s))
                    held_row[st.eps[s]] = st.row[s]

        batches: Dict[str, Dict[str, Any]] = {}
        for module_id, info in self._modules.items():
            buf = info.buffer
            n = buf.n
            if n == 0:
                continue
            keep = np.ones(n, bool)
            carry = [st.row[s] for st, s in held_back.get(module_id, [])]
            if carry:
                keep[np.asarray(carry, dtype=np.int64)] = False
            if excluded:
                keep &= ~np.isin(buf.eps_id[:n], np.fromiter(excluded, np.int64, len(excluded)))
            idx = np.flatnonzero(keep)
            if len(idx):
                order = idx[np.argsort(buf.eps_id[idx], kind="stable")]
                batches[module_id] = self._module_batch(
                    module_id, info, order, explore, queued, held_row)
            # Held-back actions move to the front of the buffer for the next call.
            new_rows = buf.keep_rows(carry)
            for (st, s), r in zip(held_back.get(module_id, []), new_rows.tolist()):
                st.row[s] = r
        self._dropped_eps.clear()
        self._trunc_boot.clear()
        return batches

    def _module_batch(self, module_id: str, info: _ModuleInfo, order: np.ndarray, explore: bool,
                      queued: Dict[int, Tuple[str, int]], held_row: Dict[int, int]) -> Dict[str, Any]:
        buf = info.buffer
        batch: Dict[str, Any] = {}
        for name in buf.columns:
            if name == Columns.ACTION_LOGP and not explore:
                continue
            batch[name] = buf.gather(name, order)
        batch[Columns.REWARDS] = buf.rewards[order]
        batch[Columns.TERMINATEDS] = buf.terminateds[order]
        batch[Columns.TRUNCATEDS] = buf.truncateds[order]
        eps_sorted = buf.eps_id[order]
        batch[Columns.EPS_ID] = eps_sorted
        starts = np.flatnonzero(np.r_[True, eps_sorted[1:] != eps_sorted[:-1]])
        seq_lens = np.diff(np.r_[starts, len(order)]).astype(np.int64)
        batch[Columns.SEQ_LENS] = seq_lens
        last = starts + seq_lens - 1

        obs_all = batch[Columns.OBS]
        num_segments = len(starts)
        boot_obs = zeros_like_rows(obs_all, num_segments)
        state_col = batch.get(Columns.STATE_IN)
        boot_state = zeros_like_rows(state_col, num_segments) if state_col is not None else None
        terminateds = batch[Columns.TERMINATEDS]
        truncateds = batch[Columns.TRUNCATEDS]
        group = self._groups.get(module_id)
        for i, (eps, r) in enumerate(zip(eps_sorted[starts].tolist(), last.tolist())):
            if terminateds[r]:
                continue  # bootstrap value is 0: zeros are fine
            src_obs = src_state = None
            if truncateds[r]:
                src_obs, src_state = self._trunc_boot.get(eps, (None, None))
            elif eps in held_row:  # next obs = the obs of the held-back action
                row = held_row[eps]
                src_obs = take_rows(buf.columns[Columns.OBS], slice(row, row + 1))
                if state_col is not None:
                    src_state = take_rows(buf.columns[Columns.STATE_IN], slice(row, row + 1))
            elif eps in queued and group is not None and queued[eps][0] == module_id:
                pos = queued[eps][1]
                src_obs = take_rows(group.obs, slice(pos, pos + 1))
                if state_col is not None:
                    e, s = group.envs[pos], group.slots[pos]
                    src_state = {k: v[e, s][None] for k, v in info.state_store.items()}
            if src_obs is None:  # no later observation known: repeat the last one
                src_obs = take_rows(obs_all, slice(r, r + 1))
            _assign_row(boot_obs, i, src_obs)
            if boot_state is not None and src_state is not None:
                _assign_row(boot_state, i, src_state)
        batch[BOOTSTRAP_OBS] = boot_obs
        if boot_state is not None:
            batch[BOOTSTRAP_STATE_IN] = boot_state
        return batch

    def _metrics(self, batches: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
        module_steps = {mid: int(len(b[Columns.EPS_ID])) for mid, b in batches.items()}
        agent_steps = sum(module_steps.values())
        self._num_env_steps_lifetime += self._num_env_steps_call
        self._num_agent_steps_lifetime += agent_steps
        metrics: Dict[str, Any] = {
            "num_episodes": len(self._completed),
            "num_env_steps_sampled": self._num_env_steps_call,
            "num_agent_steps_sampled": agent_steps,
            "num_module_steps_sampled": module_steps,
            "num_env_steps_sampled_lifetime": self._num_env_steps_lifetime,
            "num_agent_steps_sampled_lifetime": self._num_agent_steps_lifetime,
            "num_env_errors": self._num_env_errors,
            "num_episodes_dropped": self._num_episodes_dropped_call,
        }
        counted = self._completed
        if self.metrics_num_episodes is not None:
            counted = counted[-self.metrics_num_episodes:]
        if counted:
            metrics["num_episodes_for_metrics"] = len(counted)
        metrics.update(episode_metrics(counted))
        return metrics


def _set_pipeline_state(pipeline: _Pipeline, piece_states: Sequence[Any]) -> None:
    for piece, piece_state in zip(pipeline.pieces, piece_states):
        if hasattr(piece, "set_state"):
            piece.set_state(piece_state)


def _assign_row(dst: Any, i: int, src: Any) -> None:
    if isinstance(dst, np.ndarray):
        dst[i] = src[0]
    elif isinstance(dst, Mapping):
        for k, v in dst.items():
            _assign_row(v, i, src[k])
    else:
        for j, v in enumerate(dst):
            _assign_row(v, i, src[j])


def episode_metrics(
    completed: Sequence[Tuple[float, int, Mapping[Any, float], Mapping[str, float]]],
) -> Dict[str, Any]:
    """Return statistics of completed episodes; ``{}`` when there are none (never NaN).

    ``completed`` holds ``(episode_return, episode_len, {agent: return},
    {module: return})`` per episode. The per-agent / per-module counts are
    returned too (``agent_episode_count``, ``module_episode_count``) so that
    results of several runners can be merged with the right weights.
    """
    if not completed:
        return {}
    returns = np.asarray([c[0] for c in completed], dtype=np.float64)
    lens = np.asarray([c[1] for c in completed], dtype=np.float64)
    agent_sum: Dict[Any, float] = {}
    agent_cnt: Dict[Any, int] = {}
    module_sum: Dict[str, float] = {}
    module_cnt: Dict[str, int] = {}
    for _, _, agents, modules in completed:
        for a, r in agents.items():
            agent_sum[a] = agent_sum.get(a, 0.0) + r
            agent_cnt[a] = agent_cnt.get(a, 0) + 1
        for m, r in modules.items():
            module_sum[m] = module_sum.get(m, 0.0) + r
            module_cnt[m] = module_cnt.get(m, 0) + 1
    return {
        "episode_return_mean": float(returns.mean()),
        "episode_return_min": float(returns.min()),
        "episode_return_max": float(returns.max()),
        "episode_len_mean": float(lens.mean()),
        "agent_episode_return_mean": {a: agent_sum[a] / agent_cnt[a] for a in agent_sum},
        "module_episode_return_mean": {m: module_sum[m] / module_cnt[m] for m in module_sum},
        "agent_episode_count": agent_cnt,
        "module_episode_count": module_cnt,
    }
