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
    assert "| cartpole-plain | 0.80 | - | 0.25 |" in out  # two seeds: too few for an interval


def test_a_later_file_replaces_an_earlier_run_of_the_same_seed(tmp_path, capsys):
    def run(lib, steps):
        return {"library": lib, "case": "cartpole-plain", "seed": 0, "reached": True, "steps": steps, "seconds": 1.0}

    old, new = tmp_path / "old.json", tmp_path / "new.json"
    old.write_text(json.dumps([run("marl", 120_000), run("rllib", 100_000)]))
    new.write_text(json.dumps([run("marl", 60_000)]))
    assert parity.main(["--table", str(old), str(new)]) == 0
    out = capsys.readouterr().out
    assert "| cartpole-plain | marl | 60k (1 s) | 1/1 | 60k | 1 |" in out
    assert "| cartpole-plain | 0.60 |" in out


def test_median_ratio_interval_brackets_the_ratio_and_narrows_with_more_seeds():
    rng = __import__("numpy").random.default_rng(1)
    few_a, few_b = list(rng.normal(100, 30, 5)), list(rng.normal(100, 30, 5))
    many_a, many_b = list(rng.normal(100, 30, 200)), list(rng.normal(100, 30, 200))
    low, high = parity.median_ratio_interval(few_a, few_b)
    assert low < 1.0 < high
    low_many, high_many = parity.median_ratio_interval(many_a, many_b)
    assert low_many < 1.0 < high_many and high_many - low_many < (high - low) / 2
    shifted_low, _ = parity.median_ratio_interval([2 * v for v in many_a], many_b)
    assert shifted_low > 1.5  # a real 2x difference is not inside the interval
    assert parity.median_ratio_interval(few_a[:4], few_b) is None  # under 5 seeds a side
    misses = [float("inf")] * 5
    assert parity.median_ratio_interval(misses, few_b) == (float("inf"), float("inf"))
    assert parity.median_ratio_interval(misses, misses) == (1.0, 1.0)
