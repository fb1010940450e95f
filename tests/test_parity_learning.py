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

#: Every parity case, seed 0 (scripts/parity.py runs seeds 0-2 on both libraries).
CI_CASES = ["cartpole-plain", "cartpole-tuned", "ma-cartpole", "pendulum", "simple-spread"]


@pytest.mark.parametrize("case", CI_CASES)
def test_rllib_tuned_config_reaches_rllibs_threshold_within_rllibs_budget(case):
    result = run_worker("marl", case, seed=0)
    assert result["reached"], (
        f"{case}: best {result['best']:.1f} < threshold {CASES[case]['threshold']} "
        f"within {CASES[case]['budget']} env steps")
    assert result["steps"] <= CASES[case]["budget"]
