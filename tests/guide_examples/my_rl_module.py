"""A stand-in for the guide's undefined ``MyRLModuleClass`` (users write their own)."""
import torch

from marl import Columns, TorchRLModule, ValueFunctionAPI


class MyRLModuleClass(TorchRLModule, ValueFunctionAPI):
    """A small actor-critic; ``model_config`` may carry any custom keys."""

    def setup(self):
        hidden = (self.model_config.get("fcnet_hiddens") or [32])[0]
        in_dim = self.observation_space.shape[0]
        self.body = torch.nn.Sequential(torch.nn.Linear(in_dim, hidden), torch.nn.Tanh())
        self.pi = torch.nn.Linear(hidden, self.action_space.n)
        self.vf = torch.nn.Linear(hidden, 1)

    def _forward(self, batch, **kwargs):
        return {Columns.ACTION_DIST_INPUTS: self.pi(self.body(batch[Columns.OBS]))}

    def _forward_train(self, batch, **kwargs):
        features = self.body(batch[Columns.OBS])
        return {Columns.ACTION_DIST_INPUTS: self.pi(features), Columns.VF_PREDS: self.vf(features).squeeze(-1)}

    def compute_values(self, batch, embeddings=None):
        return self.vf(self.body(batch[Columns.OBS])).squeeze(-1)
