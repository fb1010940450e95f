"""SAC / ISAC: target critics, entropy tuning, separate losses, actions within bounds."""
from __future__ import annotations

from typing import Optional

import gymnasium as gym
import numpy as np
import pytest
import torch

from marl import DefaultModelConfig, DefaultSACTorchRLModule, SACConfig
from marl.algorithms.algorithm_config import ConfigError


class AsymmetricBoundsEnv(gym.Env):
    """Observes a counter; actions in Box([0, -5], [1, 5]); records every action it gets."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Box(np.array([0.0, -5.0], np.float32), np.array([1.0, 5.0], np.float32))
    seen: list = []

    def __init__(self, config: Optional[dict] = None) -> None:
        self.t = 0

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return np.zeros(2, np.float32), {}

    def step(self, action):
        AsymmetricBoundsEnv.seen.append(np.asarray(action, np.float32).copy())
        self.t += 1
        reward = -float(np.square(action - np.array([0.5, 2.0])).sum())
        return np.array([self.t / 10, 0.0], np.float32), reward, False, self.t >= 10, {}


def small_config(**training) -> SACConfig:
    return (SACConfig().environment("Pendulum-v1")
            .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=[16]))
            .training(num_steps_sampled_before_learning_starts=64, train_batch_size_per_learner=32, **training)
            .reporting(min_sample_timesteps_per_iteration=64, min_time_s_per_iteration=None).debugging(seed=0))


def test_rllib_defaults_and_required_apis():
    cfg = SACConfig()
    assert (cfg.tau, cfg.actor_lr, cfg.critic_lr, cfg.alpha_lr, cfg.initial_alpha) == (5e-3, 3e-5, 3e-4, 3e-4, 1.0)
    assert cfg.twin_q and cfg.target_entropy == "auto" and cfg.train_batch_size_per_learner == 256
    assert cfg.target_network_update_freq == 0 and cfg.num_steps_sampled_before_learning_starts == 1500
    assert cfg.lr is None  # RLlib's SAC: the three optimizers have their own rates
    assert cfg.min_time_s_per_iteration == 1 and cfg.min_sample_timesteps_per_iteration == 100


@pytest.mark.parametrize("grouped", [False, True])
def test_updates_sync_targets_as_rllibs_training_steps_would(grouped):
    """RLlib's tuned Pendulum SAC: target_network_update_freq=1, one update per 5 sampled steps. marl
    samples each training step in its own call; grouped (as MASAC's joint rows are) it runs a round's
    20 updates after one call, each at the env-step count its training step had. Either way every
    update also moves the targets, and none runs before learning starts, at 256 steps."""
    algo = (small_config(n_step=(2, 5), target_network_update_freq=1)
            .training(num_steps_sampled_before_learning_starts=256, train_batch_size_per_learner=256)
            .reporting(min_sample_timesteps_per_iteration=100).build())
    algo._rows_span_calls = not grouped
    assert algo._sampling_rounds().training_steps == (20 if grouped else 1)
    try:
        for _ in range(5):
            result = algo.train()
        trained = result["learners"]["__all_modules__"]["num_env_steps_trained_lifetime"]
        num_updates = trained // 256
        assert num_updates == (500 - 255) // 5  # training steps at 260, 265, ..., 500
        assert algo.learner.num_target_updates["default_policy"] == num_updates
    finally:
        algo.stop()


def test_an_iteration_lasts_min_time_s_per_iteration():
    """RLlib's SAC default: at least one second per iteration, however fast the steps are."""
    import time

    algo = small_config().reporting(min_time_s_per_iteration=1.0).build()
    try:
        start = time.perf_counter()
        result = algo.train()
        assert time.perf_counter() - start >= 1.0 and result["time_this_iter_s"] >= 1.0
    finally:
        algo.stop()


def test_grad_clip_clips_actor_each_critic_and_alpha_on_their_own():
    """RLlib clips each of SAC's four optimizers separately; here they are four parameter groups."""
    algo = small_config(grad_clip=1e-3).build()
    try:
        algo.train()
        optimizer = algo.learner.optimizers["default_policy/default_optimizer"]
        norms = {g["name"]: float(torch.nn.utils.get_total_norm([q.grad for q in g["params"] if q.grad is not None]))
                 for g in optimizer.param_groups}
        assert set(norms) == {"actor", "critic", "critic_twin", "alpha"}
        for name, norm in norms.items():  # every group was clipped to the bound by itself
            assert norm == pytest.approx(1e-3, rel=1e-4), (name, norms)
    finally:
        algo.stop()


def test_target_critics_move_by_exactly_tau_each_update():
    algo = small_config(tau=0.1).build()
    try:
        algo.train()  # fills the buffer and updates
        module = algo.get_module()
        before_target = [p.detach().clone() for p in module.target_qf.parameters()]
        algo._update_once()
        for t, b, m in zip(module.target_qf.parameters(), before_target, module.qf.parameters()):
            torch.testing.assert_close(t, 0.9 * b + 0.1 * m)
    finally:
        algo.stop()


def test_each_loss_moves_only_its_own_parameters():
    for frozen in ("actor_lr", "critic_lr"):
        algo = small_config(**{frozen: 1e-30, "alpha_lr": 1e-30}).build()  # one group (and alpha) still
        try:
            algo.train()
            module = algo.get_module()
            still = module.pi if frozen == "actor_lr" else module.qf
            moving = module.qf if frozen == "actor_lr" else module.pi
            before_still = [p.detach().clone() for p in still.parameters()]
            before_moving = [p.detach().clone() for p in moving.parameters()]
            alpha = module.log_alpha.detach().clone()
            for _ in range(3):
                algo._update_once()
            # Adam's step is lr-scaled: a 1e-30 learning rate leaves weights bit-identical.
            assert all(torch.equal(b, p) for b, p in zip(before_still, still.parameters())), frozen
            assert any(not torch.equal(b, p) for b, p in zip(before_moving, moving.parameters())), frozen
            assert abs(float(alpha) - float(module.log_alpha.detach())) < 1e-20
        finally:
            algo.stop()


@pytest.mark.parametrize("target_entropy, direction", [(5.0, 1), (-50.0, -1)])
def test_the_entropy_coefficient_moves_toward_the_target_entropy(target_entropy, direction):
    # Target above the policy's entropy: alpha grows (more exploration); far below: alpha shrinks.
    algo = small_config(target_entropy=target_entropy, alpha_lr=1e-2).build()
    try:
        algo.train()
        module = algo.get_module()
        before = float(module.log_alpha.detach())
        for _ in range(10):
            algo._update_once()
        assert (float(module.log_alpha.detach()) - before) * direction > 0
    finally:
        algo.stop()


def test_actions_always_stay_within_the_env_bounds():
    AsymmetricBoundsEnv.seen = []
    algo = (SACConfig().environment(AsymmetricBoundsEnv)
            .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=[8]))
            .training(num_steps_sampled_before_learning_starts=32, train_batch_size_per_learner=32,
                      initial_alpha=5.0)
            .reporting(min_sample_timesteps_per_iteration=200).debugging(seed=0)).build()
    try:
        module = algo.get_module()
        with torch.no_grad():  # a wide, saturating policy: samples pile up at the bounds
            module.pi[-1].bias.copy_(torch.tensor([8.0, -8.0, 2.0, 2.0]))
        algo.env_runner_group.sync_weights(algo.learner_group.get_weights())
        algo.train()
        algo.evaluate()
    finally:
        algo.stop()
    seen = np.stack(AsymmetricBoundsEnv.seen)
    assert len(seen) >= 200
    low, high = AsymmetricBoundsEnv.action_space.low, AsymmetricBoundsEnv.action_space.high
    assert (seen >= low).all() and (seen <= high).all()
    assert seen[:, 0].max() > 0.9 and seen[:, 1].min() < -4.5  # the bounds are reached, never passed


def test_isac_trains_one_module_per_agent_on_continuous_simple_spread():
    algo = (SACConfig().environment("mpe2.simple_spread_v3",
                                     env_config={"N": 2, "max_cycles": 10, "continuous_actions": True})
            .multi_agent(policies={"agent_0", "agent_1"}, policy_mapping_fn=lambda aid, ep, **kw: aid)
            .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=[16]))
            .training(num_steps_sampled_before_learning_starts=40, train_batch_size_per_learner=32)
            .reporting(min_sample_timesteps_per_iteration=40).debugging(seed=0)).build()
    try:
        assert isinstance(algo.get_module("agent_0"), DefaultSACTorchRLModule)
        result = algo.train()
        assert {"agent_0", "agent_1"} <= set(result["learners"])
        assert sorted(algo.replay_buffers) == ["agent_0", "agent_1"]
    finally:
        algo.stop()


def test_discrete_actions_are_refused_with_the_space_named():
    with pytest.raises(TypeError, match="needs a Box action space.*Discrete"):
        SACConfig().environment("CartPole-v1").build()


def test_critic_is_rllibs_multi_stream_q_network_layer_for_layer():
    """RLlib 2.60's SAC critic for its tuned Pendulum config: action stream 1->256->256, observation
    stream 3->256->256, dense fusion 512->256, 768->256, output 768->256, head 256->1."""
    from marl.models.q_networks import MultiStreamQNetwork

    model = DefaultModelConfig(fcnet_hiddens=[256, 256], fcnet_activation="relu", head_fcnet_hiddens=[])
    algo = SACConfig().environment("Pendulum-v1").rl_module(model_config=model).build()
    try:
        module = algo.get_module()
        qf = module.qf
        assert isinstance(qf, MultiStreamQNetwork)
        shapes = {k: tuple(v.shape) for k, v in qf.state_dict().items() if k.endswith("weight")}
        assert shapes == {"obs_encoder.0.weight": (256, 3), "obs_encoder.2.weight": (256, 256),
                          "action_encoder.0.weight": (256, 1), "action_encoder.2.weight": (256, 256),
                          "fusion_layers.0.weight": (256, 512), "fusion_layers.1.weight": (256, 768),
                          "output_layer.weight": (256, 768), "head.0.weight": (1, 256)}
        # The forward pass by hand: streams (actions first), dense fusion with tanh, output, head.
        obs, act = torch.randn(5, 3), torch.rand(5, 1) * 2 - 1
        relu, tanh = torch.relu, torch.tanh
        e = torch.cat([relu(qf.action_encoder[2](relu(qf.action_encoder[0](act)))),
                       relu(qf.obs_encoder[2](relu(qf.obs_encoder[0](obs))))], dim=-1)
        h = tanh(qf.fusion_layers[0](e))
        h = tanh(qf.fusion_layers[1](torch.cat([h, e], dim=-1)))
        expected = qf.head(tanh(qf.output_layer(torch.cat([h, e], dim=-1)))).squeeze(-1)
        torch.testing.assert_close(module.compute_q_values({"obs": obs, "actions": act})["qf_preds"], expected)
        # The actor: encoder then head, log-std clamped to RLlib's [-5, 2].
        assert [tuple(m.weight.shape) for m in module.pi if isinstance(m, torch.nn.Linear)] == [
            (256, 3), (256, 256), (2, 256)]
        with torch.no_grad():
            module.pi[-1].bias.copy_(torch.tensor([0.0, -50.0]))
            module.pi[-1].weight.zero_()
            assert float(module.action_dist_inputs(obs)[0, 1]) == -5.0
    finally:
        algo.stop()


def test_head_initializers_are_not_applied_as_in_rllib_and_a_warning_says_so():
    """RLlib's SAC builds its heads with torch's default init, ignoring head_fcnet_*_initializer; so does
    marl (RLlib's tuned Pendulum config sets orthogonal gain 0.01, which applied slowed learning)."""
    model = DefaultModelConfig(fcnet_hiddens=[64], head_fcnet_kernel_initializer="orthogonal_",
                               head_fcnet_kernel_initializer_kwargs={"gain": 0.01})
    with pytest.warns(UserWarning, match="does not apply .*head_fcnet_kernel_initializer.*orthogonal_"):
        algo = SACConfig().environment("Pendulum-v1").rl_module(model_config=model).build()
    try:
        module = algo.get_module()
        with torch.no_grad():
            for layer in (module.pi[-1], module.qf.head[-1], module.qf_twin.head[-1]):
                fan_in = layer.weight.shape[1]  # torch's default: uniform(+-1/sqrt(fan_in))
                assert float(layer.weight.abs().max()) > 0.5 / fan_in ** 0.5
                assert float(layer.weight.abs().max()) <= 1 / fan_in ** 0.5 + 1e-6
    finally:
        algo.stop()


def test_bad_sac_settings_are_named():
    with pytest.raises(ConfigError, match="actor_lr"):
        small_config(actor_lr=0.0).build()
    with pytest.raises(ConfigError, match="initial_alpha"):
        small_config(initial_alpha=-1.0).build()
    with pytest.raises(ConfigError, match="lr=0.001.*None for SAC.*actor_lr"):
        small_config(lr=1e-3).build()


def test_isac_on_the_shared_encoder_trains_one_encoder_through_the_critics():
    from marl.models import shared_encoder_module_spec
    from marl.models.shared_encoder_sac import SharedEncoderSACHead

    agents = ["agent_0", "agent_1"]
    spec = shared_encoder_module_spec(agents, DefaultModelConfig(fcnet_hiddens=[16], head_fcnet_hiddens=[8]),
                                      head_class=SharedEncoderSACHead)
    algo = (SACConfig().environment("mpe2.simple_spread_v3",
                                     env_config={"N": 2, "max_cycles": 10, "continuous_actions": True})
            .multi_agent(policies=set(agents), policy_mapping_fn=lambda aid, ep, **kw: aid)
            .rl_module(rl_module_spec=spec)
            .training(num_steps_sampled_before_learning_starts=40, train_batch_size_per_learner=32)
            .reporting(min_sample_timesteps_per_iteration=40).debugging(seed=0)).build()
    try:
        container = algo.get_module(None)
        encoder = container["shared_encoder"]
        (optimizer,) = algo.learner.optimizers.values()
        groups = {g["name"]: {id(p) for p in g["params"]} for g in optimizer.param_groups}
        encoder_params = {id(p) for p in encoder.parameters()}
        assert encoder_params <= groups["critic"] and not encoder_params & (groups["actor"] | groups["alpha"])
        assert container["agent_0"].obs_dim == encoder.output_dim  # the heads read embeddings
        before = [p.detach().clone() for p in encoder.parameters()]
        result = algo.train()
        assert {"agent_0", "agent_1"} <= set(result["learners"])
        assert any(not torch.equal(b, p) for b, p in zip(before, encoder.parameters()))
        # The actor's loss reads the embeddings detached: every call the learner makes to an actor
        # with gradients on gets an input that carries no gradient back to the encoder.
        head = container["agent_0"]
        seen = []
        original = head.action_dist_inputs

        def recording(x):
            if torch.is_grad_enabled():
                seen.append(torch.as_tensor(x).requires_grad)
            return original(x)

        head.action_dist_inputs = recording
        algo.train()
        assert seen and not any(seen)
    finally:
        algo.stop()
