"""Algorithm checkpoints: the directory tree of ARCHITECTURE.md.

```
<ckpt>/metadata.json            kind "algorithm", class, checksums (checkpoint_io)
<ckpt>/algorithm_config.json    the config (config_codec)
<ckpt>/algorithm_state.json, rng.json
<ckpt>/env_runner/...           runner counters, connector and sampling state (runner_checkpoint)
<ckpt>/learner_group/learner/learner_state.json, generator.safetensors
<ckpt>/learner_group/learner/optimizer/<module_id>/<name>/{state.json,state.safetensors}
<ckpt>/learner_group/learner/rl_module/            a MultiRLModule checkpoint (own metadata)
<ckpt>/learner_group/learner/rl_module/<module_id>/ a module checkpoint (own metadata, loadable alone)
```
Component paths are paths in this tree, so ``restore_from_path(path,
component=...)`` and ``RLModule.from_checkpoint(path/...)`` share it.

A restore is all or nothing: every file is verified against its checksum,
parsed and checked against the live algorithm (module parameter names and
shapes, optimizer state shapes, RNG states) before anything changes; the
apply step snapshots what it replaces and puts it back if it fails.
Optimizer hyperparameters (``lr``, betas, ...) are not restored: they come
from the live optimizer, i.e. from the current config.
"""
from __future__ import annotations

import copy
import logging
import math
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch

from marl.core import checkpoint_io as io
from marl.algorithms import runner_checkpoint
from marl.algorithms.config_codec import load_config, save_config
from marl.algorithms.runner_checkpoint import apply_env_runners, read_env_runners, save_env_runners

logger = logging.getLogger(__name__)

LEARNER_DIR = "learner_group/learner"
RL_MODULE_DIR = f"{LEARNER_DIR}/rl_module"
OPTIMIZER_JSON = "state.json"
OPTIMIZER_TENSORS = "state.safetensors"


# ---------------------------------------------------------------- optimizer I/O
def _save_optimizer(state: Dict[str, Any], directory: Path) -> None:
    directory.mkdir(parents=True)
    tensors, skeleton = {}, {"param_groups": state["param_groups"], "state": {}}
    for idx, per_param in state["state"].items():
        entry = {}
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}.{key}"] = value
                entry[key] = {"__tensor__": f"{idx}.{key}"}
            else:
                entry[key] = value
        skeleton["state"][str(idx)] = entry
    io.save_tensors(directory / OPTIMIZER_TENSORS, tensors)
    io.write_json(directory / OPTIMIZER_JSON, skeleton)


def _read_optimizer(directory: Path, live: torch.optim.Optimizer, name: str,
                    verified: io.VerifiedCheckpoint) -> Dict[str, Any]:
    """The state dict to load into ``live``: the checkpoint's per-parameter state,
    checked against ``live``'s parameters, with ``live``'s param groups (so the
    hyperparameters, ``lr`` first, are the current config's)."""
    skeleton_path = verified.require(directory / OPTIMIZER_JSON)
    tensors_path = verified.require(directory / OPTIMIZER_TENSORS)
    skeleton = io.read_json(skeleton_path)
    tensors = io.load_tensors(tensors_path)

    def fail(message: str) -> io.CheckpointError:
        return io.CheckpointError(f"optimizer {name!r} in {str(skeleton_path)!r}: {message}")

    if not isinstance(skeleton, dict) or not isinstance(skeleton.get("param_groups"), list) \
            or not isinstance(skeleton.get("state"), dict):
        raise fail("expected 'param_groups' (list) and 'state' (object)")
    live_dict = live.state_dict()
    saved_groups, live_groups = skeleton["param_groups"], live_dict["param_groups"]
    saved_sizes = [len(g.get("params", [])) if isinstance(g, dict) else -1 for g in saved_groups]
    live_sizes = [len(g["params"]) for g in live_groups]
    if saved_sizes != live_sizes:
        raise fail(f"parameter groups of sizes {saved_sizes} in the checkpoint, {live_sizes} in the "
                   "live optimizer (was it saved from a different model?)")
    position = {}
    for group in saved_groups:
        for pid in group["params"]:
            position[pid] = len(position)
    live_ids = [pid for g in live_groups for pid in g["params"]]
    live_params = [p for g in live.param_groups for p in g["params"]]
    state: Dict[int, Dict[str, Any]] = {}
    for idx, entry in skeleton["state"].items():
        try:
            pos = position[int(idx)]
        except (KeyError, ValueError):
            raise fail(f"state for unknown parameter index {idx!r}") from None
        if not isinstance(entry, dict):
            raise fail(f"state of parameter {idx} is not an object")
        param, restored = live_params[pos], {}
        for key, value in entry.items():
            if isinstance(value, dict):
                ref = value.get("__tensor__")
                if set(value) != {"__tensor__"} or ref not in tensors:
                    raise fail(f"state {key!r} of parameter {idx} names no tensor of {str(tensors_path)!r}")
                value = tensors[ref]
                if value.dim() > 0 and tuple(value.shape) != tuple(param.shape):
                    raise fail(f"state {key!r} of parameter {idx} has shape {tuple(value.shape)} but the "
                               f"parameter has shape {tuple(param.shape)}")
            elif not (value is None or isinstance(value, (bool, int, float, str))):
                raise fail(f"state {key!r} of parameter {idx} is {value!r}")
            restored[key] = value
        state[live_ids[pos]] = restored
    return {"state": state, "param_groups": copy.deepcopy(live_groups)}


# ------------------------------------------------------------------- RNG state
def _rng_state() -> Dict[str, Any]:
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "torch": torch.get_rng_state().tolist(),
    }


def _parse_rng_state(state: Any, source: Path) -> Dict[str, Any]:
    """The RNG states as the setters take them, tried on fresh generators (not the global ones)."""
    try:
        n, p = state["numpy"], state["python"]
        numpy_state = (str(n[0]), np.asarray(n[1], dtype=np.uint32), int(n[2]), int(n[3]), float(n[4]))
        python_state = (int(p[0]), tuple(int(x) for x in p[1]), p[2] if p[2] is None else float(p[2]))
        torch_state = torch.tensor(state["torch"], dtype=torch.uint8)
        np.random.RandomState().set_state(numpy_state)
        random.Random().setstate(python_state)
        torch.Generator().set_state(torch_state)
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as e:
        raise io.CheckpointError(f"checkpoint file {str(source)!r} holds no valid RNG state: {e}") from e
    return {"numpy": numpy_state, "python": python_state, "torch": torch_state}


def _set_rng_state(parsed: Dict[str, Any]) -> None:
    np.random.set_state(parsed["numpy"])
    random.setstate(parsed["python"])
    torch.set_rng_state(parsed["torch"])


def _global_rng() -> Dict[str, Any]:
    return {"numpy": np.random.get_state(), "python": random.getstate(), "torch": torch.get_rng_state()}


# ------------------------------------------------------------------- learner
def save_learner(learner: Any, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, opt in learner.optimizers.items():
        _save_optimizer(opt.state_dict(), directory / "optimizer" / name)
    io.write_json(directory / "learner_state.json", learner.get_learner_state())
    io.save_tensors(directory / "generator.safetensors", {"state": learner._generator.get_state()})
    rl_dir = directory / "rl_module"
    rl_dir.mkdir()
    learner.module._write_checkpoint(rl_dir)


@dataclass
class LearnerPayload:
    """A learner directory read and checked against a live learner, not applied yet."""

    modules: Dict[str, Dict[str, torch.Tensor]]
    optimizers: Dict[str, Dict[str, Any]]
    learner_state: Dict[str, Any]
    generator: Optional[torch.Tensor]


def read_learner(learner: Any, directory: Path, verified: io.VerifiedCheckpoint) -> LearnerPayload:
    """Read ``learner_group/learner``: every module of ``learner.module`` and every
    optimizer must be there and fit; raises ``CheckpointError`` naming the file."""
    modules = learner.module._read_checkpoint_states(directory / "rl_module", strict=True, verified=verified)
    optimizers = {}
    for name, opt in learner.optimizers.items():
        opt_dir = directory / "optimizer" / name
        if not verified.covers(opt_dir / OPTIMIZER_JSON):
            raise io.CheckpointError(
                f"optimizer {name!r} has no state in {str(directory / 'optimizer')!r}"
            )
        optimizers[name] = _read_optimizer(opt_dir, opt, name, verified)
    state_path = verified.require(directory / "learner_state.json")
    learner_state = io.read_json(state_path)
    if not isinstance(learner_state, dict):
        raise io.CheckpointError(f"checkpoint file {str(state_path)!r} is not a JSON object")
    generator = None
    gen_path = directory / "generator.safetensors"
    if verified.covers(gen_path):
        tensors = io.load_tensors(gen_path)
        try:
            generator = tensors["state"]
            torch.Generator().set_state(generator)
        except (KeyError, RuntimeError, TypeError) as e:
            raise io.CheckpointError(f"checkpoint file {str(gen_path)!r} holds no generator state: {e}") from e
    return LearnerPayload(modules, optimizers, learner_state, generator)


def apply_learner(learner: Any, payload: LearnerPayload) -> None:
    learner.module.set_state(payload.modules)
    for name, state in payload.optimizers.items():
        learner.optimizers[name].load_state_dict(state)
    learner.set_learner_state(payload.learner_state)
    if payload.generator is not None:
        learner._generator.set_state(payload.generator)


# ---------------------------------------------------------- algorithm state
def _check_algorithm_state(state: Any, source: Path) -> Dict[str, Any]:
    def fail(message: str) -> io.CheckpointError:
        return io.CheckpointError(f"checkpoint file {str(source)!r}: {message}")

    if not isinstance(state, dict):
        raise fail("expected a JSON object")
    iteration = state.get("iteration")
    if isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < 0:
        raise fail(f"iteration={iteration!r}: expected a non-negative integer")
    counters = state.get("counters")
    if not isinstance(counters, dict) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in counters.values()
    ):
        raise fail(f"counters={counters!r}: expected an object of numbers")
    if not isinstance(state.get("time_total_s", 0.0), (int, float)):
        raise fail(f"time_total_s={state.get('time_total_s')!r}: expected a number")
    if not isinstance(state.get("episode_window", []), list):
        raise fail("episode_window: expected a list")
    return state


# ----------------------------------------------------------------- algorithm
def _agent_ids(algo: Any) -> Callable[[], List[Any]]:
    def agent_ids() -> List[Any]:
        env = algo._env_creator(dict(algo.config.env_config or {}))
        try:
            return list(env.possible_agents)
        finally:
            env.close()

    return agent_ids


def save_algorithm(algo: Any, path: Optional[str]) -> str:
    path = path or tempfile.mkdtemp(prefix="algorithm_")
    with io.atomic_directory(path) as staging:
        io.write_json(staging / "rng.json", _rng_state())
        before = _global_rng()
        try:  # recording a lambda policy_mapping_fn builds an env: keep the RNGs untouched
            save_config(algo.config, staging, agent_ids=_agent_ids(algo))
        finally:
            np.random.set_state(before["numpy"])
            random.setstate(before["python"])
            torch.set_rng_state(before["torch"])
        io.write_json(staging / "algorithm_state.json", algo.get_state())
        runner_dir = staging / "env_runner"
        runner_dir.mkdir()
        save_env_runners(algo.env_runner_group, runner_dir)
        save_learner(algo.learner, staging / LEARNER_DIR)
        algo._save_extra_checkpoint(staging)
        io.write_metadata(staging, {"kind": "algorithm", "class": io.class_path(type(algo))})
    return str(path)


COMPONENTS = ("learner_group/learner/rl_module/<module_id>", "learner_group/learner/rl_module",
              "learner_group/learner", "learner_group", "env_runner")


@dataclass
class _Restore:
    """Everything a restore will apply, read and checked before anything changes."""

    modules: Optional[Dict[str, Dict[str, torch.Tensor]]] = None
    learner: Optional[LearnerPayload] = None
    algorithm_state: Optional[Dict[str, Any]] = None
    rng: Optional[Dict[str, Any]] = None
    env_runners: Any = None
    extra: Any = None  # algorithm-specific parts (e.g. DQN's replay buffers)
    notes: List[str] = field(default_factory=list)


def _read_env_runner_dir(directory: Path, verified: io.VerifiedCheckpoint) -> Any:
    """``read_env_runners`` after checking that every file it may open is covered."""
    if not directory.is_dir():
        raise io.CheckpointError(f"checkpoint directory {str(directory)!r} does not exist")
    for path in sorted(directory.rglob("*")):
        if path.is_file() and not path.name.endswith(io.LEGACY_SUFFIXES):
            verified.require(path)
    verified.require(directory / runner_checkpoint.STATE_FILE)
    return read_env_runners(directory)


def _enclosing_algorithm(path: Path, parts: List[str]) -> io.VerifiedCheckpoint:
    """Verify the algorithm checkpoint that the component directory ``path`` belongs to."""
    root = path.absolute()
    for _ in parts:
        root = root.parent
    if not (root / io.METADATA_FILE).is_file():
        raise io.CheckpointError(
            f"component {'/'.join(parts)!r}: {str(path)!r} must be that directory of an algorithm "
            f"checkpoint (its checksums are in {str(root / io.METADATA_FILE)!r}, which does not exist)"
        )
    verified = io.verify_checkpoint(root)
    if verified.meta["kind"] != "algorithm":
        raise io.CheckpointError(
            f"component {'/'.join(parts)!r}: {str(root / io.METADATA_FILE)!r} is not an algorithm checkpoint"
        )
    return verified


def read_restore(algo: Any, path: Path, component: Optional[str],
                 verified: Optional[io.VerifiedCheckpoint] = None) -> _Restore:
    """Read and check everything ``restore_from_path(path, component)`` would apply."""
    learner = algo.learner
    if component is None:
        verified = verified or io.verify_checkpoint(path)
        if verified.meta["kind"] != "algorithm":
            raise io.CheckpointError(
                f"{str(path / io.METADATA_FILE)!r} is not an algorithm checkpoint (kind={verified.meta['kind']!r}); "
                "for a module checkpoint pass component='learner_group/learner/rl_module/<module_id>'"
            )
        root = verified.root
        state_path = verified.require(root / "algorithm_state.json")
        rng_path = verified.require(root / "rng.json")
        return _Restore(
            learner=read_learner(learner, root / LEARNER_DIR, verified),
            algorithm_state=_check_algorithm_state(io.read_json(state_path), state_path),
            rng=_parse_rng_state(io.read_json(rng_path), rng_path),
            env_runners=_read_env_runner_dir(root / "env_runner", verified),
            extra=algo._read_extra_checkpoint(root, verified),
        )
    parts = component.strip("/").split("/")
    if len(parts) == 4 and parts[:3] == ["learner_group", "learner", "rl_module"]:
        module_id = parts[3]
        module = learner.module[module_id]
        sub = path / module_id
        target = sub if (sub / io.METADATA_FILE).exists() else path
        return _Restore(modules={module_id: module._read_checkpoint_state(target)})
    if parts == ["learner_group", "learner", "rl_module"]:
        return _Restore(modules=learner.module._read_checkpoint_states(path))
    if parts in (["learner_group", "learner"], ["learner_group"]):
        verified = _enclosing_algorithm(path, parts)
        learner_dir = path / "learner" if parts == ["learner_group"] else path
        return _Restore(learner=read_learner(learner, learner_dir, verified))
    if parts == ["env_runner"]:
        verified = _enclosing_algorithm(path, parts)
        return _Restore(env_runners=_read_env_runner_dir(path, verified))
    raise ValueError(f"unknown checkpoint component {component!r}; valid: {list(COMPONENTS)}")


def _snapshot(algo: Any, plan: _Restore) -> Callable[[], None]:
    """What ``plan`` would replace, and a function that puts it back."""
    learner = algo.learner
    training_state = learner.training_state_copy()
    algo_state = copy.deepcopy(algo.get_state())
    rng = _global_rng()
    runners = algo.env_runner_group.get_state() if plan.env_runners is not None else None
    extra = algo._extra_checkpoint_snapshot() if plan.extra is not None else None

    def rollback() -> None:
        if extra is not None:
            algo._restore_extra_snapshot(extra)
        learner.restore_training_state(training_state)
        algo.set_state(algo_state)
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        torch.set_rng_state(rng["torch"])
        if runners is not None:
            algo.env_runner_group.set_state(runners)
        algo.sync_weights_to_env_runners()

    return rollback


def apply_restore(algo: Any, plan: _Restore) -> None:
    """Apply a checked plan; if a step still fails, undo the steps before it and re-raise."""
    rollback = _snapshot(algo, plan)
    try:
        if plan.env_runners is not None:  # the one part that cannot be checked before
            apply_env_runners(algo.env_runner_group, plan.env_runners)
        if plan.learner is not None:
            apply_learner(algo.learner, plan.learner)
        if plan.modules is not None:
            algo.learner.module.set_state(plan.modules)
        if plan.algorithm_state is not None:
            algo.set_state(plan.algorithm_state)
        if plan.rng is not None:
            _set_rng_state(plan.rng)
        if plan.extra is not None:
            algo._apply_extra_checkpoint(plan.extra)
        algo.sync_weights_to_env_runners()
    except BaseException:
        try:
            rollback()
        except Exception:  # report the original error; the rollback was best effort
            logger.warning("undoing a failed restore failed too; the algorithm may be half restored",
                           exc_info=True)
        raise


def restore_algorithm(algo: Any, path: str, component: Optional[str]) -> None:
    """Restore everything (or one component) from ``path``, all or nothing."""
    root = io.locate_checkpoint(path)
    apply_restore(algo, read_restore(algo, Path(root), component))


def load_algorithm(path: str, config: Any = None) -> Any:
    """Rebuild the algorithm of a checkpoint (with ``config``, or the one it stores) and restore it."""
    from marl.algorithms.algorithm import Algorithm

    root = io.locate_checkpoint(path)
    verified = io.verify_checkpoint(root)
    meta = verified.meta
    if meta.get("kind") != "algorithm":
        raise io.CheckpointError(
            f"{str(Path(root) / io.METADATA_FILE)!r} is not an algorithm checkpoint (kind={meta.get('kind')!r})"
        )
    algo_cls = io.import_object(meta.get("class"), source=Path(root) / io.METADATA_FILE, key="class", base=Algorithm)
    if config is None:
        verified.require(Path(root) / "algorithm_config.json")
        config = load_config(Path(root))
    config.validate()
    algo = algo_cls(config=config)
    try:
        apply_restore(algo, read_restore(algo, Path(root), None, verified=verified))
        algo.learner_group.push_local_state()  # remote learners (num_learners > 0) take it too
    except BaseException:
        algo.stop()
        raise
    return algo
