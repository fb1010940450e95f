"""The guide's single-agent module examples, run with only the import rewrite."""
import gymnasium as gym
import torch

from marl import Columns, DefaultBCTorchRLModule, RLModuleSpec, TorchRLModule
from marl.core.action_sampling import actions_from_outputs


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_construction_through_class_constructor():
    # Guide: "Construction through the class constructor".
    env = gym.make("CartPole-v1")
    rl_module = DefaultBCTorchRLModule(
        observation_space=env.observation_space,
        action_space=env.action_space,
        model_config={"fcnet_hiddens": [64]},
    )
    # [4 -> 64] encoder, [64 -> 2] policy head (head_fcnet_hiddens defaults to []).
    assert count_params(rl_module) == (4 * 64 + 64) + (64 * 2 + 2)
    out = rl_module.forward_inference({Columns.OBS: torch.randn(5, 4)})
    assert out[Columns.ACTION_DIST_INPUTS].shape == (5, 2)


def test_construction_through_rl_module_spec():
    env = gym.make("CartPole-v1")
    spec = RLModuleSpec(
        module_class=DefaultBCTorchRLModule,
        observation_space=env.observation_space,
        action_space=env.action_space,
        model_config={"fcnet_hiddens": [64]},
    )
    rl_module = spec.build()
    assert isinstance(rl_module, DefaultBCTorchRLModule)
    assert rl_module.model_config["fcnet_hiddens"] == [64]
    out = rl_module.forward_exploration({Columns.OBS: torch.randn(3, 4)})
    assert out[Columns.ACTION_DIST_INPUTS].shape == (3, 2)


class MyTorchPolicy(TorchRLModule):
    """Guide: "The setup() method" (with a _forward added to use it)."""

    def setup(self):
        input_dim = self.observation_space.shape[0]
        hidden_dim = self.model_config["fcnet_hiddens"][0]
        output_dim = self.action_space.n
        self._pi_head = torch.nn.Sequential(
            torch.nn.Linear(input_dim, hidden_dim),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden_dim, output_dim),
        )

    def _forward(self, batch, **kwargs):
        return {Columns.ACTION_DIST_INPUTS: self._pi_head(batch[Columns.OBS])}


def test_setup_sees_spaces_and_model_config():
    env = gym.make("CartPole-v1")
    module = MyTorchPolicy(
        observation_space=env.observation_space,
        action_space=env.action_space,
        model_config={"fcnet_hiddens": [7]},
    )
    assert module._pi_head[0].out_features == 7
    assert count_params(module) == (4 * 7 + 7) + (7 * 2 + 2)
    assert module.inference_only is False


class VPGTorchRLModule(TorchRLModule):
    """Guide: "End-to-end example" (verbatim)."""

    def setup(self):
        input_dim = self.observation_space.shape[0]
        hidden_dim = self.model_config["hidden_dim"]
        output_dim = self.action_space.n

        self._policy_net = torch.nn.Sequential(
            torch.nn.Linear(input_dim, hidden_dim),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden_dim, output_dim),
        )

    def _forward(self, batch, **kwargs):
        action_logits = self._policy_net(batch[Columns.OBS])
        return {Columns.ACTION_DIST_INPUTS: action_logits}


def test_end_to_end_vpg_module_all_three_passes_fall_back_to_forward():
    env = gym.make("CartPole-v1")
    module = VPGTorchRLModule(
        observation_space=env.observation_space,
        action_space=env.action_space,
        model_config={"hidden_dim": 16},
    )
    obs = torch.randn(8, 4)
    train = module.forward_train({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]
    explore = module.forward_exploration({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]
    infer = module.forward_inference({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]
    assert train.shape == (8, 2)
    assert torch.equal(train.detach(), explore) and torch.equal(explore, infer)
    # Training keeps gradients; exploration/inference run under no_grad.
    assert train.requires_grad and not explore.requires_grad and not infer.requires_grad
    # Greedy inference takes the argmax of the logits (to_deterministic).
    greedy = actions_from_outputs(module, {Columns.ACTION_DIST_INPUTS: infer}, explore=False)
    assert torch.equal(greedy[Columns.ACTIONS], infer.argmax(-1))
    sampled = actions_from_outputs(module, {Columns.ACTION_DIST_INPUTS: explore}, explore=True)
    assert sampled[Columns.ACTIONS].shape == (8,)
    expected_logp = torch.log_softmax(explore, -1).gather(1, sampled[Columns.ACTIONS][:, None])[:, 0]
    assert torch.allclose(sampled[Columns.ACTION_LOGP], expected_logp)


class ActionsReturningPolicy(TorchRLModule):
    """Guide: forward methods returning ``actions`` (used as-is, no sampling)."""

    def setup(self):
        self._net = torch.nn.Linear(self.observation_space.shape[0], self.action_space.n)

    def _forward_inference(self, batch):
        return {Columns.ACTIONS: torch.zeros(len(batch[Columns.OBS]), dtype=torch.long)}

    def _forward_exploration(self, batch):
        logits = self._net(batch[Columns.OBS])
        return {
            Columns.ACTIONS: torch.ones(len(logits), dtype=torch.long),
            Columns.ACTION_DIST_INPUTS: logits,
        }


def test_returned_actions_are_used_as_is_and_logp_comes_from_dist_inputs():
    env = gym.make("CartPole-v1")
    module = ActionsReturningPolicy(observation_space=env.observation_space, action_space=env.action_space)
    obs = torch.randn(4, 4)
    inf = actions_from_outputs(module, module.forward_inference({Columns.OBS: obs}), explore=False)
    assert torch.equal(inf[Columns.ACTIONS], torch.zeros(4, dtype=torch.long))
    exp_out = module.forward_exploration({Columns.OBS: obs})
    exp = actions_from_outputs(module, exp_out, explore=True)
    assert torch.equal(exp[Columns.ACTIONS], torch.ones(4, dtype=torch.long))
    expected = torch.log_softmax(exp_out[Columns.ACTION_DIST_INPUTS], -1)[:, 1]
    assert torch.allclose(exp[Columns.ACTION_LOGP], expected)


def test_default_model_config_mlp_example_builds_32_32_relu():
    from marl import DefaultModelConfig, DefaultPPOTorchRLModule

    cfg = DefaultModelConfig(fcnet_hiddens=[32, 32], fcnet_activation="relu")
    env = gym.make("CartPole-v1")
    module = DefaultPPOTorchRLModule(
        observation_space=env.observation_space, action_space=env.action_space, model_config=cfg
    )
    linears = [m for m in module.encoder.modules() if isinstance(m, torch.nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(4, 32), (32, 32)]
    assert any(isinstance(m, torch.nn.ReLU) for m in module.encoder.modules())
    assert not any(isinstance(m, torch.nn.Tanh) for m in module.encoder.modules())


def test_pong_cnn_config_builds_and_runs_one_forward():
    # Guide: "Configuring default CNN nets" (module-level: Pong's observation space).
    from marl import DefaultModelConfig, DefaultPPOTorchRLModule

    cfg = DefaultModelConfig(
        conv_filters=[[16, 4, 2], [32, 4, 2], [64, 4, 2], [128, 4, 2]],
        conv_activation="silu",
        head_fcnet_hiddens=[256],
    )
    obs_space = gym.spaces.Box(0, 255, (210, 160, 3), dtype="uint8")
    module = DefaultPPOTorchRLModule(
        observation_space=obs_space, action_space=gym.spaces.Discrete(6), model_config=cfg
    )
    convs = [m for m in module.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 32, 64, 128]
    assert any(isinstance(m, torch.nn.SiLU) for m in module.encoder.modules())
    obs = torch.randint(0, 255, (2, 210, 160, 3), dtype=torch.uint8)
    out = module.forward_train({Columns.OBS: obs})
    assert out[Columns.ACTION_DIST_INPUTS].shape == (2, 6)
    assert out[Columns.VF_PREDS].shape == (2,)


def test_checkpoint_examples_save_from_checkpoint_same_outputs(tmp_path):
    # Guide: "Creating an RLModule checkpoint" / "Creating an RLModule from a checkpoint".
    import tempfile

    from marl import DefaultModelConfig, DefaultPPOTorchRLModule, RLModule

    env = gym.make("CartPole-v1")
    rl_module = DefaultPPOTorchRLModule(
        observation_space=env.observation_space,
        action_space=env.action_space,
        model_config=DefaultModelConfig(fcnet_hiddens=[32]),
    )
    module_ckpt_path = tempfile.mkdtemp()
    rl_module.save_to_path(module_ckpt_path)
    new_module = RLModule.from_checkpoint(module_ckpt_path)
    assert type(new_module) is DefaultPPOTorchRLModule
    assert new_module.model_config["fcnet_hiddens"] == [32]
    obs = torch.randn(6, 4)
    a = rl_module.forward_train({Columns.OBS: obs})
    b = new_module.forward_train({Columns.OBS: obs})
    assert torch.equal(a[Columns.ACTION_DIST_INPUTS], b[Columns.ACTION_DIST_INPUTS])
    assert torch.equal(a[Columns.VF_PREDS], b[Columns.VF_PREDS])
