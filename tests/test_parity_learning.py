"""The parity suite's marl side: RLlib's tuned configs, unchanged, reach RLlib's thresholds.

Each case of ``scripts/parity_cases.py`` is trained exactly as
``scripts/parity.py`` trains it (same builder, same stop rule) and must reach
its threshold within RLlib's env-step budget. The side-by-side comparison
with RLlib itself (several seeds, medians, wall time) is the script's job;
these tests keep the marl half from regressing. Marked slow.
"""
import pytest

from scripts.parity import run_worker
from scripts.parity_cases import CASES

pytestmark = pytest.mark.slow

#: Every parity case; seeds as in scripts/parity.py's default run.
CI_CASES = ["cartpole-plain", "cartpole-tuned", "ma-cartpole", "pendulum", "simple-spread", "dqn-cartpole",
            "sac-pendulum", "dqn-ma-cartpole", "sac-ma-pendulum"]
SEEDS = (0, 1, 2)


@pytest.mark.parametrize("case", CI_CASES)
def test_rllib_tuned_config_reaches_rllibs_threshold_on_two_of_three_seeds(case):
    """The issue's bar: RLlib's threshold within RLlib's budget on at least 2 of 3 seeds."""
    results = []
    for seed in SEEDS:
        results.append(run_worker("marl", case, seed=seed))
        reached = [r for r in results if r["reached"]]
        if len(reached) >= 2 or len(results) - len(reached) >= 2:
            break
    assert len(reached) >= 2, (
        f"{case}: threshold {CASES[case]['threshold']} within {CASES[case]['budget']} env steps reached on "
        f"{len(reached)} of {len(results)} seeds; best returns {[round(r['best'], 1) for r in results]}")
    assert all(r["steps"] <= CASES[case]["budget"] for r in reached)
