"""Algorithm checkpoints: the directory tree of ARCHITECTURE.md.

```
<ckpt>/metadata.json, algorithm_config.json, algorithm_state.json, rng.json
<ckpt>/env_runner/state.json
<ckpt>/learner_group/learner/learner_state.json, generator.safetensors
<ckpt>/learner_group/learner/optimizer/<module_id>/<name>/{state.safetensors,meta.json}
<ckpt>/learner_group/learner/rl_module/  (a MultiRLModule checkpoint)
<ckpt>/learner_group/learner/rl_module/<module_id>/  (loadable alone)
```
Component paths are paths in this tree, so ``restore_from_path(path,
component=...)`` and ``RLModule.from_checkpoint(path/...)`` share it.
"""
from __future__ import annotations

import random
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch

from marl.core import checkpoint_io as io
from marl.algorithms.config_codec import load_config, save_config
from marl.algorithms.runner_checkpoint import load_env_runners, save_env_runners

LEARNER_DIR = "learner_group/learner"
RL_MODULE_DIR = f"{LEARNER_DIR}/rl_module"


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
    io.save_tensors(directory / "state.safetensors", tensors)
    io.write_json(directory / io.METADATA_FILE, skeleton)


def _load_optimizer(directory: Path) -> Dict[str, Any]:
    skeleton = io.read_json(directory / io.METADATA_FILE)
    tensors = io.load_tensors(directory / "state.safetensors")
    state = {}
    for idx, entry in skeleton["state"].items():
        state[int(idx)] = {
            k: tensors[v["__tensor__"]] if isinstance(v, dict) and "__tensor__" in v else v
            for k, v in entry.items()
        }
    return {"state": state, "param_groups": skeleton["param_groups"]}


# ------------------------------------------------------------------- RNG state
def _rng_state() -> Dict[str, Any]:
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "torch": torch.get_rng_state().tolist(),
    }


def _set_rng_state(state: Dict[str, Any]) -> None:
    n = state["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))


# ------------------------------------------------------------------- learner
def save_learner(learner: Any, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    rl_dir = directory / "rl_module"
    rl_dir.mkdir()
    learner.module._write_checkpoint(rl_dir)
    for name, opt in learner.optimizers.items():
        _save_optimizer(opt.state_dict(), directory / "optimizer" / name)
    io.write_json(directory / "learner_state.json", learner.get_learner_state())
    io.save_tensors(directory / "generator.safetensors", {"state": learner._generator.get_state()})


def restore_learner(learner: Any, directory: Path) -> None:
    learner.module.restore_from_path(str(directory / "rl_module"))
    for name, opt in learner.optimizers.items():
        opt_dir = directory / "optimizer" / name
        if not opt_dir.exists():
            raise io.CheckpointError(
                f"optimizer {name!r} has no state in {str(directory / 'optimizer')!r}"
            )
        opt.load_state_dict(_load_optimizer(opt_dir))
    learner.set_learner_state(io.read_json(directory / "learner_state.json"))
    gen = directory / "generator.safetensors"
    if gen.exists():
        learner._generator.set_state(io.load_tensors(gen)["state"])


# ----------------------------------------------------------------- algorithm
def save_algorithm(algo: Any, path: Optional[str]) -> str:
    path = path or tempfile.mkdtemp(prefix="algorithm_")
    with io.atomic_directory(path) as staging:
        io.write_json(
            staging / io.METADATA_FILE,
            {"kind": "algorithm", "format_version": io.FORMAT_VERSION, "class": io.class_path(type(algo))},
        )
        save_config(algo.config, staging)
        io.write_json(staging / "algorithm_state.json", algo.get_state())
        io.write_json(staging / "rng.json", _rng_state())
        runner_dir = staging / "env_runner"
        runner_dir.mkdir()
        save_env_runners(algo.env_runner_group, runner_dir)
        save_learner(algo.learner, staging / LEARNER_DIR)
    return str(path)


COMPONENTS = ("learner_group/learner/rl_module/<module_id>", "learner_group/learner/rl_module",
              "learner_group/learner", "learner_group", "env_runner")


def restore_algorithm(algo: Any, path: str, component: Optional[str]) -> None:
    root = Path(path)
    learner = algo.learner
    if component is None:
        meta = io.read_json(root / io.METADATA_FILE)
        if meta.get("kind") != "algorithm":
            raise io.CheckpointError(
                f"{str(root / io.METADATA_FILE)!r} is not an algorithm checkpoint (kind={meta.get('kind')!r}); "
                "for a module checkpoint pass component='learner_group/learner/rl_module/<module_id>'"
            )
        restore_learner(learner, root / LEARNER_DIR)
        algo.set_state(io.read_json(root / "algorithm_state.json"))
        load_env_runners(algo.env_runner_group, root / "env_runner")
        _set_rng_state(io.read_json(root / "rng.json"))
    else:
        parts = component.strip("/").split("/")
        if parts[:4] == ["learner_group", "learner", "rl_module"] + parts[3:4] and len(parts) == 4:
            learner.module.restore_from_path(str(root), component=parts[3])
        elif parts == ["learner_group", "learner", "rl_module"]:
            learner.module.restore_from_path(str(root))
        elif parts == ["learner_group", "learner"]:
            restore_learner(learner, root)
        elif parts == ["learner_group"]:
            restore_learner(learner, root / "learner")
        elif parts == ["env_runner"]:
            load_env_runners(algo.env_runner_group, root)
        else:
            raise ValueError(f"unknown checkpoint component {component!r}; valid: {list(COMPONENTS)}")
    algo.sync_weights_to_env_runners()


def load_algorithm(path: str, config: Any = None) -> Any:
    root = Path(path)
    meta = io.read_json(root / io.METADATA_FILE)
    if meta.get("kind") != "algorithm":
        raise io.CheckpointError(
            f"{str(root / io.METADATA_FILE)!r} is not an algorithm checkpoint (kind={meta.get('kind')!r})"
        )
    algo_cls = io.import_class(meta["class"], source=root / io.METADATA_FILE)
    config = config if config is not None else load_config(root)
    config.validate()
    algo = algo_cls(config=config)
    restore_algorithm(algo, path, None)
    return algo
