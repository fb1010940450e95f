"""SAC updates, same weights and same replayed batch, on RLlib and on marl: do the weights agree?

    python scripts/parity_update_sac.py                      # sac-pendulum, 1 and 5 updates, 2 scenarios
    python scripts/parity_update_sac.py --updates 1 5 20 --rows 256 --seed 3
    python scripts/parity_update_sac.py --marl-adam unfused  # marl's Adam as RLlib's (for-loop, not fused)

What runs where. The marl process (this one, system ``python``) draws a
replayed batch in Pendulum's spaces: observations (cos, sin, theta-dot),
next observations, actions in [-1, 1], n-step rewards, ``n_step`` in
{2, 3, 4} (the case's ``n_step=(2, 5)``), terminateds all False (Pendulum
never terminates) and importance weights, plus the policy noise of every
update. RLlib (``--rllib-python``, its own venv, as in ``scripts/parity.py``)
builds the case's SAC with ``build_rllib``, saves its learner's initial
weights (module state dict and ``curr_log_alpha``), turns the batch into the
one-step ``SingleAgentEpisode``s its ``PrioritizedEpisodeReplayBuffer.sample``
returns (``(o_t, a_t, sum of discounted rewards, o_t+n)`` with
``extra_model_outputs`` ``weights`` and ``n_step``) and calls
``learner.update(episodes=..., timesteps=...)`` as ``DQN.training_step``
does; ``Learner.update`` ends in ``after_gradient_based_update``, which is
where RLlib's DQN/SAC learner moves the target critics by ``tau``. The batch
its learner connector built, the loss inputs and the weights after every
update come back in a .npz. marl builds the same case with ``build_marl``,
loads RLlib's initial weights by the explicit name map
``pair_sac_parameters`` (and ``log_alpha``), and runs
``learner.update(batch)`` + ``learner.update_target_networks(timestep)``,
the two calls of ``DQN._update_once``, on RLlib's own batch tensors.

What is patched, and why. SAC's loss draws reparameterised policy noise
twice: for the current observations (actor and alpha losses) and for the
next observations (critic target). RLlib draws them with
``torch.distributions.Normal.rsample`` (``TorchSquashedGaussian.rsample_and_logp``,
current) and ``Normal.sample`` (``sample_and_logp``, next), in
``ray/rllib/core/distribution/torch/torch_distribution.py``; marl with
``Normal.rsample`` for both (``TorchSquashedGaussian.rsample_and_logp`` in
``marl/distributions.py``, through ``td.Independent``). Both go current
first, next second, but from different generators, so the two processes patch
``Normal.rsample`` and ``Normal.sample`` the same way (``install_noise``):
while noise is queued, a draw returns ``loc + eps * scale`` with the queued
``eps`` (the same expression as torch's ``rsample``; ``sample`` under
``no_grad``), the first draw of an update taking the current-observation
noise, the second the next-observation noise, row for row in the batch
order. Each update must consume exactly two draws (checked). Scenario
``zero-noise`` uses eps = 0 and weights 1 (the distributions' means);
``seeded-noise`` a standard-normal eps per row and update, drawn here from
``--seed`` and sent to RLlib, and non-uniform importance weights.

Observation of intermediates. Both processes wrap
``torch.nn.functional.huber_loss`` (RLlib's ``nn.HuberLoss`` calls it) to
record the critics' predictions and TD targets; RLlib's ``fwd_out``
(``logp_resampled``, ``logp_next_resampled``, ``q_curr``, ``q_target_next``)
and per-optimizer losses are recorded from its ``compute_loss_for_module``;
marl's from its squashed Gaussian's ``rsample_and_logp``, ``forward_target``
and ``_frozen_q``. The first update's values are compared side by side, and
every parameter's gradient of every update.

Output: per update, per parameter group (actor, critic, critic_twin,
target_critic, target_critic_twin, log_alpha), the largest |marl - RLlib|
weight difference next to the size of RLlib's update (|after - before|),
and the gradient difference; exit 1 unless every weight agrees within
``--tolerance``.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from scripts.parity import default_rllib_python  # noqa: E402
from scripts.parity_cases import CASES  # noqa: E402

MODULE_ID = "default_policy"
LOG_ALPHA = "log_alpha"
#: First-update intermediates both sides record (name -> what it is).
INTERMEDIATES = {
    "q": "Q(s, a) of the batch actions (critic)",
    "q_twin": "Q_twin(s, a) of the batch actions",
    "target": "TD target r + gamma^n (1 - term)(min Q'(s', a') - alpha logp')",
    "logp_curr": "logp of the current-obs reparameterised action",
    "logp_next": "logp of the next-obs action",
    "q_target_next": "min of the two target critics at (s', a')",
    "q_curr": "min of the two critics at (s, a~), critic params frozen",
}
#: Losses: RLlib's four per-optimizer losses; marl reports the two critics' sum as qf_loss.
LOSSES = ("qf_loss", "policy_loss", "alpha_loss")


# ------------------------------------------------------------------ name map
def _rllib_blocks(critic: str) -> List[Tuple[str, List[str]]]:
    """marl prefix -> RLlib prefixes whose Linear layers it holds, in order (one critic)."""
    return [
        (f"{critic}.obs_encoder.", [f"{critic}_encoder.base_encoders.obs.net.mlp."]),
        (f"{critic}.action_encoder.", [f"{critic}_encoder.base_encoders.actions.net.mlp."]),
        (f"{critic}.fusion_layers.", [f"{critic}_encoder.fusion_layers."]),
        (f"{critic}.output_layer.", [f"{critic}_encoder.output_layer."]),
        (f"{critic}.head.", [f"{critic}.net.mlp."]),
    ]


#: The explicit map between marl's DefaultSACTorchRLModule and RLlib's DefaultSACTorchRLModule:
#: each marl block holds the Linear layers of the listed RLlib blocks, in that order
#: (marl's actor is one Sequential: RLlib's pi encoder then its pi head).
SAC_BLOCKS: List[Tuple[str, List[str]]] = [("pi.", ["pi_encoder.net.mlp.", "pi.net.mlp."])] + [
    block for critic in ("qf", "qf_twin", "target_qf", "target_qf_twin") for block in _rllib_blocks(critic)]
#: RLlib state-dict entries with no marl counterpart (constant buffers of its MLP heads).
RLLIB_IGNORED = re.compile(r"(^|\.)log_std_clip_param_const$")


def _layer_key(name: str, prefix: str) -> Tuple[int, ...]:
    """Sort key of a parameter inside a block: the numbers in its path (layer indices)."""
    return tuple(int(x) for x in re.findall(r"\d+", name[len(prefix):])) or (0,)


def _block_members(names: List[str], prefixes: List[str], kind: str) -> List[str]:
    out = []
    for prefix in prefixes:  # blocks in the listed order, layers by index inside each
        members = [n for n in names if n.startswith(prefix) and n.endswith("." + kind)]
        out += sorted(members, key=lambda n: _layer_key(n, prefix))
    return out


def pair_sac_parameters(marl_shapes: Dict[str, Tuple[int, ...]],
                        rllib_shapes: Dict[str, Tuple[int, ...]]) -> Dict[str, str]:
    """marl parameter name -> RLlib state-dict name, for every marl entry but ``log_alpha``.

    Pairs the n-th weight (bias) of each block of ``SAC_BLOCKS`` with the
    n-th of its RLlib blocks and checks the shapes; raises ``ValueError``
    if a block's counts or a pair's shapes differ, or if any name on either
    side is left unpaired (RLlib's ``log_std_clip_param_const`` buffers and
    marl's ``log_alpha`` excepted: RLlib keeps log-alpha in its learner).
    """
    marl_names = [n for n in marl_shapes if n != LOG_ALPHA]
    rllib_names = [n for n in rllib_shapes if n != LOG_ALPHA and not RLLIB_IGNORED.search(n)]
    pairs: Dict[str, str] = {}
    for marl_prefix, rllib_prefixes in SAC_BLOCKS:
        for kind in ("weight", "bias"):
            ours = _block_members(marl_names, [marl_prefix], kind)
            theirs = _block_members(rllib_names, rllib_prefixes, kind)
            if len(ours) != len(theirs):
                raise ValueError(f"{marl_prefix}*{kind}: marl has {ours}, RLlib has {theirs}")
            for a, b in zip(ours, theirs):
                if tuple(marl_shapes[a]) != tuple(rllib_shapes[b]):
                    raise ValueError(f"{a} {tuple(marl_shapes[a])} vs {b} {tuple(rllib_shapes[b])}")
                pairs[a] = b
    left = sorted(set(marl_names) - set(pairs)), sorted(set(rllib_names) - set(pairs.values()))
    if left[0] or left[1]:
        raise ValueError(f"unpaired parameters: marl {left[0]}, RLlib {left[1]}")
    return pairs


def group_of(marl_name: str) -> str:
    """The report's parameter group of a marl parameter name."""
    if marl_name == LOG_ALPHA:
        return "log_alpha"
    head = marl_name.split(".")[0]
    return {"pi": "actor", "qf": "critic", "qf_twin": "critic_twin", "target_qf": "target_critic",
            "target_qf_twin": "target_critic_twin"}[head]


GROUP_ORDER = ("actor", "critic", "critic_twin", "target_critic", "target_critic_twin", "log_alpha")


# ------------------------------------------------------------------ patches (both processes)
class NoiseQueue:
    """Queued policy noise for ``Normal.rsample`` / ``Normal.sample`` (see the module docstring)."""

    def __init__(self) -> None:
        self.queue: List[np.ndarray] = []
        self.draws: List[str] = []

    def arm(self, *eps: np.ndarray) -> None:
        if self.queue:
            raise RuntimeError(f"{len(self.queue)} noise tensor(s) of the last update were not drawn")
        self.queue, self.draws = list(eps), []

    def check_consumed(self) -> None:
        if self.queue or len(self.draws) != 2:
            raise RuntimeError(f"an update must draw the policy noise exactly twice; drew {self.draws}, "
                               f"{len(self.queue)} left")


def install_noise() -> NoiseQueue:
    """Patch ``torch.distributions.Normal.rsample`` and ``.sample``: while noise is queued, return
    ``loc + eps * scale`` with the next queued ``eps`` (``sample``: without gradient)."""
    import torch
    from torch.distributions import Normal

    noise = NoiseQueue()
    original = {"rsample": Normal.rsample, "sample": Normal.sample}

    def draw(kind: str, self: Any, sample_shape: Any = ()) -> torch.Tensor:
        if not noise.queue:
            return original[kind](self, torch.Size(sample_shape))
        eps = torch.as_tensor(noise.queue.pop(0), dtype=self.loc.dtype, device=self.loc.device)
        shape = tuple(self._extended_shape(torch.Size(sample_shape)))
        if tuple(eps.shape) != shape:
            raise RuntimeError(f"queued noise has shape {tuple(eps.shape)}, the draw wants {shape}")
        noise.draws.append(kind)
        if kind == "rsample":
            return self.loc + eps * self.scale
        with torch.no_grad():
            return self.loc + eps * self.scale

    Normal.rsample = lambda self, sample_shape=(): draw("rsample", self, sample_shape)
    Normal.sample = lambda self, sample_shape=(): draw("sample", self, sample_shape)
    return noise


def install_huber_recorder() -> List[Tuple[np.ndarray, np.ndarray]]:
    """Record every ``huber_loss(input, target)`` call's arguments (the critics' predictions and targets)."""
    import torch.nn.functional as F

    calls: List[Tuple[np.ndarray, np.ndarray]] = []
    original = F.huber_loss

    def huber_loss(input, target, *args, **kwargs):  # torch's argument names
        calls.append((input.detach().cpu().numpy().copy(), target.detach().cpu().numpy().copy()))
        return original(input, target, *args, **kwargs)

    F.huber_loss = huber_loss
    return calls


def _np(x: Any) -> np.ndarray:
    import torch

    return x.detach().cpu().numpy().copy() if isinstance(x, torch.Tensor) else np.asarray(x)


# ------------------------------------------------------------------ scenarios
def make_scenario(name: str, rows: int, updates: int, seed: int) -> Dict[str, np.ndarray]:
    """A replayed batch in Pendulum's spaces and the policy noise of ``updates`` updates."""
    rng = np.random.default_rng(seed)

    def pendulum_obs() -> np.ndarray:
        theta = rng.uniform(-np.pi, np.pi, rows)
        return np.stack([np.cos(theta), np.sin(theta), rng.uniform(-8.0, 8.0, rows)], -1).astype(np.float32)

    n_step = rng.integers(2, 5, rows)  # RLlib's rng.integers(*n_step) for n_step=(2, 5)
    raw = rng.uniform(-16.2736044, 0.0, (rows, 4))  # Pendulum's reward range
    gamma = 0.99
    rewards = np.array([sum(gamma ** k * raw[i, k] for k in range(n)) for i, n in enumerate(n_step)])
    data = {"obs": pendulum_obs(), "new_obs": pendulum_obs(),
            "actions": rng.uniform(-1.0, 1.0, (rows, 1)).astype(np.float32),
            "rewards": rewards, "terminateds": np.zeros(rows, bool), "n_step": n_step}
    if name == "zero-noise":
        data["weights"] = np.ones(rows)
        data["eps"] = np.zeros((updates, 2, rows, 1), np.float32)
    elif name == "seeded-noise":
        data["weights"] = rng.uniform(0.2, 1.0, rows)
        data["weights"] /= data["weights"].max()  # the buffer's weight / max_weight
        data["eps"] = rng.standard_normal((updates, 2, rows, 1)).astype(np.float32)
    else:
        raise ValueError(name)
    return data


SCENARIOS = ("zero-noise", "seeded-noise")


# ------------------------------------------------------------------ RLlib side (its venv)
def rllib_dump(case_name: str, seed: int, data_path: str, out: str) -> None:
    """Initial weights, the learner's batch, first-update intermediates and the weights and
    gradients after every update, to ``out``."""
    import torch
    from ray.rllib.env.single_agent_episode import SingleAgentEpisode
    from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME

    from scripts.parity import build_rllib

    data = dict(np.load(data_path))
    noise = install_noise()
    huber = install_huber_recorder()
    algo = build_rllib(CASES[case_name], seed)
    learner = algo.learner_group._learner
    module = learner.module[MODULE_ID]
    log_alpha = learner.curr_log_alpha[MODULE_ID]
    cfg = learner.config.get_config_for_module(MODULE_ID)
    arrays: Dict[str, np.ndarray] = {
        "config": np.array(repr({k: getattr(cfg, k) for k in (
            "gamma", "tau", "actor_lr", "critic_lr", "alpha_lr", "initial_alpha", "target_entropy", "twin_q",
            "n_step", "grad_clip", "target_network_update_freq")})),
        "target_entropy": _np(learner.target_entropy[MODULE_ID]),
    }

    def state(prefix: str) -> None:
        for k, v in module.state_dict().items():
            arrays[f"{prefix}/{k}"] = _np(v)
        arrays[f"{prefix}/{LOG_ALPHA}"] = _np(log_alpha)

    def grads(prefix: str) -> None:
        for k, p in module.named_parameters():
            if p.grad is not None:
                arrays[f"{prefix}/{k}"] = _np(p.grad)
        arrays[f"{prefix}/{LOG_ALPHA}"] = _np(log_alpha.grad)

    captured: Dict[str, Any] = {}
    original_loss = learner.compute_loss_for_module

    def compute_loss_for_module(*, module_id, config, batch, fwd_out):
        loss = original_loss(module_id=module_id, config=config, batch=batch, fwd_out=fwd_out)
        if "batch" not in captured:
            captured["batch"] = {k: _np(v) for k, v in batch.items() if isinstance(v, torch.Tensor)}
            captured["fwd"] = {"logp_curr": _np(fwd_out["logp_resampled"]),
                               "logp_next": _np(fwd_out["logp_next_resampled"]),
                               "q_curr": _np(fwd_out["q_curr"]), "q_target_next": _np(fwd_out["q_target_next"])}
            captured["losses"] = {k[1]: float(v) for k, v in learner._temp_losses.items()}
        return loss

    learner.compute_loss_for_module = compute_loss_for_module
    obs_space, act_space = module.observation_space, module.action_space

    def episodes() -> list:
        """What ``PrioritizedEpisodeReplayBuffer.sample(n_step=..., sample_episodes=True)`` returns."""
        out = []
        for i in range(len(data["actions"])):
            e = SingleAgentEpisode(
                observations=[data["obs"][i], data["new_obs"][i]], observation_space=obs_space,
                actions=[data["actions"][i]], action_space=act_space, rewards=[data["rewards"][i]],
                terminated=bool(data["terminateds"][i]), truncated=False,
                extra_model_outputs={"weights": [data["weights"][i]], "n_step": [int(data["n_step"][i])]},
                len_lookback_buffer=0, t_started=0)
            e.to_numpy()
            out.append(e)
        return out

    state("init")
    for u in range(len(data["eps"])):
        noise.arm(data["eps"][u, 0], data["eps"][u, 1])
        huber.clear()
        learner.update(episodes=episodes(), timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: 1000 + u + 1})
        noise.check_consumed()
        if u == 0:
            (q, target), (q_twin, _) = huber
            captured["fwd"].update(q=q, q_twin=q_twin, target=target)
        state(f"after{u}")
        grads(f"grad{u}")
    arrays.update({f"batch/{k}": v for k, v in captured["batch"].items()})
    arrays.update({f"fwd/{k}": v for k, v in captured["fwd"].items()})
    arrays.update({f"loss/{k}": np.array(v) for k, v in captured["losses"].items()})
    np.savez(out, **arrays)
    algo.stop()


# ------------------------------------------------------------------ marl side
def marl_run(case_name: str, seed: int, rllib: Dict[str, np.ndarray], updates: int,
             adam: str) -> Dict[str, Any]:
    """The same updates in marl from RLlib's initial weights and on RLlib's batch."""
    import torch

    from learners.sac_learner import SACTorchLearner
    from marl.distributions import TorchSquashedGaussian
    from scripts.parity import build_marl

    noise = install_noise()
    huber = install_huber_recorder()
    algo = build_marl(CASES[case_name], seed)
    learner = algo.learner
    module = learner.module[MODULE_ID]
    cfg = learner.config
    config = {k: getattr(cfg, k) for k in ("gamma", "tau", "actor_lr", "critic_lr", "alpha_lr", "initial_alpha",
                                           "target_entropy", "twin_q", "n_step", "grad_clip",
                                           "target_network_update_freq")}
    rllib_shapes = {k[len("init/"):]: v.shape for k, v in rllib.items() if k.startswith("init/")}
    pairs = pair_sac_parameters({k: tuple(v.shape) for k, v in module.state_dict().items()}, rllib_shapes)
    # marl's own initialisation, before RLlib's weights replace it (reported, not part of the update check)
    results_init = {k: float(v.float().std()) for k, v in module.state_dict().items() if v.numel() > 2}
    pairs[LOG_ALPHA] = LOG_ALPHA
    module.load_state_dict({k: torch.as_tensor(rllib[f"init/{v}"]).reshape(module.state_dict()[k].shape)
                            for k, v in pairs.items()})
    if adam == "unfused":  # RLlib's optimizers: torch's default (for-loop on CPU) Adam
        for name, opt in learner.optimizers.items():
            groups = [{k: v for k, v in g.items() if k not in ("fused", "foreach")} for g in opt.param_groups]
            learner.optimizers[name] = torch.optim.Adam(groups, eps=1e-7)
    elif adam != "as-built":
        raise ValueError(adam)

    # Recorders of marl's loss inputs (wrappers around the calls sac_learner.py makes).
    seen: Dict[str, List[np.ndarray]] = {"rsample_and_logp": [], "forward_target": [], "frozen_q": []}
    orig_rl = TorchSquashedGaussian.rsample_and_logp
    orig_ft = type(module).forward_target
    orig_fq = SACTorchLearner._frozen_q

    def rsample_and_logp(self, *a, **k):
        actions, logp = orig_rl(self, *a, **k)
        seen["rsample_and_logp"].append(_np(logp))
        return actions, logp

    def forward_target(self, *a, **k):
        out = orig_ft(self, *a, **k)
        seen["forward_target"].append(_np(torch.minimum(out["qf_preds"], out["qf_twin_preds"])))
        return out

    def frozen_q(*a, **k):
        out = orig_fq(*a, **k)
        seen["frozen_q"].append(_np(out))
        return out

    TorchSquashedGaussian.rsample_and_logp = rsample_and_logp
    type(module).forward_target = forward_target
    SACTorchLearner._frozen_q = staticmethod(frozen_q)

    # RLlib's batch, as its learner connector built it (row order, dtypes).
    batch = {k[len("batch/"):]: v for k, v in rllib.items() if k.startswith("batch/")}
    sample = {c: batch[c] for c in ("obs", "new_obs", "actions", "rewards", "terminateds", "n_step", "weights")}
    n = len(sample["actions"])
    results: Dict[str, Any] = {"after": [], "grad": [], "config": config, "dtypes": {
        k: str(v.dtype) for k, v in sample.items()}}
    for u in range(updates):
        noise.arm(rllib["eps"][u, 0], rllib["eps"][u, 1])
        huber.clear()
        for v in seen.values():
            v.clear()
        metrics = learner.update({MODULE_ID: {k: v.copy() for k, v in sample.items()}}, minibatch_size=n,
                                 num_epochs=1)[MODULE_ID]
        noise.check_consumed()
        before = [({k: v.clone() for k, v in m.state_dict().items()}, {k: v.clone() for k, v in t.state_dict().items()})
                  for m, t in module.get_target_network_pairs()]
        learner.update_target_networks(1000 + u + 1)
        if u == 0:  # RLlib's polyak expression (ray/rllib/utils/torch_utils.py) on marl's own weights
            tau = cfg.tau
            results["polyak_check"] = max(
                float((tau * m_sd[k] + (1 - tau) * t_sd[k] - t.state_dict()[k]).abs().max())
                for (m_sd, t_sd), (_, t) in zip(before, module.get_target_network_pairs()) for k in t_sd)
        sd = module.state_dict()
        results["after"].append({k: _np(sd[k]) for k in pairs})
        results["grad"].append({k: _np(p.grad) for k, p in module.named_parameters() if p.grad is not None})
        if u == 0:
            (q, target), (q_twin, _) = huber
            results["fwd"] = {"q": q, "q_twin": q_twin, "target": target,
                              "logp_curr": seen["rsample_and_logp"][0], "logp_next": seen["rsample_and_logp"][1],
                              "q_target_next": seen["forward_target"][0], "q_curr": seen["frozen_q"][0]}
            results["losses"] = {k: metrics[k] for k in LOSSES}
    results["pairs"] = pairs
    results["own_init_std"] = results_init
    algo.stop()
    return results


# ------------------------------------------------------------------ comparison
def _fmt(x: float) -> str:
    return f"{x:.2e}"


def compare(rllib: Dict[str, np.ndarray], ours: Dict[str, Any], updates: int) -> Tuple[float, List[str]]:
    """Print the comparison; return the largest weight difference (all updates, all groups) and the lines."""
    lines: List[str] = []
    pairs = ours["pairs"]
    # first-update intermediates
    lines.append("first update, loss inputs: max |marl - RLlib| (max |RLlib|)")
    for key, what in INTERMEDIATES.items():
        a, b = np.asarray(ours["fwd"][key], np.float64), np.asarray(rllib[f"fwd/{key}"], np.float64).reshape(-1)
        lines.append(f"  {key:<14} {_fmt(np.abs(a.reshape(-1) - b).max())}  ({_fmt(np.abs(b).max())})  {what}")
    r_losses = {k[len("loss/"):]: float(v) for k, v in rllib.items() if k.startswith("loss/")}
    r_qf = r_losses["qf_loss"] + r_losses.get("qf_twin_loss", 0.0)
    for key, rv in (("qf_loss", r_qf), ("policy_loss", r_losses["policy_loss"]),
                    ("alpha_loss", r_losses["alpha_loss"])):
        mv = ours["losses"][key]
        lines.append(f"  {key:<14} marl {mv:+.9e}  RLlib {rv:+.9e}  diff {_fmt(abs(mv - rv))}"
                     + ("  (critic + twin)" if key == "qf_loss" else ""))
    lines.append(f"  polyak: max |RLlib's tau * main + (1 - tau) * target - marl's target update|, both on marl's "
                 f"weights of update 1: {_fmt(ours['polyak_check'])}")
    worst = 0.0
    for u in range(updates):
        lines.append(f"after update {u + 1}: per group max |marl - RLlib| weight [update size max |after - before|]"
                     f"  max |grad diff| [max |grad|]")
        per_group: Dict[str, List[float]] = {g: [0.0, 0.0, 0.0, 0.0] for g in GROUP_ORDER}
        for m, r in pairs.items():
            after_r = rllib[f"after{u}/{r}"].reshape(-1).astype(np.float64)
            before_r = rllib[f"init/{r}"].reshape(-1).astype(np.float64)
            after_m = ours["after"][u][m].reshape(-1).astype(np.float64)
            g = per_group[group_of(m)]
            g[0] = max(g[0], float(np.abs(after_m - after_r).max()))
            g[1] = max(g[1], float(np.abs(after_r - before_r).max()))
            if m in ours["grad"][u] and f"grad{u}/{r}" in rllib:
                gr = rllib[f"grad{u}/{r}"].reshape(-1).astype(np.float64)
                g[2] = max(g[2], float(np.abs(ours["grad"][u][m].reshape(-1) - gr).max()))
                g[3] = max(g[3], float(np.abs(gr).max()))
        for name in GROUP_ORDER:
            d, size, gd, gs = per_group[name]
            grad = f"  grad {_fmt(gd)} [{_fmt(gs)}]" if gs else ""
            lines.append(f"  {name:<20} {_fmt(d)} [{_fmt(size)}]{grad}")
            worst = max(worst, d)
    return worst, lines


def init_differences(rllib: Dict[str, np.ndarray], ours: Dict[str, Any]) -> List[str]:
    """Parameters (critic twin and targets left out: copies) whose initial std differs more than 2x
    between marl's own build and RLlib's: the update check loads RLlib's weights, so it cannot see these."""
    lines = []
    for m, r in ours["pairs"].items():
        if m not in ours["own_init_std"] or m.startswith(("qf_twin.", "target_")):
            continue
        ours_std, theirs = ours["own_init_std"][m], float(rllib[f"init/{r}"].std())
        if theirs > 0 and not 0.5 <= ours_std / theirs <= 2.0:
            lines.append(f"  {m:<28} marl std {ours_std:.2e}  RLlib ({r}) std {theirs:.2e}")
    return lines


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", default="sac-pendulum",
                        choices=[c for c, v in CASES.items() if v.get("algo") == "sac"])
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=SCENARIOS)
    parser.add_argument("--updates", nargs="+", type=int, default=[1, 5],
                        help="run each count of consecutive updates on the same batch (fresh builds each)")
    parser.add_argument("--rows", type=int, default=256, help="batch rows (the case's train_batch_size_per_learner)")
    parser.add_argument("--seed", type=int, default=1, help="the batch/noise seed and both builds' seed")
    parser.add_argument("--marl-adam", default="as-built", choices=["as-built", "unfused"],
                        help="marl's optimizer: as its learner builds it (fused Adam) or torch's default Adam")
    parser.add_argument("--tolerance", type=float, default=1e-6)
    parser.add_argument("--rllib-python", default=default_rllib_python())
    parser.add_argument("--dump", nargs=2, metavar=("DATA", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.dump:
        rllib_dump(args.case, args.seed, args.dump[0], args.dump[1])
        return 0
    if not Path(args.rllib_python).exists():
        parser.error(f"--rllib-python {args.rllib_python!r} does not exist (see scripts/parity.py)")
    worst_all = 0.0
    printed_config = False
    for scenario in args.scenarios:
        for updates in args.updates:
            with tempfile.TemporaryDirectory() as tmp:
                data_path, out = str(Path(tmp) / "data.npz"), str(Path(tmp) / "rllib.npz")
                np.savez(data_path, **make_scenario(scenario, args.rows, updates, args.seed))
                cmd = [args.rllib_python, str(Path(__file__).resolve()), "--case", args.case,
                       "--seed", str(args.seed), "--dump", data_path, out]
                proc = subprocess.run(cmd, check=False, cwd=str(ROOT), capture_output=True, text=True,
                                      env={**os.environ, "PYTHONPATH": str(ROOT)})
                if proc.returncode != 0:
                    print(proc.stderr[-4000:], file=sys.stderr)
                    return 2
                rllib = dict(np.load(out))
                rllib["eps"] = np.load(data_path)["eps"]
            ours = marl_run(args.case, args.seed, rllib, updates, args.marl_adam)
            if not printed_config:
                print(f"config RLlib: {rllib['config']}  target_entropy {rllib['target_entropy']}")
                print(f"config marl:  {ours['config']}")
                print("RLlib batch dtypes: " + ", ".join(f"{k} {v}" for k, v in ours["dtypes"].items()))
                diffs = init_differences(rllib, ours)
                print("initial weights, each library's own build (not part of the update check, which starts both "
                      "from RLlib's): " + ("std within 2x everywhere" if not diffs else "std differs > 2x at"))
                print("\n".join(diffs))
                printed_config = True
            print(f"\n=== {args.case} / {scenario}: {args.rows} rows, {updates} update(s), "
                  f"marl Adam {args.marl_adam} ===")
            worst, lines = compare(rllib, ours, updates)
            print("\n".join(lines), flush=True)
            worst_all = max(worst_all, worst)
    ok = worst_all <= args.tolerance
    print(f"\nlargest weight difference {worst_all:.1e} ({'within' if ok else 'OUTSIDE'} tolerance {args.tolerance:g})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
