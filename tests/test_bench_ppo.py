"""scripts/bench_ppo.py measures what it says (the numbers themselves are not asserted)."""
from __future__ import annotations

import json
import os

from scripts import bench_ppo


def test_tree_rss_counts_the_process_and_its_children():
    import subprocess
    import sys

    own = bench_ppo.tree_rss_mib(os.getpid())
    with open(f"/proc/{os.getpid()}/status") as f:
        vm_rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024
    assert abs(own - vm_rss) < 0.2 * vm_rss + 5
    child = subprocess.Popen([sys.executable, "-c", "import time; x = bytearray(200 * 2**20); time.sleep(5)"])
    try:
        import time

        deadline = time.time() + 5
        while bench_ppo.tree_rss_mib(os.getpid()) < own + 150 and time.time() < deadline:
            time.sleep(0.1)
        assert bench_ppo.tree_rss_mib(os.getpid()) >= own + 150, "the child's 200 MiB are counted"
    finally:
        child.kill()
        child.wait()


def test_a_marl_run_reports_steps_per_second_first_result_and_peak_rss(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = bench_ppo.main(["--backend", "marl", "--cases", "cartpole", "--iters", "1", "--no-floor",
                           "--json", str(out), "--threads", "1"])
    assert code == 0
    run = json.loads(out.read_text())["runs"][0]
    assert run["backend"] == "marl" and run["case"] == "cartpole"
    assert run["env_steps"] == 4000  # one timed iteration of train_batch_size_per_learner
    assert run["env_steps_per_s"] == run["env_steps"] / run["seconds"]
    assert 0 < run["first_result_s"] < 120 and run["peak_rss_mib"] > 100
    assert "| cartpole | marl |" in capsys.readouterr().out


def test_the_hand_written_update_trains_the_same_shapes():
    assert bench_ppo.hand_written_update_ms(obs_dim=18, num_actions=5, minibatches=5) > 0
