"""Safe checkpoints: no code runs on load, checksums, all-or-nothing restores,
saves that never destroy what is not ours, and resume with the current lr."""
import copy
import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from envs import MultiAgentCartPole
from marl import Algorithm, DefaultModelConfig, DefaultPPOTorchRLModule, PPOConfig, RLModule
from marl.algorithms import checkpointing
from marl.algorithms.config_codec import RecordedPolicyMapping
from marl.core import checkpoint_io
from marl.core.checkpoint_io import CheckpointError
from tests.state_compare import assert_same

SMALL_MODEL = DefaultModelConfig(fcnet_hiddens=[8], head_fcnet_hiddens=[8])
TINY = dict(train_batch_size_per_learner=64, minibatch_size=32, num_epochs=1)
MODULE_DIR = "learner_group/learner/rl_module/default_policy"
REPO = Path(__file__).resolve().parents[1]


def tiny_config(lr=1e-3, model=SMALL_MODEL, seed=0):
    return (
        PPOConfig().environment("CartPole-v1").rl_module(model_config=model)
        .training(lr=lr, **TINY).debugging(seed=seed)
    )


@pytest.fixture
def trained(tmp_path):
    """A trained algorithm, its checkpoint, and a second algorithm trained further
    (the restore target, so a restore would change it)."""
    algo = tiny_config().build()
    algo.train()
    ckpt = Path(algo.save_to_path(str(tmp_path / "ckpt")))
    algo.train()
    yield algo, ckpt
    algo.stop()


def reseal(root: Path) -> None:
    """Rewrite every checksum, as an attacker who edits files can."""
    nodes = sorted({p.parent for p in root.rglob("metadata.json")}, key=lambda p: -len(p.parts))
    for node in nodes:
        meta = json.loads((node / "metadata.json").read_text())
        if meta.get("kind") in checkpoint_io.KINDS:
            checkpoint_io.write_metadata(node, meta)


def algo_snapshot(algo):
    learner = algo.learner
    return {
        "weights": learner.module.get_state(),
        "optimizers": {n: copy.deepcopy(o.state_dict()) for n, o in learner.optimizers.items()},
        "lr": {n: [g["lr"] for g in o.param_groups] for n, o in learner.optimizers.items()},
        "algorithm": copy.deepcopy(algo.get_state()),
        "learner": copy.deepcopy(learner.get_learner_state()),
        "generator": learner._generator.get_state().clone(),
        "runner_weights": algo.env_runner_group.get_weights(),
        "torch_rng": torch.get_rng_state().clone(),
        "numpy_rng": np.random.get_state()[1].copy(),
    }


def flip_bit(path: Path, offset_from_end: int = 3) -> None:
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0x01
    path.write_bytes(bytes(data))


# ------------------------------------------------------------------ checksums
def test_metadata_lists_the_sha256_of_every_file_and_each_module_seals_its_own(trained):
    _, ckpt = trained
    root = json.loads((ckpt / "metadata.json").read_text())
    assert root["format_version"] == checkpoint_io.FORMAT_VERSION
    assert "algorithm_config.json" in root["files"] and "env_runner/state.json" in root["files"]
    assert root["children"] == ["learner_group/learner/rl_module"]
    assert root["files"]["learner_group/learner/rl_module/metadata.json"] == checkpoint_io.file_sha256(
        ckpt / "learner_group/learner/rl_module/metadata.json")
    module = json.loads((ckpt / MODULE_DIR / "metadata.json").read_text())
    assert module["files"] == {"module_state.safetensors": checkpoint_io.file_sha256(
        ckpt / MODULE_DIR / "module_state.safetensors")}
    assert not list(ckpt.rglob("*.pkl"))
    assert {p.suffix for p in ckpt.rglob("*") if p.is_file()} == {".json", ".safetensors"}


def test_a_bit_flip_in_module_weights_is_caught_naming_the_file(tmp_path):
    module = DefaultPPOTorchRLModule(observation_space=gym.spaces.Box(-1, 1, (4,)),
                                     action_space=gym.spaces.Discrete(2), model_config=SMALL_MODEL)
    path = Path(module.save_to_path(str(tmp_path / "m")))
    weights = path / "module_state.safetensors"
    flip_bit(weights)
    from safetensors.torch import load_file

    load_file(str(weights))  # still a valid safetensors file: only the checksum notices
    with pytest.raises(CheckpointError) as err:
        RLModule.from_checkpoint(str(path))
    assert str(weights) in str(err.value) and "sha256" in str(err.value)
    before = module.get_state()
    with pytest.raises(CheckpointError, match="module_state.safetensors"):
        module.restore_from_path(str(path))
    assert_same(module.get_state(), before)


def test_an_edited_metadata_file_is_caught(tmp_path):
    module = DefaultPPOTorchRLModule(observation_space=gym.spaces.Box(-1, 1, (4,)),
                                     action_space=gym.spaces.Discrete(2), model_config=SMALL_MODEL)
    path = Path(module.save_to_path(str(tmp_path / "m")))
    meta = json.loads((path / "metadata.json").read_text())
    meta["model_config"]["fcnet_hiddens"] = [9]
    (path / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="metadata_sha256"):
        RLModule.from_checkpoint(str(path))


def test_a_checkpoint_without_checksums_is_refused_with_the_reason(tmp_path):
    module = DefaultPPOTorchRLModule(observation_space=gym.spaces.Box(-1, 1, (4,)),
                                     action_space=gym.spaces.Discrete(2), model_config=SMALL_MODEL)
    path = Path(module.save_to_path(str(tmp_path / "m")))
    meta = json.loads((path / "metadata.json").read_text())
    meta["format_version"] = 1
    (path / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="older marl without checksums"):
        RLModule.from_checkpoint(str(path))


CORRUPTIONS = {
    "bit flip": flip_bit,
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
    "deleted": lambda p: p.unlink(),
}
FILES = [
    f"{MODULE_DIR}/module_state.safetensors",
    "learner_group/learner/optimizer/default_policy/default_optimizer/state.safetensors",
    "learner_group/learner/learner_state.json",
    "env_runner/state.json",
    "algorithm_state.json",
    "rng.json",
]


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
@pytest.mark.parametrize("rel", FILES)
def test_a_damaged_file_names_itself_and_leaves_the_algorithm_unchanged(trained, rel, corruption):
    algo, ckpt = trained
    target = ckpt / rel
    assert target.is_file(), rel
    CORRUPTIONS[corruption](target)
    before = algo_snapshot(algo)
    with pytest.raises(CheckpointError) as err:
        algo.restore_from_path(str(ckpt))
    assert str(target) in str(err.value)
    assert_same(algo_snapshot(algo), before)
    with pytest.raises(CheckpointError, match=rel.split("/")[-1]):
        Algorithm.from_checkpoint(str(ckpt))


def test_a_damaged_component_leaves_the_algorithm_unchanged(trained):
    algo, ckpt = trained
    flip_bit(ckpt / FILES[1])
    before = algo_snapshot(algo)
    for component in ("learner_group/learner", "learner_group"):
        with pytest.raises(CheckpointError, match="state.safetensors"):
            algo.restore_from_path(str(ckpt / component), component=component)
    assert_same(algo_snapshot(algo), before)


def test_weights_of_another_architecture_change_nothing(tmp_path):
    other = tiny_config(model=DefaultModelConfig(fcnet_hiddens=[16], head_fcnet_hiddens=[8])).build()
    ckpt = other.save_to_path(str(tmp_path / "other"))
    other.stop()
    algo = tiny_config().build()
    algo.train()
    before = algo_snapshot(algo)
    with pytest.raises(CheckpointError) as err:
        algo.restore_from_path(ckpt)
    assert "(8, 4)" in str(err.value) and "(16, 4)" in str(err.value)
    assert_same(algo_snapshot(algo), before)
    algo.stop()


def test_optimizer_state_of_the_wrong_shape_changes_nothing(trained):
    algo, ckpt = trained
    opt_dir = ckpt / "learner_group/learner/optimizer/default_policy/default_optimizer"
    tensors = checkpoint_io.load_tensors(opt_dir / "state.safetensors")
    key = next(k for k, v in tensors.items() if v.dim() == 2)
    tensors[key] = torch.zeros(3, 3)
    checkpoint_io.save_tensors(opt_dir / "state.safetensors", tensors)
    reseal(ckpt)  # consistent checksums: the shape check must catch it
    before = algo_snapshot(algo)
    with pytest.raises(CheckpointError, match="default_optimizer.*shape"):
        algo.restore_from_path(str(ckpt))
    assert_same(algo_snapshot(algo), before)


def test_a_step_that_fails_while_applying_is_rolled_back(trained, monkeypatch):
    algo, ckpt = trained
    real = checkpointing.apply_learner

    def apply_then_fail(learner, payload):
        real(learner, payload)
        raise RuntimeError("disk vanished")

    monkeypatch.setattr(checkpointing, "apply_learner", apply_then_fail)
    before = algo_snapshot(algo)
    with pytest.raises(RuntimeError, match="disk vanished"):
        algo.restore_from_path(str(ckpt))
    assert_same(algo_snapshot(algo), before)


def test_a_container_restores_all_modules_or_none(tmp_path):
    from marl import MultiRLModuleSpec, RLModuleSpec

    def container(hiddens_p1):
        return MultiRLModuleSpec(rl_module_specs={
            "p0": RLModuleSpec(DefaultPPOTorchRLModule, gym.spaces.Box(-1, 1, (4,)), gym.spaces.Discrete(2),
                               model_config=SMALL_MODEL),
            "p1": RLModuleSpec(DefaultPPOTorchRLModule, gym.spaces.Box(-1, 1, (4,)), gym.spaces.Discrete(2),
                               model_config=DefaultModelConfig(fcnet_hiddens=hiddens_p1, head_fcnet_hiddens=[8])),
        }).build()

    path = container([16]).save_to_path(str(tmp_path / "multi"))
    target = container([8])
    before = target.get_state()
    with pytest.raises(CheckpointError, match="p1"):
        target.restore_from_path(path)
    assert_same(target.get_state(), before)  # p0 fitted, but was not loaded alone


# ------------------------------------------------------------ no code runs on load
class _Plant:
    """Unpickling this creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def plant_pickles(ckpt: Path, marker: Path) -> None:
    payload = pickle.dumps(_Plant(marker))
    for rel in ("algorithm_config.pkl", "env_runner/state.pkl", "env_runner/sampling_snapshot.pkl",
                f"{MODULE_DIR}/module_state.pkl"):
        (ckpt / rel).write_bytes(payload)


@pytest.mark.parametrize("listed", [False, True], ids=["leftover", "listed-in-checksums"])
def test_pickle_files_in_a_checkpoint_are_never_opened(trained, tmp_path, listed):
    algo, ckpt = trained
    marker = tmp_path / "pwned"
    plant_pickles(ckpt, marker)
    if listed:
        reseal(ckpt)
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Plant(probe)))
    assert probe.exists()  # the payload works when something unpickles it

    algo.restore_from_path(str(ckpt))
    Algorithm.from_checkpoint(str(ckpt)).stop()
    RLModule.from_checkpoint(str(ckpt / MODULE_DIR))
    assert not marker.exists()


def _payload_command(marker):
    return f"touch {marker}"


def _plant_config_value(ckpt, key, value, top=None):
    path = ckpt / "algorithm_config.json"
    data = json.loads(path.read_text())
    if key is not None:
        data["values"][key] = value
    data.update(top or {})
    path.write_text(json.dumps(data))
    reseal(ckpt)


def config_payloads(marker):
    cmd = _payload_command(marker)
    return {
        "dataclass os:system": ("gamma", {"__dataclass__": "os:system", "fields": {"command": cmd}}, "os:system"),
        "callable builtins:eval": ("env", {"__callable__": "builtins:eval"}, "builtins:eval"),
        "env subprocess:run": ("env", {"__callable__": "subprocess:run"}, "subprocess:run"),
        "callable to a non-function": ("env", {"__callable__": "marl.core.constants:DEFAULT_MODULE_ID"},
                                       "DEFAULT_MODULE_ID"),
        "attribute walk": ("env", {"__callable__": "marl.core.checkpoint_io:os.system"}, "os.system"),
        "foreign dataclass": ("gamma", {"__dataclass__": "gymnasium.envs.registration:EnvSpec",
                                        "fields": {"id": "x", "entry_point": "os:system"}}, "EnvSpec"),
        "module_class not an RLModule": (
            "rl_module_spec",
            {"__dataclass__": "marl.core.rl_module:RLModuleSpec",
             "fields": {"module_class": {"__callable__": "envs.registry:EnvCreator"}}},
            "RLModule"),
        "env class not an env": ("env", {"__callable__": "envs.registry:EnvCreator"}, "gymnasium.Env"),
        "pickled value": ("gamma", {"__pickled__": 0, "repr": "x"}, "pickle"),
        "dunder key": ("__class__", {"__callable__": "marl.algorithms.vpg:VPGConfig"}, "__class__"),
    }


@pytest.mark.parametrize("name", list(config_payloads("m")))
def test_planted_config_values_are_refused_by_from_checkpoint_and_ignored_by_restore(trained, tmp_path, name):
    algo, ckpt = trained
    marker = tmp_path / "pwned"
    key, value, named = config_payloads(marker)[name]
    _plant_config_value(ckpt, key, value)
    with pytest.raises(CheckpointError) as err:
        Algorithm.from_checkpoint(str(ckpt))
    assert "algorithm_config.json" in str(err.value) and named in str(err.value)
    algo.restore_from_path(str(ckpt))  # an existing algorithm keeps its own config
    assert not marker.exists()


@pytest.mark.parametrize("top, named", [
    ({"config_class": "os:system"}, "os:system"),
    ({"config_class": "marl.core.rl_module:RLModuleSpec"}, "AlgorithmConfig"),
    ({"algo_class": "marl.algorithms.ppo:PPOConfig"}, "Algorithm"),
])
def test_planted_config_and_algorithm_classes_are_refused(trained, top, named):
    _, ckpt = trained
    _plant_config_value(ckpt, None, None, top)
    with pytest.raises(CheckpointError, match=named):
        Algorithm.from_checkpoint(str(ckpt))


def test_planted_algorithm_class_is_refused(trained):
    _, ckpt = trained
    meta = json.loads((ckpt / "metadata.json").read_text())
    meta["class"] = "marl.algorithms.ppo:PPOConfig"
    checkpoint_io.write_metadata(ckpt, meta)
    with pytest.raises(CheckpointError, match="subclass of Algorithm"):
        Algorithm.from_checkpoint(str(ckpt))


@pytest.mark.parametrize("cls", ["envs.registry:EnvCreator", "subprocess:Popen",
                                 "marl.core.rl_module:RLModule.restore_from_path"])
def test_a_module_class_that_is_not_an_rl_module_is_refused(trained, tmp_path, cls):
    algo, ckpt = trained
    module_dir = ckpt / MODULE_DIR
    meta = json.loads((module_dir / "metadata.json").read_text())
    meta["class"] = cls
    checkpoint_io.write_metadata(module_dir, meta)
    reseal(ckpt)
    with pytest.raises(CheckpointError, match="refused"):
        RLModule.from_checkpoint(str(module_dir))
    with pytest.raises(CheckpointError, match="refused"):
        RLModule.from_checkpoint(str(ckpt / "learner_group/learner/rl_module"))
    algo.restore_from_path(str(ckpt))  # weights only: the class is never imported


def test_a_model_config_callable_must_be_a_module_level_function(tmp_path):
    module = DefaultPPOTorchRLModule(observation_space=gym.spaces.Box(-1, 1, (4,)),
                                     action_space=gym.spaces.Discrete(2), model_config=SMALL_MODEL)
    path = Path(module.save_to_path(str(tmp_path / "m")))
    meta = json.loads((path / "metadata.json").read_text())
    meta["model_config"]["fcnet_activation"] = {"__callable__": "os:system"}
    checkpoint_io.write_metadata(path, meta)
    with pytest.raises(CheckpointError, match="refused import path 'os:system'"):
        RLModule.from_checkpoint(str(path))


# ------------------------------------------------------ values without import path
def test_a_lambda_is_not_saved_and_loading_asks_for_the_config(tmp_path):
    from marl import FlattenObservations

    config = tiny_config().env_runners(env_to_module_connector=lambda env: FlattenObservations())
    algo = config.build()
    ckpt = Path(algo.save_to_path(str(tmp_path / "ckpt")))
    algo.stop()
    data = json.loads((ckpt / "algorithm_config.json").read_text())
    assert [u["key"] for u in data["unsaved"]] == ["env_to_module_connector"]
    assert not list(ckpt.rglob("*.pkl"))
    with pytest.raises(CheckpointError, match="env_to_module_connector.*config=") as err:
        Algorithm.from_checkpoint(str(ckpt))
    assert "algorithm_config.json" in str(err.value)
    Algorithm.from_checkpoint(str(ckpt), config=config).stop()


def test_a_lambda_policy_mapping_is_saved_as_its_agent_table(tmp_path):
    config = (
        PPOConfig().environment(MultiAgentCartPole, env_config={"num_agents": 2})
        .multi_agent(policies={"p0", "p1"}, policy_mapping_fn=lambda aid, episode, **kw: f"p{aid}")
        .rl_module(model_config=SMALL_MODEL).training(**TINY).debugging(seed=0)
    )
    algo = config.build()
    rng_before = (torch.get_rng_state().clone(), np.random.get_state()[1].copy(), random.getstate())
    ckpt = algo.save_to_path(str(tmp_path / "ckpt"))
    assert torch.equal(torch.get_rng_state(), rng_before[0]) and random.getstate() == rng_before[2]
    algo.stop()
    restored = Algorithm.from_checkpoint(ckpt)
    mapping = restored.config.policy_mapping_fn
    assert isinstance(mapping, RecordedPolicyMapping) and mapping.table == {0: "p0", 1: "p1"}
    assert restored.train()["training_iteration"] == 1
    restored.stop()


def test_a_mapping_that_needs_the_episode_is_unsaved(tmp_path):
    config = (
        PPOConfig().environment(MultiAgentCartPole, env_config={"num_agents": 2})
        .multi_agent(policies={"p0", "p1"},
                     policy_mapping_fn=lambda aid, episode, **kw: f"p{(aid + episode.env_index) % 2}")
        .rl_module(model_config=SMALL_MODEL).training(**TINY)
    )
    algo = config.build()
    ckpt = algo.save_to_path(str(tmp_path / "ckpt"))
    algo.stop()
    with pytest.raises(CheckpointError, match="policy_mapping_fn"):
        Algorithm.from_checkpoint(ckpt)


# --------------------------------------------------------- saving never destroys
def test_saving_onto_a_users_directory_is_refused_and_deletes_nothing(tmp_path):
    algo = tiny_config().build()
    user_dir = tmp_path / "my_notes"
    user_dir.mkdir()
    (user_dir / "notes.txt").write_text("three weeks of thoughts")
    with pytest.raises(CheckpointError) as err:
        algo.save_to_path(str(user_dir))
    assert str(user_dir) in str(err.value)
    assert (user_dir / "notes.txt").read_text() == "three weeks of thoughts"
    assert sorted(os.listdir(tmp_path)) == ["my_notes"]  # no staging left behind
    a_file = tmp_path / "results.csv"
    a_file.write_text("1,2\n")
    with pytest.raises(CheckpointError, match="results.csv"):
        algo.save_to_path(str(a_file))
    assert a_file.read_text() == "1,2\n"
    module = algo.get_module()
    with pytest.raises(CheckpointError, match="my_notes"):
        module.save_to_path(str(user_dir))
    algo.stop()


def test_a_checkpoint_with_a_users_file_inside_is_not_overwritten(tmp_path):
    algo = tiny_config().build()
    ckpt = Path(algo.save_to_path(str(tmp_path / "ckpt")))
    (ckpt / "README.txt").write_text("which run this was")
    with pytest.raises(CheckpointError, match="README.txt"):
        algo.save_to_path(str(ckpt))
    assert (ckpt / "README.txt").exists()
    (ckpt / "README.txt").unlink()
    (ckpt / "algorithm_config.pkl").write_bytes(b"left by an older marl")
    algo.save_to_path(str(ckpt))  # ours (and an old format's leftover): replaced
    assert not (ckpt / "algorithm_config.pkl").exists()
    algo.stop()


def test_saving_into_an_empty_directory_or_over_a_checkpoint_works(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    algo = tiny_config().build()
    algo.save_to_path(str(empty))
    algo.train()
    algo.save_to_path(str(empty))
    restored = Algorithm.from_checkpoint(str(empty), config=tiny_config())
    assert restored.iteration == 1
    restored.stop()
    assert sorted(os.listdir(tmp_path)) == ["empty"]
    algo.stop()


def make_module(seed):
    torch.manual_seed(seed)
    return DefaultPPOTorchRLModule(observation_space=gym.spaces.Box(-1, 1, (4,)),
                                   action_space=gym.spaces.Discrete(2), model_config=SMALL_MODEL)


def same_weights(a, b):
    sa, sb = a.get_state(), b.get_state()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


class _Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, no except/finally of ours does cleanup."""


@pytest.mark.parametrize("step, survivor", [
    ("first rename", "old"), ("second rename", "new"), ("removing the old copy", "new"),
])
def test_a_save_killed_at_each_rename_step_leaves_a_loadable_checkpoint(tmp_path, monkeypatch, step, survivor):
    monkeypatch.setattr(checkpoint_io, "_exchange", lambda a, b: False)  # systems without an atomic swap
    old, new = make_module(0), make_module(1)
    path = old.save_to_path(str(tmp_path / "ckpt"))
    real_replace, real_rmtree = os.replace, shutil.rmtree
    calls = []

    def replace(src, dst):
        calls.append(src)
        if (step == "first rename" and len(calls) == 1) or (step == "second rename" and len(calls) == 2):
            raise _Killed
        return real_replace(src, dst)

    def rmtree(p, *args, **kwargs):
        if step == "removing the old copy" and ".old-" in str(p):
            (Path(p) / "module_state.safetensors").unlink()  # half removed
            raise _Killed
        return real_rmtree(p, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(checkpoint_io.os, "replace", replace)
        m.setattr(checkpoint_io.shutil, "rmtree", rmtree)
        with pytest.raises(_Killed):
            new.save_to_path(path)
    assert len(os.listdir(tmp_path)) > 1  # the kill left something behind
    loaded = RLModule.from_checkpoint(path)
    assert same_weights(loaded, {"old": old, "new": new}[survivor])
    new.save_to_path(path)
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]  # leftovers cleaned by the next save
    assert same_weights(RLModule.from_checkpoint(path), new)


def exchange_supported(directory: Path) -> bool:
    a, b = directory / "a", directory / "b"
    a.mkdir()
    b.mkdir()
    try:
        return checkpoint_io._exchange(a, b)
    finally:
        shutil.rmtree(a)
        shutil.rmtree(b)


@pytest.mark.parametrize("step, survivor", [("swap", "old"), ("removing the old copy", "new")])
def test_a_save_killed_around_the_atomic_swap_keeps_one_complete_checkpoint(tmp_path, monkeypatch, step, survivor):
    if not exchange_supported(tmp_path):
        pytest.skip("this filesystem cannot swap directories atomically")
    old, new = make_module(0), make_module(1)
    path = old.save_to_path(str(tmp_path / "ckpt"))
    real_exchange, real_rmtree = checkpoint_io._exchange, shutil.rmtree

    def exchange(a, b):
        if step == "swap":
            raise _Killed
        return real_exchange(a, b)

    def rmtree(p, *args, **kwargs):
        if ".writing-" in str(p):
            raise _Killed
        return real_rmtree(p, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(checkpoint_io, "_exchange", exchange)
        m.setattr(checkpoint_io.shutil, "rmtree", rmtree)
        with pytest.raises(_Killed):
            new.save_to_path(path)
    assert len(os.listdir(tmp_path)) > 1  # the kill left something behind
    assert same_weights(RLModule.from_checkpoint(path), {"old": old, "new": new}[survivor])
    new.save_to_path(path)
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]


def test_an_algorithm_save_killed_between_renames_is_found_by_from_checkpoint(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(checkpoint_io, "_exchange", lambda a, b: False)
    algo = tiny_config().build()
    path = algo.save_to_path(str(tmp_path / "ckpt"))
    algo.train()
    real_replace, calls = os.replace, []

    def replace(src, dst):
        calls.append(src)
        if len(calls) == 2:
            raise _Killed
        return real_replace(src, dst)

    with monkeypatch.context() as m:
        m.setattr(checkpoint_io.os, "replace", replace)
        with pytest.raises(_Killed):
            algo.save_to_path(path)
    assert not Path(path).exists()
    restored = Algorithm.from_checkpoint(path, config=tiny_config())
    assert restored.iteration == 1  # the complete new copy
    assert ".ckpt.writing-" in caplog.text
    restored.stop()
    algo.save_to_path(path)
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]
    algo.stop()


KILL_SCRIPT = textwrap.dedent("""
    import sys
    import gymnasium as gym
    import torch
    from marl import DefaultModelConfig, DefaultPPOTorchRLModule
    from marl.core import checkpoint_io

    if sys.argv[2] == "no-swap":
        checkpoint_io._exchange = lambda a, b: False
    modules = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        modules.append(DefaultPPOTorchRLModule(
            observation_space=gym.spaces.Box(-1, 1, (4,)), action_space=gym.spaces.Discrete(2),
            model_config=DefaultModelConfig(fcnet_hiddens=[8], head_fcnet_hiddens=[8])))
    modules[0].save_to_path(sys.argv[1])
    print("ready", flush=True)
    i = 0
    while True:
        i += 1
        modules[i % 2].save_to_path(sys.argv[1])
""")


@pytest.mark.parametrize("mode", ["swap", "no-swap"])
def test_saves_killed_at_random_moments_keep_the_previous_checkpoint_loadable(tmp_path, mode):
    rng = random.Random(7)
    path = tmp_path / "ckpt"
    candidates = [make_module(0), make_module(1)]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    for attempt in range(2):
        proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(path), mode], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)
        try:
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
            time.sleep(rng.uniform(0.0, 0.3))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        loaded = RLModule.from_checkpoint(str(path))
        assert any(same_weights(loaded, c) for c in candidates)
        candidates[0].save_to_path(str(path))
        assert sorted(os.listdir(tmp_path)) == ["ckpt"], f"attempt {attempt}"


# ----------------------------------------------------------- resume honours lr
def test_from_checkpoint_with_a_new_config_trains_with_its_lr(tmp_path):
    algo = tiny_config(lr=1e-3).build()
    algo.train()
    ckpt = algo.save_to_path(str(tmp_path / "ckpt"))
    saved_optimizer = copy.deepcopy(algo.learner.optimizers["default_policy/default_optimizer"].state_dict())
    algo.stop()
    resumed = Algorithm.from_checkpoint(ckpt, config=tiny_config(lr=0.05))
    opt = resumed.learner.optimizers["default_policy/default_optimizer"]
    assert [g["lr"] for g in opt.param_groups] == [0.05]
    state = opt.state_dict()["state"]
    assert_same(state, saved_optimizer["state"])  # moments and step counts restored
    resumed.train()
    assert [g["lr"] for g in opt.param_groups] == [0.05]
    resumed.stop()


def test_restore_into_an_algorithm_keeps_its_lr(trained):
    _, ckpt = trained
    target = tiny_config(lr=0.02).build()
    target.restore_from_path(str(ckpt))
    assert [g["lr"] for o in target.learner.optimizers.values() for g in o.param_groups] == [0.02]
    assert target.iteration == 1
    target.stop()


def test_a_module_with_the_current_lr_takes_a_step_of_that_size(tmp_path):
    """The restored Adam state with lr 0.05 moves weights 50x further than with lr 0.001."""
    algo = tiny_config(lr=1e-3, seed=3).build()
    algo.train()
    ckpt = algo.save_to_path(str(tmp_path / "ckpt"))
    algo.stop()
    deltas = {}
    for lr in (1e-3, 0.05):
        resumed = Algorithm.from_checkpoint(ckpt, config=tiny_config(lr=lr, seed=3))
        before = torch.cat([p.detach().flatten() for p in resumed.get_module().parameters()]).clone()
        resumed.train()
        after = torch.cat([p.detach().flatten() for p in resumed.get_module().parameters()])
        deltas[lr] = (after - before).abs().max().item()
        resumed.stop()
    assert deltas[0.05] > 10 * deltas[1e-3]
