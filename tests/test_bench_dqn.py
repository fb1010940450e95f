"""scripts/bench_dqn.py compares marl's update with a hand-written one: on the same networks."""
import torch

from marl import DefaultModelConfig, DQNConfig
from marl.models.default_dqn_rl_module import QF_PREDS
from scripts.bench_dqn import hand_written_nets


def test_the_hand_written_update_runs_the_modules_own_q_network():
    algo = (DQNConfig().environment("CartPole-v1")
            .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=[16], head_fcnet_hiddens=[8])).build())
    try:
        module = algo.get_module()
        encoder, head = hand_written_nets(module)
        obs = torch.randn(5, 4)
        with torch.no_grad():
            torch.testing.assert_close(head(encoder(obs)), module.compute_q_values({"obs": obs})[QF_PREDS])
    finally:
        algo.stop()
