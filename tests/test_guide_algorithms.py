"""The guide's algorithm-level examples, run with only the import rewrite."""
import gymnasium as gym
import pytest
import torch

from tests.guide_examples.my_rl_module import MyRLModuleClass
from tests.guide_examples import shared_encoder_corrected as guide_se

TINY = dict(train_batch_size_per_learner=256, minibatch_size=128, num_epochs=1)


def test_api_stack_switch_returns_the_config():
    from marl import AlgorithmConfig

    config = (
        AlgorithmConfig()
        .api_stack(
            enable_rl_module_and_learner=True,
            enable_env_runner_and_connector_v2=True,
        )
    )
    assert isinstance(config, AlgorithmConfig)


def test_frozenlake_with_flatten_observations_one_hot():
    from marl import PPOConfig
    from marl import FlattenObservations

    config = (
        PPOConfig()
        # FrozenLake has a discrete observation space, ...
        .environment("FrozenLake-v1")
        # ... which `FlattenObservations` converts to one-hot.
        .env_runners(env_to_module_connector=lambda env: FlattenObservations())
    )
    algo = config.training(**TINY).build()
    module = algo.get_module()
    assert module.observation_space.shape == (16,)
    result = algo.train()
    assert result["num_env_steps_sampled_lifetime"] == 256
    algo.stop()


def test_default_mlp_config_on_cartpole():
    from marl import PPOConfig
    from marl import DefaultModelConfig

    config = (
        PPOConfig()
        .environment("CartPole-v1")
        .rl_module(
            # Use a non-default 32,32-stack with ReLU activations.
            model_config=DefaultModelConfig(
                fcnet_hiddens=[32, 32],
                fcnet_activation="relu",
            )
        )
    )
    algo = config.build()
    linears = [m for m in algo.get_module().encoder.modules() if isinstance(m, torch.nn.Linear)]
    assert [l.out_features for l in linears] == [32, 32]
    algo.stop()


def test_pong_cnn_config_builds_and_runs_one_forward():
    pytest.importorskip("ale_py")
    from marl import PPOConfig
    from marl import DefaultModelConfig
    from marl import Columns

    config = (
        PPOConfig()
        .environment("ale_py:ALE/Pong-v5")  # `pip install gymnasium[atari]`
        .rl_module(
            model_config=DefaultModelConfig(
                # Use a DreamerV3-style CNN stack.
                conv_filters=[
                    [16, 4, 2],  # 1st CNN layer: num_filters, kernel, stride(, padding)?
                    [32, 4, 2],  # 2nd CNN layer
                    [64, 4, 2],  # etc..
                    [128, 4, 2],
                ],
                conv_activation="silu",
                # After the last CNN, the default model flattens, then adds an optional MLP.
                head_fcnet_hiddens=[256],
            )
        )
    )
    algo = config.training(**TINY).build()
    module = algo.get_module()
    assert module.observation_space.shape == (210, 160, 3)
    out = module.forward_inference({Columns.OBS: torch.zeros(1, 210, 160, 3, dtype=torch.uint8)})
    assert out[Columns.ACTION_DIST_INPUTS].shape == (1, 6)
    algo.stop()


def test_rl_module_spec_with_custom_class_on_cartpole(capsys):
    from marl import PPOConfig
    from marl import RLModuleSpec

    config = (
        PPOConfig()
        .environment("CartPole-v1")
        .rl_module(
            rl_module_spec=RLModuleSpec(
                module_class=MyRLModuleClass,
                model_config={"some_key": "some_setting"},
            ),
        )
    )
    ppo = config.build()
    print(ppo.get_module())
    assert "MyRLModuleClass" in capsys.readouterr().out
    assert ppo.get_module().model_config == {"some_key": "some_setting"}
    assert ppo.get_module().observation_space == gym.make("CartPole-v1").observation_space
    ppo.stop()


def test_multi_agent_cartpole_one_shared_spec(capsys):
    from marl import PPOConfig
    from marl import RLModuleSpec
    from marl import MultiRLModuleSpec
    from envs import MultiAgentCartPole

    config = (
        PPOConfig()
        .environment(MultiAgentCartPole, env_config={"num_agents": 2})
        .rl_module(
            rl_module_spec=MultiRLModuleSpec(
                # All agents (0 and 1) use the same (single) RLModule.
                rl_module_specs=RLModuleSpec(
                    module_class=MyRLModuleClass,
                    model_config={"some_key": "some_setting"},
                )
            ),
        )
    )
    ppo = config.training(**TINY).build()
    print(ppo.get_module())
    assert "MyRLModuleClass" in capsys.readouterr().out
    assert list(ppo.get_module(None).keys()) == ["default_policy"]
    result = ppo.train()
    # Both agents act with the one module.
    assert result["learners"]["default_policy"]["num_module_steps_trained"] > 256
    ppo.stop()


def test_multi_agent_cartpole_p0_p1_specs(capsys):
    from marl import PPOConfig
    from marl import RLModuleSpec
    from marl import MultiRLModuleSpec
    from envs import MultiAgentCartPole

    config = (
        PPOConfig()
        .environment(MultiAgentCartPole, env_config={"num_agents": 2})
        .multi_agent(
            policies={"p0", "p1"},
            # Agent IDs of `MultiAgentCartPole` are 0 and 1, mapping to
            # "p0" and "p1", respectively.
            policy_mapping_fn=lambda agent_id, episode, **kw: f"p{agent_id}"
        )
        .rl_module(
            rl_module_spec=MultiRLModuleSpec(
                # Agents (0 and 1) use different (single) RLModules.
                rl_module_specs={
                    "p0": RLModuleSpec(
                        module_class=MyRLModuleClass,
                        # Small network.
                        model_config={"fcnet_hiddens": [32, 32]},
                    ),
                    "p1": RLModuleSpec(
                        module_class=MyRLModuleClass,
                        # Large network.
                        model_config={"fcnet_hiddens": [128, 128]},
                    ),
                },
            ),
        )
    )
    ppo = config.training(**TINY).build()
    print(ppo.get_module())
    multi = ppo.get_module(None)
    assert sorted(multi.keys()) == ["p0", "p1"]
    assert multi["p0"].body[0].out_features == 32 and multi["p1"].body[0].out_features == 128
    result = ppo.train()
    assert {"p0", "p1"} <= set(result["learners"])
    ppo.stop()


def shared_encoder_config(config_cls):
    from marl import MultiRLModuleSpec, RLModuleSpec, SHARED_ENCODER_ID
    from envs import MultiAgentCartPole

    single_agent_env = gym.make("CartPole-v1")
    EMBEDDING_DIM = 64  # encoder output dim
    return (
        config_cls()
        .environment(MultiAgentCartPole, env_config={"num_agents": 2})
        .multi_agent(
            # Declare the two policies trained.
            policies={"p0", "p1"},
            # Agent IDs of `MultiAgentCartPole` are 0 and 1. They are mapped to
            # the two policies with ModuleIDs "p0" and "p1", respectively.
            policy_mapping_fn=lambda agent_id, episode, **kw: f"p{agent_id}"
        )
        .rl_module(
            rl_module_spec=MultiRLModuleSpec(
                multi_rl_module_class=guide_se.VPGMultiRLModuleWithSharedEncoder,
                rl_module_specs={
                    # Shared encoder.
                    SHARED_ENCODER_ID: RLModuleSpec(
                        module_class=guide_se.SharedEncoder,
                        model_config={"embedding_dim": EMBEDDING_DIM},
                        observation_space=single_agent_env.observation_space,
                    ),
                    # Large policy net.
                    "p0": RLModuleSpec(
                        module_class=guide_se.VPGPolicyAfterSharedEncoder,
                        model_config={
                            "embedding_dim": EMBEDDING_DIM,
                            "hidden_dim": 1024,
                        },
                    ),
                    # Small policy net.
                    "p1": RLModuleSpec(
                        module_class=guide_se.VPGPolicyAfterSharedEncoder,
                        model_config={
                            "embedding_dim": EMBEDDING_DIM,
                            "hidden_dim": 64,
                        },
                    ),
                },
            ),
        )
    )


def test_shared_encoder_setup_builds_with_ppo_but_train_names_missing_value_api(capsys):
    from marl import PPOConfig

    algo = shared_encoder_config(PPOConfig).training(**TINY).build()
    print(algo.get_module())
    assert "VPGMultiRLModuleWithSharedEncoder" in capsys.readouterr().out
    with pytest.raises(TypeError) as err:
        algo.train()
    assert "ValueFunctionAPI" in str(err.value) and "VPGConfig" in str(err.value)
    algo.stop()


def test_shared_encoder_setup_trains_with_vpg_and_single_optimizer():
    from marl import VPGConfig, SHARED_ENCODER_ID

    algo = shared_encoder_config(VPGConfig).training(**TINY).build()
    learner = algo.learner_group.learner
    assert list(learner.optimizers) == ["__all_modules__/default_optimizer"]
    params = [p for o in learner.optimizers.values() for g in o.param_groups for p in g["params"]]
    assert len({id(p) for p in params}) == len(params) == len(list(learner.module.parameters()))
    before = {mid: {k: v.clone() for k, v in m.state_dict().items()} for mid, m in learner.module.items()}
    algo.train()
    for mid in (SHARED_ENCODER_ID, "p0", "p1"):
        after = learner.module[mid].state_dict()
        assert any(not torch.equal(after[k], before[mid][k]) for k in after), mid
    algo.stop()


def test_required_apis_of_the_default_learner(capsys):
    # The guide's example, unmodified but for the import rewrite.
    from marl import SACConfig
    # Print out the abstract APIs, you need to subclass from and whose
    # abstract methods you need to implement, besides the ``setup()`` and ``_forward_..()``
    # methods.
    print(
    SACConfig()
    .get_default_learner_class()
    .rl_module_required_apis()
    )
    from marl import PPOConfig, QNetAPI, TargetNetworkAPI, ValueFunctionAPI

    assert "QNetAPI" in capsys.readouterr().out
    assert SACConfig().get_default_learner_class().rl_module_required_apis() == [QNetAPI, TargetNetworkAPI]
    assert PPOConfig().get_default_learner_class().rl_module_required_apis() == [ValueFunctionAPI]


def test_loading_a_module_checkpoint_into_a_running_algorithm(tmp_path):
    import tempfile

    from marl import PPOConfig, DefaultModelConfig, DefaultPPOTorchRLModule, Columns

    env = gym.make("CartPole-v1")
    rl_module = DefaultPPOTorchRLModule(
        observation_space=env.observation_space,
        action_space=env.action_space,
        model_config=DefaultModelConfig(fcnet_hiddens=[32]),
    )
    module_ckpt_path = tempfile.mkdtemp()
    rl_module.save_to_path(module_ckpt_path)

    config = (
        PPOConfig()
        .environment("CartPole-v1")
        .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=[32]))
    )
    ppo = config.build()
    ppo.restore_from_path(
        module_ckpt_path,  # <- NOT an Algorithm checkpoint, but single-agent RLModule one.
        component="learner_group/learner/rl_module/default_policy",
    )
    obs = torch.randn(5, 4)
    expected = rl_module.forward_inference({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]
    got = ppo.get_module().forward_inference({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]
    assert torch.equal(got, expected)
    # The env runners' copies were updated too.
    runner_weights = ppo.env_runner_group.get_weights()["default_policy"]
    for name, value in rl_module.get_state().items():
        assert torch.equal(runner_weights[name], value), name
    ppo.stop()
