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
   (``envs.sampling.buffers.ModuleStepBuffer``); rewards that arrive later are
   added to the row of the agent's last action;
4. every env steps; finished episodes are recorded and their env reset.

At the end of ``sample()`` the rows are re-ordered so that each agent
trajectory segment (the steps of one agent in one episode within this call)
is contiguous. The batch format is described in :meth:`MultiAgentEnvRunner.sample`.

The class is assembled from mix-ins, one job per file: ``lockstep`` (the
step loop), ``recovery`` (resets, crashes, hangs, NaN/inf), ``batch_builder``
(segments and metrics) and ``sampling_state`` (exact resume without pickle).
"""
from __future__ import annotations

import contextlib
import logging
import math
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import gymnasium as gym
import numpy as np
import torch

from marl.core.module_spaces import fill_spaces
from marl.core.multi_rl_module import MultiRLModule, MultiRLModuleSpec
from marl.core.nested import state_to_torch
from marl.core.rl_module import RLModule, RLModuleSpec

from envs.sampling.batch_builder import BatchBuilder
from envs.sampling.episode import PolicyMappingFn, default_policy_mapping_fn
from envs.sampling.global_inputs import GlobalInput
from envs.sampling.lockstep import LockstepLoop
from envs.sampling.pipelines import infer_module_spaces, set_pipeline_state
from envs.sampling.recovery import NONFINITE_MODES, EnvCallDeadline, EnvRecovery
from envs.sampling.sampling_state import SamplingState
from envs.sampling.slots import EnvState, Group, ModuleInfo

logger = logging.getLogger("envs.sampling")

#: Default ``sample_timeout_s`` (RLlib's): the longest one lockstep step or reset may take.
DEFAULT_SAMPLE_TIMEOUT_S = 60.0


class MultiAgentEnvRunner(LockstepLoop, EnvRecovery, BatchBuilder, SamplingState):
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
        seed: every episode starts with ``reset(seed=...)``, the seed derived
            from (seed, worker_index, env index, episode number of that env)
            (``envs.sampling.recovery.episode_seed``), so each episode can be
            replayed from its seed and actions (exact resume). Action sampling
            uses private RNGs seeded from ``seed + 1000 * worker_index``: a
            ``torch.Generator`` (swapped in around ``actions_from_outputs``)
            and a numpy ``Generator`` (the fast categorical sampler). The
            global torch/numpy RNGs are untouched and a module's own forward
            pass runs on the global torch RNG. Same seed and same weights give
            identical batches. None: a random seed is drawn from OS entropy
            (``self.seed_base``), so the run is still resumable exactly.
        worker_index: 0 for a local runner, 1.. in worker processes.
        explore: default for ``sample(explore=None)``.
        sample_timeout_s: the longest one lockstep step (every env's
            ``step()``) or one ``reset()`` may take; an env still inside its
            call then is treated as hung: its episode is dropped and the env
            recreated (counted in ``num_env_hangs``). Enforced with SIGALRM in
            the main thread (a script's local runner, worker processes); None
            switches it off.
        nonfinite_env_values: ``"raise"`` (default): a NaN/inf observation or
            reward raises ``NonFiniteEnvValueError`` naming the env, agent and
            step; ``"drop_episode"``: that episode is dropped (counted in
            ``num_episodes_dropped``) and the env reset.
        global_input: None (default), or ``"auto"``, ``"state"`` or
            ``"joint_obs"``: record the env's global input per step for a
            centralised critic (``GLOBAL_OBS`` and ``AGENT_INDEX`` per row,
            ``BOOTSTRAP_GLOBAL_OBS`` per segment; see
            ``envs.sampling.global_inputs``).
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
        sample_timeout_s: Optional[float] = DEFAULT_SAMPLE_TIMEOUT_S,
        nonfinite_env_values: str = "raise",
        global_input: Optional[str] = None,
    ) -> None:
        if not callable(env_creator):
            raise TypeError(f"env_creator must be callable (env_config -> env), got {env_creator!r}")
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be an int >= 1, got {num_envs!r}")
        if (isinstance(rollout_fragment_length, bool) or not isinstance(rollout_fragment_length, int)
                or rollout_fragment_length < 1):
            raise ValueError(
                f"rollout_fragment_length must be an int >= 1, got {rollout_fragment_length!r}")
        if sample_timeout_s is not None and not (isinstance(sample_timeout_s, (int, float))
                                                 and not isinstance(sample_timeout_s, bool)
                                                 and sample_timeout_s > 0):
            raise ValueError(f"sample_timeout_s must be None or a number > 0, got {sample_timeout_s!r}")
        if nonfinite_env_values not in NONFINITE_MODES:
            raise ValueError(f"nonfinite_env_values must be one of {list(NONFINITE_MODES)}, "
                             f"got {nonfinite_env_values!r}")
        self.sample_timeout_s = None if sample_timeout_s is None else float(sample_timeout_s)
        self.nonfinite_env_values = nonfinite_env_values
        self._deadline = EnvCallDeadline(self.sample_timeout_s)
        self.env_creator = env_creator
        self.env_config = dict(env_config or {})
        self.policy_mapping_fn = policy_mapping_fn or default_policy_mapping_fn
        self.num_envs = num_envs
        self.rollout_fragment_length = rollout_fragment_length
        self.env_to_module_connector = env_to_module_connector
        self.seed = seed
        #: The seed every episode and sampling seed derives from (``seed``, or drawn once).
        self.seed_base = int(seed) if seed is not None else int(np.random.SeedSequence().generate_state(1)[0])
        self.worker_index = int(worker_index)
        self.explore = bool(explore)
        self.normalize_actions = bool(normalize_actions)
        self.clip_actions = bool(clip_actions)
        # Episode statistics of a call cover at most its latest N episodes
        # (RLlib: metrics_num_episodes_for_smoothing / number of runners).
        self.metrics_num_episodes = None if metrics_num_episodes is None else max(1, int(metrics_num_episodes))

        self._envs: List[EnvState] = [
            EnvState(i, self._create_env()) for i in range(num_envs)
        ]
        self._spaces = infer_module_spaces(
            self._envs[0].env, self.policy_mapping_fn, env_to_module_connector)
        #: Records the env's global input per step for a centralised critic (MAPPO).
        self._global_input: Optional[GlobalInput] = (
            GlobalInput(global_input, self._envs[0].env) if global_input is not None else None)

        self.module: Optional[MultiRLModule] = None
        if module is not None:
            self.set_module(module)
        elif module_spec is not None:
            self.set_module(self._build_module(module_spec))

        # Private RNGs for action sampling (the global ones stay untouched): torch's
        # for modules sampled through actions_from_outputs, numpy's for the fast
        # categorical sampler.
        sampling_seed = self.seed_base + 1000 * self.worker_index
        self._rng: Optional[torch.Generator] = torch.Generator().manual_seed(sampling_seed)
        self._np_rng = np.random.default_rng(sampling_seed)

        self._modules: Dict[str, ModuleInfo] = {}
        # Which (env index, agent) first built each module's pipeline (exact resume rebuilds it so).
        self._module_origin: Dict[str, Tuple[int, Any]] = {}
        self._groups: Dict[str, Group] = {}
        self._pending_connector_states: Dict[str, List[Any]] = {}
        self._needs_reset_all = True
        self._episode_counter = 0
        self._agent_eps_counter = 0
        # Per call: agent-episodes whose rows are dropped (env crashed), and
        # truncation bootstraps {eps_id: (obs [1, ...], state {k: [1, ...]} | None)}.
        self._dropped_eps: set = set()
        self._trunc_boot: Dict[int, Tuple[Any, Any, Any]] = {}
        self._completed: List[Tuple[float, int, Dict[Any, float], Dict[str, float]]] = []
        self._num_env_steps_call = 0
        self._num_episodes_dropped_call = 0
        # Lifetime counters.
        self._num_env_steps_lifetime = 0
        self._num_agent_steps_lifetime = 0
        self._num_episodes_lifetime = 0
        self._num_env_errors = 0
        self._num_episodes_dropped_lifetime = 0
        self._num_env_hangs = 0

    # ------------------------------------------------------------ module setup
    def _build_module(self, spec: Any) -> RLModule:
        if isinstance(spec, RLModuleSpec):
            spec = MultiRLModuleSpec(rl_module_specs=spec)
        spec = spec.copy()
        ids = list(self._spaces)
        specs = spec.module_specs(ids)
        for module_id, sub in specs.items():
            fill_spaces(sub, module_id, self._spaces, required=False)
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
        self._module_origin = {}
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
        self.module.set_state(state_to_torch(weights))

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
            "num_env_hangs": self._num_env_hangs,
        }
        if self.module is not None:
            state["rl_module"] = self.module.get_state()
        # States not applied yet (their module has not appeared) are kept too.
        connector_states = {k: list(v) for k, v in self._pending_connector_states.items()}
        for module_id, info in self._modules.items():
            connector_states[module_id] = [
                p.get_state() if hasattr(p, "get_state") else {} for p in info.pipeline.pieces]
        state["env_to_module"] = connector_states
        return state

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`get_state` returned (missing keys are left alone)."""
        if "rl_module" in state:
            self._require_module()
            self.module.set_state(state_to_torch(state["rl_module"]))
        self._num_env_steps_lifetime = int(state.get("num_env_steps_sampled_lifetime",
                                                     self._num_env_steps_lifetime))
        self._num_agent_steps_lifetime = int(state.get("num_agent_steps_sampled_lifetime",
                                                       self._num_agent_steps_lifetime))
        self._num_episodes_lifetime = int(state.get("num_episodes_lifetime", self._num_episodes_lifetime))
        self._num_env_errors = int(state.get("num_env_errors", self._num_env_errors))
        self._num_episodes_dropped_lifetime = int(state.get(
            "num_episodes_dropped_lifetime", self._num_episodes_dropped_lifetime))
        self._num_env_hangs = int(state.get("num_env_hangs", self._num_env_hangs))
        for module_id, piece_states in (state.get("env_to_module") or {}).items():
            info = self._modules.get(module_id)
            if info is None:  # pipeline not built yet: applied when the module first appears
                self._pending_connector_states[module_id] = list(piece_states)
                continue
            set_pipeline_state(info.pipeline, piece_states)

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

        with self._deadline.installed():
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
