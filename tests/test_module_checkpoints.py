"""Single-module checkpoints: round trips, fresh interpreters, corrupt files, atomicity."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import gymnasium as gym
import pytest
import torch

from marl import Columns, DefaultModelConfig, DefaultPPOTorchRLModule, RLModule
from marl.core import checkpoint_io
from marl.core.checkpoint_io import CheckpointError

OBS = gym.spaces.Box(-1.0, 1.0, (4,))


def make_module(hiddens=(16,), action_space=gym.spaces.Discrete(3), **kw):
    return DefaultPPOTorchRLModule(
        observation_space=OBS, action_space=action_space,
        model_config=DefaultModelConfig(fcnet_hiddens=list(hiddens), **kw),
    )


@pytest.mark.parametrize(
    "action_space",
    [gym.spaces.Discrete(3), gym.spaces.MultiDiscrete([2, 3]), gym.spaces.Box(-1, 1, (2,))],
)
def test_round_trip_gives_bit_identical_outputs(tmp_path, action_space):
    torch.manual_seed(0)
    module = make_module(action_space=action_space, free_log_std=isinstance(action_space, gym.spaces.Box))
    path = module.save_to_path(str(tmp_path / "ckpt"))
    restored = RLModule.from_checkpoint(path)
    assert type(restored) is DefaultPPOTorchRLModule
    assert restored.observation_space == OBS and restored.action_space == action_space
    obs = torch.randn(10, 4)
    a, b = module.forward_train({Columns.OBS: obs}), restored.forward_train({Columns.OBS: obs})
    assert torch.equal(a[Columns.ACTION_DIST_INPUTS], b[Columns.ACTION_DIST_INPUTS])
    assert torch.equal(a[Columns.VF_PREDS], b[Columns.VF_PREDS])


def test_checkpoint_layout_is_json_metadata_and_safetensors(tmp_path):
    path = Path(make_module().save_to_path(str(tmp_path / "ckpt")))
    assert sorted(p.name for p in path.iterdir()) == ["metadata.json", "module_state.safetensors"]
    meta = json.loads((path / "metadata.json").read_text())
    assert meta["class"] == "marl.models.default_ppo_rl_module:DefaultPPOTorchRLModule"
    assert meta["observation_space"]["type"] == "Box" and meta["inference_only"] is False
    assert meta["model_config"]["fcnet_hiddens"] == [16]


def test_save_to_path_without_path_returns_a_fresh_directory():
    path = make_module().save_to_path()
    assert (Path(path) / "metadata.json").is_file()


def test_from_checkpoint_in_a_fresh_interpreter(tmp_path):
    torch.manual_seed(1)
    module = make_module(hiddens=(8, 8))
    path = module.save_to_path(str(tmp_path / "ckpt"))
    obs = torch.randn(5, 4)
    torch.save(obs, tmp_path / "obs.pt")
    expected = module.forward_inference({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]
    script = textwrap.dedent(f"""
        import torch
        from marl import RLModule, Columns
        m = RLModule.from_checkpoint({path!r})
        obs = torch.load({str(tmp_path / 'obs.pt')!r})
        out = m.forward_inference({{Columns.OBS: obs}})[Columns.ACTION_DIST_INPUTS]
        torch.save(out, {str(tmp_path / 'out.pt')!r})
        print(type(m).__name__)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "DefaultPPOTorchRLModule"
    assert torch.equal(torch.load(tmp_path / "out.pt"), expected)


def test_truncated_weights_file_raises_naming_the_file(tmp_path):
    path = Path(make_module().save_to_path(str(tmp_path / "ckpt")))
    weights = path / "module_state.safetensors"
    weights.write_bytes(weights.read_bytes()[:50])
    with pytest.raises(CheckpointError) as err:
        RLModule.from_checkpoint(str(path))
    assert str(weights) in str(err.value)


def test_corrupt_metadata_raises_naming_the_file(tmp_path):
    path = Path(make_module().save_to_path(str(tmp_path / "ckpt")))
    (path / "metadata.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="metadata.json"):
        RLModule.from_checkpoint(str(path))


def test_missing_checkpoint_raises_naming_the_path(tmp_path):
    with pytest.raises(CheckpointError, match="nowhere"):
        RLModule.from_checkpoint(str(tmp_path / "nowhere"))


def test_restoring_other_architecture_names_parameter_and_shapes(tmp_path):
    path = make_module(hiddens=(16,)).save_to_path(str(tmp_path / "ckpt"))
    other = make_module(hiddens=(32,))
    with pytest.raises(CheckpointError) as err:
        other.restore_from_path(path)
    msg = str(err.value)
    assert "encoder" in msg and "(32, 4)" in msg and "(16, 4)" in msg


def test_interrupted_save_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    torch.manual_seed(0)
    good = make_module()
    path = good.save_to_path(str(tmp_path / "ckpt"))
    before = (Path(path) / "module_state.safetensors").read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_io, "save_tensors", crash)
    with pytest.raises(OSError, match="disk full"):
        make_module().save_to_path(path)
    assert (Path(path) / "module_state.safetensors").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]  # no staging directory left behind
    restored = RLModule.from_checkpoint(path)
    obs = torch.randn(3, 4)
    assert torch.equal(
        restored.forward_inference({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS],
        good.forward_inference({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS],
    )


def test_saving_over_an_existing_checkpoint_replaces_it(tmp_path):
    path = make_module(hiddens=(16,)).save_to_path(str(tmp_path / "ckpt"))
    make_module(hiddens=(8,)).save_to_path(path)
    assert RLModule.from_checkpoint(path).model_config["fcnet_hiddens"] == [8]


def test_class_defined_in_a_function_gives_a_clear_error(tmp_path):
    from marl import TorchRLModule

    class Local(TorchRLModule):
        def setup(self):
            self.net = torch.nn.Linear(4, 2)

    path = Local(observation_space=OBS, action_space=gym.spaces.Discrete(2)).save_to_path(str(tmp_path / "c"))
    with pytest.raises(CheckpointError, match="inside a function"):
        RLModule.from_checkpoint(path)


def test_lstm_module_round_trip_keeps_recurrent_outputs(tmp_path):
    torch.manual_seed(2)
    module = make_module(hiddens=(8,), use_lstm=True, lstm_cell_size=8)
    restored = RLModule.from_checkpoint(module.save_to_path(str(tmp_path / "c")))
    obs = torch.randn(2, 5, 4)
    state = {k: v.expand(2, -1) for k, v in module.get_initial_state().items()}
    a = module.forward_train({Columns.OBS: obs, Columns.STATE_IN: state})
    b = restored.forward_train({Columns.OBS: obs, Columns.STATE_IN: state})
    assert torch.equal(a[Columns.ACTION_DIST_INPUTS], b[Columns.ACTION_DIST_INPUTS])
    assert torch.equal(a[Columns.STATE_OUT]["h"], b[Columns.STATE_OUT]["h"])
