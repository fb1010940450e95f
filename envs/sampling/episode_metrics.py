"""Episode statistics: one pooling for the runner, the worker pool and the Algorithm.

A runner summarises the episodes it completed; several runners' summaries
merge weighted by their episode counts (``merge_metrics``), and the Algorithm
pools per-iteration summaries into its smoothed window (``pooled_summary``)
with the same weights, so every level reports the same kind of mean.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Sequence, Tuple

import numpy as np

def episode_metrics(
    completed: Sequence[Tuple[float, int, Mapping[Any, float], Mapping[str, float]]],
) -> Dict[str, Any]:
    """Return statistics of completed episodes; ``{}`` when there are none (never NaN).

    ``completed`` holds ``(episode_return, episode_len, {agent: return},
    {module: return})`` per episode. The per-agent / per-module counts are
    returned too (``agent_episode_count``, ``module_episode_count``) so that
    results of several runners can be merged with the right weights.
    """
    if not completed:
        return {}
    returns = np.asarray([c[0] for c in completed], dtype=np.float64)
    lens = np.asarray([c[1] for c in completed], dtype=np.float64)
    agent_sum: Dict[Any, float] = {}
    agent_cnt: Dict[Any, int] = {}
    module_sum: Dict[str, float] = {}
    module_cnt: Dict[str, int] = {}
    for _, _, agents, modules in completed:
        for a, r in agents.items():
            agent_sum[a] = agent_sum.get(a, 0.0) + r
            agent_cnt[a] = agent_cnt.get(a, 0) + 1
        for m, r in modules.items():
            module_sum[m] = module_sum.get(m, 0.0) + r
            module_cnt[m] = module_cnt.get(m, 0) + 1
    return {
        "episode_return_mean": float(returns.mean()),
        "episode_return_min": float(returns.min()),
        "episode_return_max": float(returns.max()),
        "episode_len_mean": float(lens.mean()),
        "agent_episode_return_mean": {a: agent_sum[a] / agent_cnt[a] for a in agent_sum},
        "module_episode_return_mean": {m: module_sum[m] / module_cnt[m] for m in module_sum},
        "agent_episode_count": agent_cnt,
        "module_episode_count": module_cnt,
    }


_SUM_KEYS = ("num_episodes", "num_env_steps_sampled", "num_agent_steps_sampled",
             "num_env_steps_sampled_lifetime", "num_agent_steps_sampled_lifetime",
             "num_env_errors", "num_episodes_dropped", "num_env_hangs")


def merge_metrics(metrics: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """Merge runner metrics: counts summed, means weighted by episode counts."""
    out: Dict[str, Any] = {}
    for key in _SUM_KEYS:
        out[key] = sum(int(m.get(key, 0)) for m in metrics)
    module_steps: Dict[str, int] = {}
    for m in metrics:
        for mid, n in m.get("num_module_steps_sampled", {}).items():
            module_steps[mid] = module_steps.get(mid, 0) + int(n)
    out["num_module_steps_sampled"] = module_steps
    with_eps = [m for m in metrics if m.get("num_episodes", 0) > 0 and "episode_return_mean" in m]
    if not with_eps:
        return out
    if len(with_eps) == 1:  # exactly the runner's numbers (a weighted mean of one may round)
        out.update({k: with_eps[0][k] for k in EPISODE_KEYS if k in with_eps[0] and k != "num_episodes"})
        out.setdefault("num_episodes_for_metrics", int(with_eps[0]["num_episodes"]))
        return out
    out["num_episodes_for_metrics"] = sum(int(m.get("num_episodes_for_metrics", m["num_episodes"])) for m in with_eps)
    weights = np.asarray([m.get("num_episodes_for_metrics", m["num_episodes"]) for m in with_eps], dtype=np.float64)
    for key in ("episode_return_mean", "episode_len_mean"):
        out[key] = float(np.average([m[key] for m in with_eps], weights=weights))
    out["episode_return_min"] = float(min(m["episode_return_min"] for m in with_eps))
    out["episode_return_max"] = float(max(m["episode_return_max"] for m in with_eps))
    for mean_key, count_key in (("agent_episode_return_mean", "agent_episode_count"),
                                ("module_episode_return_mean", "module_episode_count")):
        sums: Dict[Any, float] = {}
        counts: Dict[Any, int] = {}
        for m in with_eps:
            for k, mean in m.get(mean_key, {}).items():
                c = m.get(count_key, {}).get(k, 1)
                sums[k] = sums.get(k, 0.0) + mean * c
                counts[k] = counts.get(k, 0) + c
        out[mean_key] = {k: sums[k] / counts[k] for k in sums}
        out[count_key] = counts
    return out


#: The episode statistics of runner metrics (what ``merge_metrics`` pools).
EPISODE_KEYS = ("num_episodes", "num_episodes_for_metrics", "episode_return_mean", "episode_return_min",
                "episode_return_max", "episode_len_mean", "agent_episode_return_mean", "agent_episode_count",
                "module_episode_return_mean", "module_episode_count")


def episode_summary(metrics: Mapping[str, Any]) -> Dict[str, Any] | None:
    """The episode statistics of (merged) runner metrics, JSON-ready (agent ids as
    strings), for pooling across iterations with :func:`merge_metrics`; None when
    no episode completed."""
    if int(metrics.get("num_episodes", 0)) == 0 or "episode_return_mean" not in metrics:
        return None
    out: Dict[str, Any] = {}
    for key in EPISODE_KEYS:
        if key in metrics:
            value = metrics[key]
            out[key] = {str(k): v for k, v in value.items()} if isinstance(value, Mapping) else value
    out.setdefault("num_episodes_for_metrics", int(out["num_episodes"]))
    return out
