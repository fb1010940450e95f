"""MultiRLModule containers, specs, shared encoders and per-module checkpoints."""
import subprocess
import sys
import textwrap
from pathlib import Path

import gymnasium as gym
import pytest
import torch

from marl import (
    DEFAULT_MODULE_ID,
    SHARED_ENCODER_ID,
    Columns,
    DefaultBCTorchRLModule,
    DefaultModelConfig,
    MultiRLModule,
    MultiRLModuleSpec,
    RLModule,
    RLModuleSpec,
)
from marl.models import SharedEncoderMultiRLModule, shared_encoder_module_spec
from tests.guide_examples import shared_encoder_as_printed as printed
from tests.guide_examples import shared_encoder_corrected as corrected

OBS4 = gym.spaces.Box(-1.0, 1.0, (4,))
ACT2 = gym.spaces.Discrete(2)
TESTS_DIR = Path(__file__).resolve().parent


def guide_two_module_spec():
    # Guide: "Construction through RLModuleSpecs" (MultiRLModuleSpec, verbatim).
    return MultiRLModuleSpec(
        rl_module_specs={
            "module_1": RLModuleSpec(
                module_class=DefaultBCTorchRLModule,
                observation_space=gym.spaces.Box(low=-1, high=1, shape=(10,)),
                action_space=gym.spaces.Discrete(2),
                model_config={"fcnet_hiddens": [32]},
            ),
            "module_2": RLModuleSpec(
                module_class=DefaultBCTorchRLModule,
                observation_space=gym.spaces.Box(low=-1, high=1, shape=(5,)),
                action_space=gym.spaces.Discrete(2),
                model_config={"fcnet_hiddens": [16]},
            ),
        },
    )


def test_guide_multi_module_spec_builds_both_modules_with_their_configs():
    multi_rl_module = guide_two_module_spec().build()
    assert isinstance(multi_rl_module, MultiRLModule)
    assert sorted(multi_rl_module.keys()) == ["module_1", "module_2"]
    out = multi_rl_module.forward_inference(
        {"module_1": {Columns.OBS: torch.zeros(3, 10)}, "module_2": {Columns.OBS: torch.zeros(2, 5)}}
    )
    assert out["module_1"][Columns.ACTION_DIST_INPUTS].shape == (3, 2)
    assert out["module_2"][Columns.ACTION_DIST_INPUTS].shape == (2, 2)
    assert multi_rl_module["module_1"].encoder.obs_encoder.net[0].out_features == 32
    assert multi_rl_module["module_2"].encoder.obs_encoder.net[0].out_features == 16


def test_default_forward_runs_only_modules_in_the_batch():
    multi = guide_two_module_spec().build()
    out = multi.forward_exploration({"module_2": {Columns.OBS: torch.zeros(1, 5)}})
    assert list(out) == ["module_2"]


def test_unknown_module_id_in_batch_names_valid_ids():
    multi = guide_two_module_spec().build()
    with pytest.raises(KeyError) as err:
        multi.forward_train({"module_3": {Columns.OBS: torch.zeros(1, 5)}})
    assert "module_3" in str(err.value) and "module_1" in str(err.value) and "module_2" in str(err.value)


def test_mapping_interface_add_remove_foreach():
    multi = guide_two_module_spec().build()
    assert len(multi) == 2 and "module_1" in multi and "nope" not in multi
    assert dict(multi.items())["module_1"] is multi["module_1"]
    extra = DefaultBCTorchRLModule(observation_space=OBS4, action_space=ACT2, model_config={"fcnet_hiddens": [4]})
    multi.add_module("module_3", extra)
    assert multi["module_3"] is extra and len(multi) == 3
    with pytest.raises(ValueError, match="module_3"):
        multi.add_module("module_3", extra)
    multi.add_module("module_3", extra, override=True)
    sizes = multi.foreach_module(lambda mid, m: sum(p.numel() for p in m.parameters()), return_dict=True)
    assert set(sizes) == {"module_1", "module_2", "module_3"} and sizes["module_3"] == 4 * 4 + 4 + 4 * 2 + 2
    multi.remove_module("module_3")
    assert "module_3" not in multi
    with pytest.raises(KeyError, match="module_1"):
        multi.remove_module("module_3")
    with pytest.raises(KeyError, match="valid ids"):
        multi["missing"]


def test_container_is_one_nn_module():
    multi = guide_two_module_spec().build()
    own = sum(p.numel() for m in multi.values() for p in m.parameters())
    assert sum(p.numel() for p in multi.parameters()) == own
    multi.to(torch.float64)
    assert all(p.dtype == torch.float64 for p in multi.parameters())


def test_single_spec_is_shared_by_every_policy_and_fills_spaces_from_container():
    spec = MultiRLModuleSpec(
        observation_space=OBS4, action_space=ACT2,
        rl_module_specs=RLModuleSpec(module_class=DefaultBCTorchRLModule, model_config={"fcnet_hiddens": [8]}),
    )
    specs = spec.module_specs(["p0", "p1"])
    assert set(specs) == {"p0", "p1"} and specs["p0"] is not specs["p1"]
    assert specs["p0"].observation_space == OBS4 and specs["p1"].action_space == ACT2
    alone = spec.build()
    assert list(alone.keys()) == [DEFAULT_MODULE_ID]


def guide_shared_encoder_spec(module):
    EMBEDDING_DIM = 64
    return MultiRLModuleSpec(
        multi_rl_module_class=module.VPGMultiRLModuleWithSharedEncoder,
        rl_module_specs={
            SHARED_ENCODER_ID: RLModuleSpec(
                module_class=module.SharedEncoder,
                model_config={"embedding_dim": EMBEDDING_DIM},
                observation_space=OBS4,
            ),
            "p0": RLModuleSpec(
                module_class=module.VPGPolicyAfterSharedEncoder,
                observation_space=OBS4, action_space=ACT2,
                model_config={"embedding_dim": EMBEDDING_DIM, "hidden_dim": 1024},
            ),
            "p1": RLModuleSpec(
                module_class=module.VPGPolicyAfterSharedEncoder,
                observation_space=OBS4, action_space=ACT2,
                model_config={"embedding_dim": EMBEDDING_DIM, "hidden_dim": 64},
            ),
        },
    )


def test_guide_shared_encoder_classes_as_printed_import_build_and_print():
    multi = guide_shared_encoder_spec(printed).build()
    text = str(multi)
    assert "SharedEncoder" in text and "VPGPolicyAfterSharedEncoder" in text
    assert multi.encoder is multi[SHARED_ENCODER_ID]
    assert multi.non_policy_module_ids == [SHARED_ENCODER_ID]
    assert sorted(multi.policy_module_ids) == ["p0", "p1"]


@pytest.mark.parametrize("phase", ["forward_train", "forward_exploration", "forward_inference"])
def test_guide_shared_encoder_forward_in_every_phase(phase):
    torch.manual_seed(0)
    multi = guide_shared_encoder_spec(corrected).build()
    batch = {"p0": {Columns.OBS: torch.randn(3, 4)}, "p1": {Columns.OBS: torch.randn(5, 4)}}
    out = getattr(multi, phase)(batch)
    assert out["p0"][Columns.ACTION_DIST_INPUTS].shape == (3, 2)
    assert out["p1"][Columns.ACTION_DIST_INPUTS].shape == (5, 2)
    assert out["p0"][Columns.ACTION_DIST_INPUTS].requires_grad == (phase == "forward_train")


def _logits(multi, obs):
    batch = {"p0": {Columns.OBS: obs.clone()}, "p1": {Columns.OBS: obs.clone()}}
    out = multi.forward_inference(batch)
    return out["p0"][Columns.ACTION_DIST_INPUTS], out["p1"][Columns.ACTION_DIST_INPUTS]


@pytest.mark.parametrize("kind", ["guide", "ready_made"])
def test_both_policies_depend_on_the_one_encoder(kind):
    torch.manual_seed(0)
    if kind == "guide":
        multi = guide_shared_encoder_spec(corrected).build()
        encoder_weight = multi.encoder._net[0].weight
    else:
        multi = build_ready_made()
        encoder_weight = multi.encoder.net.net[0].weight
    obs = torch.randn(6, 4)
    before0, before1 = _logits(multi, obs)
    with torch.no_grad():
        encoder_weight[0, 0] += 1.0
    after0, after1 = _logits(multi, obs)
    assert not torch.allclose(before0, after0) and not torch.allclose(before1, after1)
    # The encoder's parameters are counted once in the de-duplicated list.
    params = list(multi.parameters())
    assert sum(p is encoder_weight for p in params) == 1
    assert sum(p.numel() for p in params) == sum(
        p.numel() for m in multi.values() for p in m.parameters()
    )


def build_ready_made():
    spec = shared_encoder_module_spec(
        ["p0", "p1"], DefaultModelConfig(fcnet_hiddens=[16], head_fcnet_hiddens=[8]), observation_space=OBS4
    )
    spec.observation_space, spec.action_space = OBS4, ACT2  # what the algorithm fills in
    return spec.build()


def test_ready_made_shared_encoder_outputs_values_and_encodes_in_one_call(monkeypatch):
    multi = build_ready_made()
    assert isinstance(multi, SharedEncoderMultiRLModule)
    calls = []
    original = multi.encoder._forward
    monkeypatch.setattr(multi.encoder, "_forward", lambda b, **k: calls.append(1) or original(b))
    out = multi.forward_train({"p0": {Columns.OBS: torch.randn(3, 4)}, "p1": {Columns.OBS: torch.randn(2, 4)}})
    assert len(calls) == 1
    assert out["p0"][Columns.VF_PREDS].shape == (3,) and out["p1"][Columns.ACTION_DIST_INPUTS].shape == (2, 2)


# ------------------------------------------------------------------ checkpoints
def _outputs(multi, obs):
    out = multi.forward_inference({"p0": {Columns.OBS: obs.clone()}, "p1": {Columns.OBS: obs.clone()}})
    return {mid: o[Columns.ACTION_DIST_INPUTS] for mid, o in out.items()}


def test_container_checkpoint_has_one_loadable_directory_per_module(tmp_path):
    torch.manual_seed(0)
    multi = guide_shared_encoder_spec(corrected).build()
    path = Path(multi.save_to_path(str(tmp_path / "multi")))
    assert sorted(p.name for p in path.iterdir()) == ["metadata.json", "p0", "p1", SHARED_ENCODER_ID]
    obs = torch.randn(4, 4)
    for mid in ("p0", "p1", SHARED_ENCODER_ID):
        alone = RLModule.from_checkpoint(str(path / mid))
        assert type(alone) is type(multi[mid])
        for (name, a), (_, b) in zip(alone.state_dict().items(), multi[mid].state_dict().items()):
            assert torch.equal(a, b), name
    encoder = RLModule.from_checkpoint(str(path / SHARED_ENCODER_ID))
    assert torch.equal(
        encoder._forward({Columns.OBS: obs})["encoder_embeddings"],
        multi.encoder._forward({Columns.OBS: obs})["encoder_embeddings"],
    )


def test_container_rebuilt_in_a_fresh_interpreter_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    multi = guide_shared_encoder_spec(corrected).build()
    path = multi.save_to_path(str(tmp_path / "multi"))
    obs = torch.randn(4, 4)
    torch.save(obs, tmp_path / "obs.pt")
    expected = _outputs(multi, obs)
    script = textwrap.dedent(f"""
        import torch
        from marl import RLModule, Columns
        m = RLModule.from_checkpoint({path!r})
        obs = torch.load({str(tmp_path / 'obs.pt')!r})
        out = m.forward_inference({{"p0": {{Columns.OBS: obs.clone()}}, "p1": {{Columns.OBS: obs.clone()}}}})
        torch.save({{k: v[Columns.ACTION_DIST_INPUTS] for k, v in out.items()}}, {str(tmp_path / 'out.pt')!r})
        print(type(m).__name__)
    """)
    env = dict(__import__("os").environ, PYTHONPATH=str(TESTS_DIR.parent))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "VPGMultiRLModuleWithSharedEncoder"
    got = torch.load(tmp_path / "out.pt")
    assert torch.equal(got["p0"], expected["p0"]) and torch.equal(got["p1"], expected["p1"])


def test_restore_one_component_in_place(tmp_path):
    torch.manual_seed(0)
    source = guide_shared_encoder_spec(corrected).build()
    path = source.save_to_path(str(tmp_path / "multi"))
    torch.manual_seed(1)
    target = guide_shared_encoder_spec(corrected).build()
    p1_before = {k: v.clone() for k, v in target["p1"].state_dict().items()}
    target.restore_from_path(path, component="p0")
    for k, v in target["p0"].state_dict().items():
        assert torch.equal(v, source["p0"].state_dict()[k])
    for k, v in target["p1"].state_dict().items():
        assert torch.equal(v, p1_before[k])  # untouched
    # The component's own directory works as the path too.
    target.restore_from_path(str(Path(path) / "p1"), component="p1")
    assert torch.equal(target["p1"]._pi_head[0].weight, source["p1"]._pi_head[0].weight)


def test_transplant_p0_into_a_new_container_via_load_state_path(tmp_path):
    torch.manual_seed(0)
    trained = guide_shared_encoder_spec(corrected).build()
    path = trained.save_to_path(str(tmp_path / "multi"))
    torch.manual_seed(5)
    spec = guide_shared_encoder_spec(corrected)
    spec.load_state_path = path
    spec.modules_to_load = ["p0"]
    fresh = spec.build()
    assert torch.equal(fresh["p0"]._pi_head[0].weight, trained["p0"]._pi_head[0].weight)
    assert not torch.equal(fresh["p1"]._pi_head[0].weight, trained["p1"]._pi_head[0].weight)
    # p0's outputs equal the original once the encoder is also shared-in.
    spec.modules_to_load = ["p0", SHARED_ENCODER_ID]
    both = spec.build()
    obs = torch.randn(3, 4)
    assert torch.equal(_outputs(both, obs)["p0"], _outputs(trained, obs)["p0"])


def test_modules_to_load_missing_id_names_what_the_checkpoint_holds(tmp_path):
    path = guide_shared_encoder_spec(corrected).build().save_to_path(str(tmp_path / "multi"))
    spec = guide_shared_encoder_spec(corrected)
    spec.load_state_path = path
    spec.modules_to_load = ["p7"]
    with pytest.raises(KeyError) as err:
        spec.build()
    assert "p7" in str(err.value) and "p0" in str(err.value) and SHARED_ENCODER_ID in str(err.value)


def test_ready_made_container_round_trips_through_from_checkpoint(tmp_path):
    torch.manual_seed(3)
    multi = build_ready_made()
    restored = RLModule.from_checkpoint(multi.save_to_path(str(tmp_path / "m")))
    assert type(restored) is SharedEncoderMultiRLModule
    obs = torch.randn(5, 4)
    a, b = _outputs(multi, obs), _outputs(restored, obs)
    assert torch.equal(a["p0"], b["p0"]) and torch.equal(a["p1"], b["p1"])


def test_invalid_module_ids_are_refused():
    with pytest.raises(ValueError, match="a.b"):
        MultiRLModuleSpec(rl_module_specs={"a.b": RLModuleSpec(DefaultBCTorchRLModule, OBS4, ACT2)}).build()
