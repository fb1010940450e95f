"""The recurrent core of the default models: one batch-first LSTM layer."""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple

import torch
from torch import nn

from marl.models.initializers import InitializerSpec, apply_initializer

State = Dict[str, torch.Tensor]


class LSTMCore(nn.Module):
    """A single-layer `nn.LSTM` with the state as a {"h", "c"} dict of [B, cell].

    Why a wrapper: modules keep their recurrent state in batches as dicts of
    [B, cell] tensors (one row per sequence), while `nn.LSTM` wants
    (num_layers, B, cell) tuples; this is the one place that converts.
    """

    def __init__(
        self,
        input_dim: int,
        cell_size: int,
        kernel_initializer: InitializerSpec = None,
        kernel_initializer_kwargs: Optional[Mapping[str, Any]] = None,
        bias_initializer: InitializerSpec = None,
        bias_initializer_kwargs: Optional[Mapping[str, Any]] = None,
    ) -> None:
        super().__init__()
        if isinstance(cell_size, bool) or not isinstance(cell_size, int) or cell_size <= 0:
            raise ValueError(f"lstm_cell_size must be a positive int; got {cell_size!r}")
        self.input_dim = int(input_dim)
        self.cell_size = int(cell_size)
        self.output_dim = self.cell_size
        self.lstm = nn.LSTM(self.input_dim, self.cell_size, batch_first=True)
        for name, param in self.lstm.named_parameters():
            if name.startswith("weight"):
                apply_initializer(param, kernel_initializer, kernel_initializer_kwargs,
                                  what=f"LSTM.{name}")
            else:
                apply_initializer(param, bias_initializer, bias_initializer_kwargs,
                                  what=f"LSTM.{name}")

    def initial_state(self) -> State:
        """Zeros for one sequence (unbatched: [cell] each)."""
        ref = self.lstm.weight_hh_l0  # same device and dtype as the weights
        return {"h": ref.new_zeros(self.cell_size), "c": ref.new_zeros(self.cell_size)}

    def forward(self, x: torch.Tensor, state: Optional[Mapping[str, torch.Tensor]] = None
                ) -> Tuple[torch.Tensor, State]:
        """Run [B, T, input_dim] from `state` ([B, cell] each; None: zeros).

        Returns the outputs [B, T, cell] and the state after the last step.
        """
        batch = x.shape[0]
        if state is None:
            zeros = x.new_zeros(1, batch, self.cell_size)
            hc = (zeros, zeros)
        else:
            missing = [k for k in ("h", "c") if k not in state]
            if missing:
                raise KeyError(f"LSTM state is missing {missing}; expected keys 'h' and 'c' "
                               f"with shape [B, {self.cell_size}]")
            # Env runners may hand back numpy arrays; match the input's device/dtype.
            h = torch.as_tensor(state["h"], dtype=x.dtype, device=x.device)
            c = torch.as_tensor(state["c"], dtype=x.dtype, device=x.device)
            for key, t in (("h", h), ("c", c)):
                if tuple(t.shape) != (batch, self.cell_size):
                    raise ValueError(f"LSTM state {key!r} has shape {tuple(t.shape)}; expected "
                                     f"[B, cell] = {(batch, self.cell_size)}")
            hc = (h.unsqueeze(0).contiguous(), c.unsqueeze(0).contiguous())
        out, (h_n, c_n) = self.lstm(x, hc)
        return out, {"h": h_n.squeeze(0), "c": c_n.squeeze(0)}
