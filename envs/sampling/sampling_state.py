"""Exact resume without pickle: a runner's in-flight sampling state as JSON and arrays.

Between two ``sample()`` calls a runner holds episodes in progress. Pickling
the envs would capture them, but loading a pickle runs code, so instead:

- every episode starts with ``reset(seed=...)`` from a derived seed and the
  runner logs the env actions since, so an env's state is *replayed* on
  restore (reset with that seed, step the same actions); a digest of the last
  observations proves the replay reached the same state, and if it did not
  (an env that is not deterministic given seed and actions) the restore says
  so and starts fresh episodes instead;
- the runner's own bookkeeping (agent slots, returns so far, held-back rows,
  recurrent states, the queued next observations, RNG states, counters) is
  plain JSON plus numpy arrays (stored as safetensors).

A restore into a runner whose setup differs (other ``num_envs``, env config,
mapping function, connectors or module ids) cannot be exact either: it keeps
the counters and RNGs and starts fresh episodes, with a warning naming what
changed.
"""
from __future__ import annotations

import hashlib
import logging
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch

from marl.core.nested import flatten_nested, unflatten_nested

from envs.sampling.episode import EpisodeHandle
from envs.sampling.slots import Collect, Group

logger = logging.getLogger("envs.sampling")

FORMAT_VERSION = 1
_JSON_SCALARS = (str, int)


class NotResumable(Exception):
    """The runner's state cannot be stored without pickle (the message says why)."""


# ------------------------------------------------------------------ encoding
def encode_value(v: Any) -> Any:
    """An env action (numpy scalars/arrays, dicts, tuples) as JSON that decodes to equal types."""
    if isinstance(v, np.ndarray):
        return {"nd": v.dtype.str, "shape": list(v.shape), "data": v.ravel().tolist()}
    if isinstance(v, np.generic):
        return {"np": v.dtype.str, "v": v.item()}
    if isinstance(v, dict):
        return {"dict": [[encode_key(k), encode_value(x)] for k, x in v.items()]}
    if isinstance(v, tuple):
        return {"tuple": [encode_value(x) for x in v]}
    if isinstance(v, list):
        return {"list": [encode_value(x) for x in v]}
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    raise NotResumable(f"an env action of type {type(v).__name__} ({v!r}) cannot be stored as JSON")


def decode_value(v: Any) -> Any:
    if not isinstance(v, dict):
        return v
    if "nd" in v:
        return np.asarray(v["data"], dtype=np.dtype(v["nd"])).reshape(v["shape"])
    if "np" in v:
        return np.dtype(v["np"]).type(v["v"])
    if "dict" in v:
        return {decode_key(k): decode_value(x) for k, x in v["dict"]}
    if "tuple" in v:
        return tuple(decode_value(x) for x in v["tuple"])
    return [decode_value(x) for x in v["list"]]


def encode_key(agent: Any) -> Any:
    """Agent ids are strings or ints (PettingZoo); anything else cannot round-trip JSON."""
    if isinstance(agent, bool) or not isinstance(agent, _JSON_SCALARS + (np.integer,)):
        raise NotResumable(f"agent id {agent!r} ({type(agent).__name__}) is not a str or int")
    return int(agent) if isinstance(agent, np.integer) else agent


def decode_key(agent: Any) -> Any:
    return agent


def observation_digest(obs: Any) -> str:
    """sha256 of a ``{agent: observation}`` dict (dtypes, shapes and bytes of every leaf)."""
    h = hashlib.sha256()

    def leaf(x: Any) -> None:
        if isinstance(x, dict):
            for k in x:
                h.update(repr(k).encode())
                leaf(x[k])
        elif isinstance(x, (tuple, list)):
            for v in x:
                leaf(v)
        else:
            a = np.ascontiguousarray(np.asarray(x))
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.tobytes())

    leaf(obs)
    return h.hexdigest()


def _name(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', type(obj).__qualname__)}"


# ------------------------------------------------------------------- mix-in
class SamplingState:
    """Runner mix-in: ``get_sampling_state`` / ``set_sampling_state`` for exact resume."""

    def _sampling_fingerprint(self) -> Dict[str, Any]:
        """What must be equal for a saved sampling state to continue in this runner."""
        return {
            "num_envs": self.num_envs,
            "worker_index": self.worker_index,
            "env_creator": _name(self.env_creator),
            "env_config": repr(sorted(self.env_config.items(), key=lambda kv: str(kv[0]))),
            # A mapping restored as its recorded table (marl.algorithms.config_codec) names its original.
            "policy_mapping_fn": getattr(self.policy_mapping_fn, "original", "") or _name(self.policy_mapping_fn),
            "env_to_module_connector": _name(self.env_to_module_connector),
            "module_ids": sorted(self.module.keys()) if self.module is not None else [],
        }

    def get_sampling_state(self) -> Tuple[Optional[Dict[str, Any]], Dict[str, np.ndarray], Optional[str]]:
        """``(json, arrays, None)``, or ``(None, {}, reason)`` when it cannot be stored."""
        try:
            return self._collect_sampling_state()
        except NotResumable as exc:
            return None, {}, f"worker {self.worker_index}: {exc}"

    def _collect_sampling_state(self) -> Tuple[Dict[str, Any], Dict[str, np.ndarray], None]:
        arrays: Dict[str, np.ndarray] = {"rng/torch": self._rng.get_state().numpy().copy()}
        data: Dict[str, Any] = {
            "format": FORMAT_VERSION,
            "fingerprint": self._sampling_fingerprint(),
            "seed_base": self.seed_base,
            "numpy_rng": self._np_rng.bit_generator.state,
            "episode_counter": self._episode_counter,
            "agent_eps_counter": self._agent_eps_counter,
            "lifetime": {k: v for k, v in self.get_state().items() if k.startswith("num_")},
            "envs_started": [st.episodes_started for st in self._envs],
            "in_flight": not self._needs_reset_all,
        }
        if self._needs_reset_all:
            return data, arrays, None
        data["modules"] = []
        for module_id, info in self._modules.items():
            env_index, agent = self._module_origin[module_id]
            m = f"modules/{module_id}"
            buf = info.buffer
            n = buf.n
            entry = {
                "id": module_id, "env": env_index, "agent": encode_key(agent), "rows": n,
                "columns": {name: flatten_nested(f"{m}/buffer/{name}", buf.column(name), arrays)
                            for name in buf.columns},
                "state_store": {k: flatten_nested(f"{m}/state/{k}", v, arrays) for k, v in info.state_store.items()},
            }
            for name in buf.FIXED:
                arrays[f"{m}/fixed/{name}"] = getattr(buf, name)[:n].copy()
            arrays[f"{m}/prev_reward"] = info.prev_reward_store.copy()
            if info.prev_action_store is not None:
                arrays[f"{m}/prev_action"] = info.prev_action_store.copy()
            group = self._groups.get(module_id)
            if group is not None:
                entry["group"] = {
                    "obs": flatten_nested(f"{m}/group_obs", group.obs, arrays),
                    "global_obs": (None if group.global_obs is None
                                   else flatten_nested(f"{m}/group_global_obs", group.global_obs, arrays)),
                    "envs": list(group.envs), "slots": list(group.slots),
                    "agents": [encode_key(a) for a in group.agents],
                    "eps": group.eps.tolist(), "runs": [[st.index, pos] for st, pos in group.runs],
                }
            data["modules"].append(entry)
        data["envs"] = [self._env_entry(st) for st in self._envs]
        return data, arrays, None

    def _env_entry(self, st: Any) -> Dict[str, Any]:
        return {
            "agents": [encode_key(a) for a in st.agents],
            "mod": list(st.mod), "eps": list(st.eps), "row": list(st.row),
            "pending": list(st.pending), "done": list(st.done), "ret": [float(r) for r in st.ret],
            "live": st.live, "ep_len": st.ep_len, "episodes_started": st.episodes_started,
            "num_recreations": st.num_recreations, "consecutive_crashes": st.consecutive_crashes,
            "reset_seed": st.reset_seed,
            "episode": {"id": st.episode.id_, "agent_ids": [encode_key(a) for a in st.episode.agent_ids]},
            "actions": [[[encode_key(a), encode_value(x)] for a, x in step.items()] for step in st.action_log],
            "obs_digest": observation_digest(st.last_obs),
        }

    def set_sampling_state(self, data: Dict[str, Any], arrays: Dict[str, np.ndarray]) -> bool:
        """Continue exactly where the saved runner stopped; False (with a warning) when
        only counters and RNGs could be restored and fresh episodes start instead."""
        self._require_module()
        if data.get("format") != FORMAT_VERSION:
            raise ValueError(f"sampling state format {data.get('format')!r} is not {FORMAT_VERSION}")
        self._rng.set_state(torch.from_numpy(np.asarray(arrays["rng/torch"], np.uint8).copy()))
        self._np_rng.bit_generator.state = data["numpy_rng"]
        self.seed_base = int(data["seed_base"])
        self._episode_counter = int(data["episode_counter"])
        self._agent_eps_counter = int(data["agent_eps_counter"])
        self.set_state(data["lifetime"])
        self._needs_reset_all = True
        changed = [k for k, v in self._sampling_fingerprint().items() if data["fingerprint"].get(k) != v]
        if changed:
            logger.warning("env runner %d: %s changed since the checkpoint; resuming with fresh "
                           "episodes (not an exact resume)", self.worker_index, ", ".join(changed))
            return False
        for st, started in zip(self._envs, data["envs_started"]):
            st.episodes_started = int(started)
        if not data["in_flight"]:
            return True
        replayed = []
        for st, entry in zip(self._envs, data["envs"]):
            obs = self._replay(st, entry)
            if obs is None:
                return False
            replayed.append(obs)
        for module_id, info in self._modules.items():  # keep their connector statistics
            self._pending_connector_states.setdefault(module_id, [
                p.get_state() if hasattr(p, "get_state") else {} for p in info.pipeline.pieces])
        self._modules, self._module_origin, self._groups = {}, {}, {}
        for entry in data["modules"]:
            self._restore_module(entry, arrays)
        for st, entry, obs in zip(self._envs, data["envs"], replayed):
            self._restore_env_slots(st, entry, obs)
        self._needs_reset_all = False
        self._dropped_eps.clear()
        self._trunc_boot.clear()
        return True

    def _replay(self, st: Any, entry: Dict[str, Any]) -> Optional[Any]:
        """Reset ``st.env`` with the episode's seed and step its logged actions."""
        actions = [{decode_key(a): decode_value(x) for a, x in step} for step in entry["actions"]]
        try:
            obs, _ = st.env.reset(seed=entry["reset_seed"])
            for step in actions:
                obs = st.env.step(step)[0]
        except Exception as exc:  # noqa: BLE001 - reported, then fresh episodes
            logger.warning("env runner %d: replaying env %d failed (%r); resuming with fresh "
                           "episodes (not an exact resume)", self.worker_index, st.index, exc)
            return None
        if observation_digest(obs) != entry["obs_digest"]:
            logger.warning(
                "env runner %d: env %d did not reach the saved state when replayed from its seed and "
                "actions (it is not deterministic given both); resuming with fresh episodes (not an "
                "exact resume)", self.worker_index, st.index)
            return None
        st.action_log = actions
        st.last_obs = obs
        return obs

    def _restore_module(self, entry: Dict[str, Any], arrays: Dict[str, np.ndarray]) -> None:
        module_id = entry["id"]
        m = f"modules/{module_id}"
        info = self._module_info(module_id, decode_key(entry["agent"]), self._envs[entry["env"]])
        buf = info.buffer
        buf.clear()
        n = int(entry["rows"])
        if n:
            blocks = {name: unflatten_nested(layout, arrays) for name, layout in entry["columns"].items()}
            buf.append(n, arrays[f"{m}/fixed/eps_id"], blocks)
            for name in ("rewards", "terminateds", "truncateds"):
                getattr(buf, name)[:n] = arrays[f"{m}/fixed/{name}"]
        info.state_store = {k: unflatten_nested(v, arrays) for k, v in entry["state_store"].items()}
        info.prev_reward_store = np.array(arrays[f"{m}/prev_reward"])
        if f"{m}/prev_action" in arrays:
            info.prev_action_store = np.array(arrays[f"{m}/prev_action"])
        g = entry.get("group")
        if g is not None:
            c = Collect()
            c.envs, c.slots, c.eps = list(g["envs"]), list(g["slots"]), list(g["eps"])
            c.agents = [decode_key(a) for a in g["agents"]]
            c.runs = [(self._envs[e], pos) for e, pos in g["runs"]]
            global_obs = g.get("global_obs")
            self._groups[module_id] = Group(
                unflatten_nested(g["obs"], arrays), c,
                None if global_obs is None else np.array(unflatten_nested(global_obs, arrays)))

    def _restore_env_slots(self, st: Any, entry: Dict[str, Any], obs: Any) -> None:
        st.agents = [decode_key(a) for a in entry["agents"]]
        st.slot_of = {a: i for i, a in enumerate(st.agents)}
        st.mod, st.eps, st.row = list(entry["mod"]), list(entry["eps"]), list(entry["row"])
        st.pending, st.done, st.ret = list(entry["pending"]), list(entry["done"]), list(entry["ret"])
        st.sink = [self._modules[m] if m is not None else None for m in st.mod]
        st.live, st.ep_len = int(entry["live"]), int(entry["ep_len"])
        st.episodes_started = int(entry["episodes_started"])
        st.num_recreations = int(entry["num_recreations"])
        st.consecutive_crashes = int(entry["consecutive_crashes"])
        st.reset_seed = entry["reset_seed"]
        st.episode = EpisodeHandle(id_=int(entry["episode"]["id"]), env_index=st.index,
                                   agent_ids=[decode_key(a) for a in entry["episode"]["agent_ids"]],
                                   worker_index=self.worker_index)
