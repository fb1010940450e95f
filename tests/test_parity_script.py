"""scripts/parity.py: every case is a valid marl config, and the table's arithmetic."""
import json

import pytest

from scripts import parity
from scripts.parity_cases import CASES, reached


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_case_builds_on_marl_with_its_config_unchanged(case):
    algo = parity.build_marl(CASES[case], seed=0)
    try:
        for key, value in CASES[case]["training"].items():
            assert getattr(algo.config, key) == value, key
        if CASES[case].get("policies"):
            assert set(algo.learner.module.keys()) == set(CASES[case]["policies"])
    finally:
        algo.stop()


def test_per_module_cases_need_every_policy_over_the_threshold():
    case = CASES["ma-cartpole"]
    assert reached(case, {"module_episode_returns_mean": {"p0": 500.0}}) is None  # p1 has no episode yet
    assert reached(case, {"module_episode_returns_mean": {"p0": 500.0, "p1": 350.0}}) == 350.0
    assert reached(CASES["cartpole-plain"], {"episode_return_mean": 451.0}) == 451.0
    assert reached(CASES["cartpole-plain"], {}) is None


def test_median_counts_a_missed_threshold_as_never():
    runs = [{"reached": True, "steps": 50}, {"reached": False}, {"reached": True, "steps": 80}]
    assert parity.median_of(runs, "steps") == 80
    assert parity.median_of(runs[:2] + [{"reached": False}], "steps") is None


def test_table_pools_json_files_and_prints_ratios(tmp_path, capsys):
    rows = [
        {"library": lib, "case": "cartpole-plain", "seed": s, "reached": True, "steps": steps, "seconds": secs}
        for lib, steps, secs in (("marl", 80_000, 10.0), ("rllib", 100_000, 40.0)) for s in (0, 1)
    ]
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(rows[:2] + rows[2:3]))
    b.write_text(json.dumps(rows[3:]))
    assert parity.main(["--table", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "| cartpole-plain | marl | 80k (10 s) | 80k (10 s) | 2/2 | 80k | 10 |" in out
    assert "| cartpole-plain | 0.80 | 0.25 |" in out
