"""Turning module outputs into actions, the step every sampler shares.

Modules return distribution inputs and never sample (RLlib's rule, which keeps
them export-friendly); env runners and evaluation call this instead.
"""
from __future__ import annotations

from typing import Any, Dict

import torch

from marl.core.columns import Columns
from marl.core.rl_module import RLModule


def actions_from_outputs(module: RLModule, outputs: Dict[str, Any], explore: bool) -> Dict[str, Any]:
    """Add ``ACTIONS`` (and ``ACTION_LOGP`` when exploring) to a forward output.

    Actions a module returns itself are used as they are. Otherwise they are
    sampled from the module's exploration distribution, or taken greedily from
    the deterministic form of its inference distribution.
    """
    out = dict(outputs)
    has_inputs = Columns.ACTION_DIST_INPUTS in out
    if Columns.ACTIONS not in out and not has_inputs:
        raise KeyError(
            f"{type(module).__name__} returned neither {Columns.ACTIONS!r} nor "
            f"{Columns.ACTION_DIST_INPUTS!r}; got keys {sorted(out)}"
        )
    with torch.no_grad():
        if explore:
            dist = None
            if has_inputs:
                dist_cls = module.get_exploration_action_dist_cls()
                dist = dist_cls.from_logits(out[Columns.ACTION_DIST_INPUTS])
            if Columns.ACTIONS not in out:
                out[Columns.ACTIONS] = dist.sample()
            if dist is not None and Columns.ACTION_LOGP not in out:
                out[Columns.ACTION_LOGP] = dist.logp(out[Columns.ACTIONS])
        elif Columns.ACTIONS not in out:
            dist_cls = module.get_inference_action_dist_cls()
            dist = dist_cls.from_logits(out[Columns.ACTION_DIST_INPUTS]).to_deterministic()
            out[Columns.ACTIONS] = dist.sample()
    return out
