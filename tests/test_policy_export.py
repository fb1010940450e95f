"""Exporting one policy of a shared-encoder container as a module that acts alone (issue 17)."""
import gymnasium as gym
import pytest
import torch

from envs import MultiAgentCartPole
from marl import SHARED_ENCODER_ID, Columns, DefaultModelConfig, PPOConfig, RLModule
from marl.core import checkpoint_io as io
from marl.core.export import ExportedPolicyRLModule, export_policy, export_policy_from_checkpoint
from marl.models import shared_encoder_module_spec
from marl.models.shared_encoder_sac import SharedEncoderSACHead
from tests.guide_examples import shared_encoder_corrected as corrected
from tests.test_multi_rl_module import OBS4, build_ready_made, guide_shared_encoder_spec, guide_two_module_spec

SMALL = DefaultModelConfig(fcnet_hiddens=[16], head_fcnet_hiddens=[8])


def build_ready_made_sac():
    spec = shared_encoder_module_spec(["p0", "p1"], SMALL, observation_space=OBS4, head_class=SharedEncoderSACHead)
    spec.observation_space, spec.action_space = OBS4, gym.spaces.Box(-1.0, 1.0, (2,))
    return spec.build()


CONTAINERS = {
    "ready-made PPO heads": build_ready_made,
    "ready-made SAC heads": build_ready_made_sac,
    "guide's VPG container": lambda: guide_shared_encoder_spec(corrected).build(),
}


def container_logits(multi, obs, phase="forward_inference"):
    """The container's output for p1, with p0 in the same batch (one joined encoder call)."""
    out = getattr(multi, phase)({"p0": {Columns.OBS: obs.clone()}, "p1": {Columns.OBS: obs.clone()}})
    return out["p1"][Columns.ACTION_DIST_INPUTS]


def alone_logits(module, obs, phase="forward_inference"):
    return getattr(module, phase)({Columns.OBS: obs.clone()})[Columns.ACTION_DIST_INPUTS]


@pytest.mark.parametrize("kind", sorted(CONTAINERS))
def test_exported_policy_acts_alone_like_the_container_and_after_a_roundtrip(kind, tmp_path):
    torch.manual_seed(0)
    multi = CONTAINERS[kind]()
    obs = torch.randn(6, 4)
    exported = multi.export_policy("p1")
    assert isinstance(exported, ExportedPolicyRLModule)
    for phase in ("forward_inference", "forward_exploration"):
        torch.testing.assert_close(alone_logits(exported, obs, phase), container_logits(multi, obs, phase),
                                   rtol=0, atol=1e-6)
    path = exported.save_to_path(str(tmp_path / "p1_alone"))
    assert sorted(p.name for p in (tmp_path / "p1_alone").iterdir()) == ["metadata.json", io.MODULE_STATE_FILE]
    loaded = RLModule.from_checkpoint(path)
    assert type(loaded) is ExportedPolicyRLModule and loaded.policy_id == "p1"
    assert torch.equal(alone_logits(loaded, obs), alone_logits(exported, obs))
    torch.testing.assert_close(alone_logits(loaded, obs), container_logits(multi, obs), rtol=0, atol=1e-6)
    assert loaded.get_inference_action_dist_cls() is multi["p1"].get_inference_action_dist_cls()


def test_exported_weights_are_copies_that_further_training_leaves_alone():
    torch.manual_seed(0)
    multi = build_ready_made()
    obs = torch.randn(6, 4)
    exported = export_policy(multi, "p1")
    before = alone_logits(exported, obs)
    live = {p.data_ptr() for p in multi.parameters()}
    assert not any(p.data_ptr() in live for p in exported.parameters())
    optimizer = torch.optim.SGD(multi.parameters(), lr=0.5)
    out = multi.forward_train({"p0": {Columns.OBS: obs}, "p1": {Columns.OBS: obs}})
    sum(o[Columns.ACTION_DIST_INPUTS].pow(2).sum() + o[Columns.VF_PREDS].sum() for o in out.values()).backward()
    optimizer.step()
    assert not torch.allclose(container_logits(multi, obs), before)  # the container did change
    assert torch.equal(alone_logits(exported, obs), before)


def test_exporting_an_unknown_or_shared_module_id_names_it_and_the_policy_ids():
    multi = build_ready_made()
    with pytest.raises(KeyError) as err:
        multi.export_policy("bogus")
    message = str(err.value)
    assert "'bogus'" in message and "not in this container" in message and "['p0', 'p1']" in message
    with pytest.raises(KeyError, match=rf"'{SHARED_ENCODER_ID}'.*non-policy.*\['p0', 'p1'\]"):
        export_policy(multi, SHARED_ENCODER_ID)
    with pytest.raises(TypeError, match="SharedEncoderPolicyHead.*container"):
        export_policy(multi["p1"], "p1")


def test_a_policy_that_acts_alone_exports_as_a_copy_of_itself():
    multi = guide_two_module_spec().build()
    exported = multi.export_policy("module_2")
    assert type(exported) is type(multi["module_2"]) and exported is not multi["module_2"]
    obs = torch.randn(3, 5)
    assert torch.equal(alone_logits(exported, obs), alone_logits(multi["module_2"], obs))


@pytest.mark.parametrize("field, expected", [("container", "expected a subclass of MultiRLModule"),
                                             ("modules", "standard-library")])
def test_a_tampered_export_naming_other_classes_is_refused(tmp_path, field, expected):
    path = tmp_path / "p1"
    build_ready_made().export_policy("p1").save_to_path(str(path))
    meta = io.read_json(path / io.METADATA_FILE)
    if field == "container":
        meta["model_config"]["container"]["class"] = "marl.models.shared_encoder:SharedEncoderModule"
    else:
        meta["model_config"]["modules"]["p1"]["class"] = "os:system"
    io.write_metadata(path, meta)  # checksums recomputed, as anyone who edits the files can
    with pytest.raises(io.CheckpointError, match=expected):
        RLModule.from_checkpoint(str(path))


def test_policy_of_an_algorithm_checkpoint_exports_from_its_component_path(tmp_path):
    config = (
        PPOConfig()
        .environment(MultiAgentCartPole, env_config={"num_agents": 2})
        .multi_agent(policies={"p0", "p1"}, policy_mapping_fn=lambda aid, episode, **kw: f"p{aid}")
        .rl_module(rl_module_spec=shared_encoder_module_spec(["p0", "p1"], SMALL))
        .debugging(seed=0)
    )
    algo = config.build()
    try:
        ckpt = algo.save_to_path(str(tmp_path / "ckpt"))
        obs = torch.randn(5, 4)
        expected = container_logits(algo.get_module(None), obs)
        torch.testing.assert_close(alone_logits(export_policy(algo, "p1"), obs), expected, rtol=0, atol=1e-6)
    finally:
        algo.stop()
    component = f"{ckpt}/learner_group/learner/rl_module/p1"
    head = RLModule.from_checkpoint(component)  # the old path: a head without its encoder
    with pytest.raises(KeyError, match="cannot act alone.*export_policy"):
        head.forward_inference({Columns.OBS: obs})
    for source in (component, ckpt):
        exported = export_policy_from_checkpoint(source, None if source == component else "p1")
        torch.testing.assert_close(alone_logits(exported, obs), expected, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match=r"\['p0', 'p1'\].*module_id"):
        export_policy_from_checkpoint(ckpt)
