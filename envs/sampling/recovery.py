"""Env recovery: seeded resets, recreation after crashes, hang deadlines, bad values.

A sampler must survive a bad env without losing the run: an env that raises
in ``step()``, hangs, or returns NaN/inf loses its current episode (dropped
from the batch, counted) and is recreated or reset; one that fails again and
again is a bug and stops the run with the first error.

Every episode starts from ``reset(seed=...)`` with a seed derived from
(runner seed, worker, env index, episode number), so an episode is
reproducible from its seed and its actions. That is what exact resume
replays (``envs.sampling.sampling_state``).
"""
from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from typing import Any, Dict, Iterator, List, Mapping, Optional

import numpy as np

from envs.sampling.episode import ID_SHIFT, EpisodeHandle
from envs.sampling.slots import Collect, EnvState

logger = logging.getLogger("envs.sampling")

#: How often the env creator may fail in a row before the runner gives up.
MAX_CONSECUTIVE_CREATOR_FAILURES = 3
#: How often recreating + resetting one env may fail in a row before the runner gives up.
MAX_CONSECUTIVE_RESET_FAILURES = 5
#: How many episodes in a row one env may crash (with no episode completing in
#: between) before the runner gives up: a deterministic bug would otherwise loop forever.
MAX_CONSECUTIVE_EPISODE_CRASHES = 20
#: What a runner does with NaN/inf observations or rewards.
NONFINITE_MODES = ("raise", "drop_episode")


class EnvTimeoutError(RuntimeError):
    """An env call (``step`` or ``reset``) did not return within ``sample_timeout_s``."""


class NonFiniteEnvValueError(ValueError):
    """An env returned a NaN or infinite observation or reward."""


_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def episode_seed(base: int, worker_index: int, env_index: int, episode: int) -> int:
    """The ``reset`` seed of one episode: a 32-bit hash of (base, worker, env, episode).

    SplitMix64 chained over the four numbers: well-mixed, distinct streams per
    episode, and cheap (a reset happens every episode; numpy's SeedSequence
    would cost several microseconds more each time).
    """
    h = _splitmix64(int(base) & _MASK64)
    for part in (worker_index, env_index, episode):
        h = _splitmix64(h ^ (int(part) & _MASK64))
    return h >> 32


class EnvCallDeadline:
    """A SIGALRM deadline around env calls, so a hanging env can be recovered.

    Only the main thread can receive signals, so the deadline is active only
    there (a local runner in a script, or a worker process); elsewhere it is
    a no-op. The alarm is armed once per lockstep step (all envs' ``step()``)
    or reset, and raises only while an env call is running: if time runs out
    in the runner's own bookkeeping it retries a moment later. A hang inside C
    code that never returns to Python cannot be interrupted this way; worker
    processes have a watchdog for that (``envs.sampling.worker``).
    """

    def __init__(self, timeout_s: Optional[float]) -> None:
        self.timeout_s = timeout_s
        self.active = False
        self.in_env_call = False
        #: ``time.monotonic()`` when the current lockstep step or reset began (None: none running);
        #: the worker watchdog reads it.
        self.call_started: Optional[float] = None

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        usable = (self.timeout_s is not None and hasattr(signal, "setitimer")
                  and threading.current_thread() is threading.main_thread())
        if not usable:
            yield
            return
        # Someone else's alarm (e.g. pytest-timeout) is paused for the call and resumed after.
        their_delay, their_interval = signal.getitimer(signal.ITIMER_REAL)
        started = time.monotonic()
        previous = signal.signal(signal.SIGALRM, self._on_alarm)
        self.active = True
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            self.active = False
            if their_delay > 0:
                remaining = max(their_delay - (time.monotonic() - started), 1e-3)
                signal.setitimer(signal.ITIMER_REAL, remaining, their_interval)

    def _on_alarm(self, signum: int, frame: Any) -> None:
        if self.in_env_call:
            self.in_env_call = False
            raise EnvTimeoutError(f"no return within sample_timeout_s={self.timeout_s} s")
        signal.setitimer(signal.ITIMER_REAL, 0.05)  # in our own code: try again shortly

    def arm(self) -> None:
        """Start the clock for one lockstep step (or reset)."""
        self.call_started = time.monotonic()
        if self.active:
            signal.setitimer(signal.ITIMER_REAL, self.timeout_s)

    def disarm(self) -> None:
        self.call_started = None
        if self.active:
            signal.setitimer(signal.ITIMER_REAL, 0)


def all_finite(x: Any) -> bool:
    """Whether every float leaf of an observation (or a stacked batch of them) is finite."""
    if isinstance(x, np.ndarray):
        return x.dtype.kind not in "fc" or bool(np.isfinite(x).all())
    if isinstance(x, Mapping):
        return all(all_finite(v) for v in x.values())
    if isinstance(x, tuple):
        return all(all_finite(v) for v in x)
    return all_finite(np.asarray(x))


def nonfinite_observation(obs: Mapping[Any, Any]) -> Optional[Any]:
    """The first agent whose (float) observation holds NaN or inf, else None."""
    for agent, o in obs.items():
        if not all_finite(o):
            return agent
    return None


class EnvRecovery:
    """Runner mix-in: creating, resetting and recovering envs."""

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

    def _new_episode(self, st: EnvState) -> None:
        self._episode_counter += 1
        st.clear_episode(EpisodeHandle(
            id_=(self.worker_index << ID_SHIFT) | self._episode_counter,
            env_index=st.index, worker_index=self.worker_index))

    def _reset_env(self, st: EnvState, collect: Dict[str, Collect]) -> None:
        """Reset with the next episode seed (recreating the env after failures) and
        queue the first observations."""
        failures = 0
        deadline = self._deadline
        while True:
            seed = episode_seed(self.seed_base, self.worker_index, st.index, st.episodes_started)
            st.episodes_started += 1
            try:
                deadline.arm()
                deadline.in_env_call = True
                try:
                    obs, _infos = st.env.reset(seed=seed)
                finally:
                    deadline.in_env_call = False
                    deadline.arm()  # a fresh clock for the rest of the caller's step; the caller disarms
                if not obs:
                    raise RuntimeError(
                        f"env {st.index} returned no observations from reset(); at least one "
                        "agent must act first")
                bad_agent = nonfinite_observation(obs)
                if bad_agent is not None:
                    if self.nonfinite_env_values == "raise":
                        self._nonfinite(st, "observation", bad_agent, "reset()")
                    raise RuntimeError(f"non-finite observation for agent {bad_agent!r} from reset()")
                break
            except NonFiniteEnvValueError:
                raise
            except Exception as exc:  # noqa: BLE001 - recovered: the env is recreated
                failures += 1
                self._num_env_errors += 1
                if isinstance(exc, EnvTimeoutError):
                    self._num_env_hangs += 1
                logger.warning("env %d (worker %d) failed in reset(): %r; recreating it",
                               st.index, self.worker_index, exc)
                if failures >= MAX_CONSECUTIVE_RESET_FAILURES:
                    raise RuntimeError(
                        f"env {st.index} (worker {self.worker_index}) failed to reset "
                        f"{failures} times in a row after being recreated") from exc
                self._recreate_env(st)
        st.reset_seed = seed
        st.action_log = []
        st.last_obs = obs
        self._new_episode(st)
        self._queue_observations(st, obs, collect)

    def _recreate_env(self, st: EnvState) -> None:
        try:
            st.env.close()
        except Exception:  # noqa: BLE001 - a broken env may fail to close
            pass
        st.env = self._create_env()
        st.num_recreations += 1
        for agent in getattr(st.env, "possible_agents", []) or []:
            if agent not in st.slot_of:
                st.add_slot(agent)

    def _reset_all(self) -> None:
        for info in self._modules.values():
            info.buffer.clear()
        collect: Dict[str, Collect] = {}
        try:
            for st in self._envs:
                self._reset_env(st, collect)
        finally:
            self._deadline.disarm()
        self._groups = self._make_groups(collect)
        self._needs_reset_all = False
        self._dropped_eps.clear()
        self._trunc_boot.clear()

    def _nonfinite(self, st: EnvState, what: str, agent: Any, where: str) -> None:
        """Raise :class:`NonFiniteEnvValueError` naming the env, agent and step."""
        raise NonFiniteEnvValueError(
            f"env {st.index} (worker {self.worker_index}) returned a non-finite {what} for agent "
            f"{agent!r} in {where} at episode step {st.ep_len} (episode id {st.episode.id_ if st.episode else None}); "
            f"with .env_runners(nonfinite_env_values='drop_episode') such episodes are dropped instead")

    def _drop_episode(self, st: EnvState, detail: str, collect: Dict[str, Collect], *,
                      recreate: bool, cause: Optional[BaseException] = None, hang: bool = False) -> None:
        """Drop the env's current episode from the batch, then recreate or reset the env."""
        self._num_env_errors += 1
        self._num_episodes_dropped_call += 1
        self._num_episodes_dropped_lifetime += 1
        if hang:
            self._num_env_hangs += 1
        logger.warning("env %d (worker %d) %s; dropping its episode and %s the env", st.index,
                       self.worker_index, detail, "recreating" if recreate else "resetting")
        self._dropped_eps.update(st.episode_eps_ids())
        st.consecutive_crashes += 1
        if st.consecutive_crashes >= MAX_CONSECUTIVE_EPISODE_CRASHES:
            raise RuntimeError(
                f"env {st.index} (worker {self.worker_index}) failed in {st.consecutive_crashes} "
                f"episodes in a row without completing one ({detail}); giving up") from cause
        if recreate:
            self._recreate_env(st)
        self._reset_env(st, collect)

    def _on_env_crash(self, st: EnvState, exc: BaseException, collect: Dict[str, Collect]) -> None:
        if isinstance(exc, EnvTimeoutError):
            self._drop_episode(st, f"hung in step() for more than {self.sample_timeout_s} s", collect,
                               recreate=True, cause=exc, hang=True)
        else:
            self._drop_episode(st, f"raised in step(): {exc!r}", collect, recreate=True, cause=exc)
