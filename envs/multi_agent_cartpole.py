"""`MultiAgentCartPole`: N independent CartPole-v1 copies as one PettingZoo ParallelEnv.

The multi-agent "hello world" of RLlib's guide (`ray.rllib.examples.envs.classes.
multi_agent.MultiAgentCartPole`). It lives in ``envs.independent_copies`` with its
continuous sibling ``MultiAgentPendulum``; this module keeps the import path.
Users import it as ``from envs import MultiAgentCartPole``.
"""
from envs.independent_copies import MultiAgentCartPole

__all__ = ["MultiAgentCartPole"]
