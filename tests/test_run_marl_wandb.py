"""run_marl.py --wandb: offline runs that need no server and no login.

wandb 0.31 writes an offline run as one transaction log
(``offline-run-*/run-<id>.wandb``, LevelDB log format of protobuf ``Record``s)
and no ``files/wandb-summary.json``; `read_offline_run` reads that log back,
so the tests check what ``wandb sync`` would upload.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List

import pytest

from scripts import run_marl
from marl.experiment import tracking

TINY = [
    "--env-config", '{"N": 3, "max_cycles": 10, "continuous_actions": false}',
    "--train_batch_size_per_learner=200", "--minibatch_size=100", "--num_epochs=1",
    "--num-envs-per-env-runner", "2", "--stop-iters", "2", "--no-progress",
]


pytestmark = pytest.mark.usefixtures("isolated_run_dir")


def read_offline_run(run_dir: Path) -> Dict[str, Any]:
    """History rows, config and artifact types of the one offline wandb run under ``run_dir``."""
    from wandb.proto import wandb_internal_pb2 as pb

    (log,) = list(Path(run_dir).glob("wandb/offline-run-*/run-*.wandb"))
    data = log.read_bytes()
    assert data[:7] == b":W&B\xe1\xbe\x00", "unknown wandb transaction log header"
    block, pos, pending, chunks = 32768, 7, b"", []
    while pos + 7 <= len(data):
        space = block - pos % block
        if space < 7:  # block trailer padding
            pos += space
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 1:  # FULL
            chunks.append(chunk)
        elif kind == 2:  # FIRST
            pending = chunk
        elif kind == 3:  # MIDDLE
            pending += chunk
        elif kind == 4:  # LAST
            chunks.append(pending + chunk)
    history: List[Dict[str, Any]] = []
    config: Dict[str, Any] = {}
    artifacts: List[str] = []
    for raw in chunks:
        record = pb.Record.FromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                            for item in record.history.item})
        elif kind in ("config", "run"):
            items = record.config.update if kind == "config" else record.run.config.update
            config.update({item.key: json.loads(item.value_json) for item in items})
        elif kind == "artifact":
            artifacts.append(record.artifact.type)
    return {"history": history, "config": config, "artifacts": artifacts}


def wandb_service_processes() -> List[str]:
    """Pids of the wandb service processes this process started (read from Linux's /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = stat.read_text().rsplit(")", 1)[1].split()[1]
            command = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue  # ended meanwhile
        if parent == str(os.getpid()) and b"wandb" in command:
            found.append(stat.parent.name)
    return found


def test_wandb_offline_logs_config_metrics_and_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    run_marl.main(TINY + ["--wandb", "--wandb-group", "g1", "--wandb-tags", "a,b", "--run-dir", str(run_dir)])

    # run.finish() returns before wandb's service has written the offline log; on a loaded
    # machine this test then read a log without history or artifact. main() waits for the
    # service to close the run and exit, so the log below is complete whatever the load.
    assert not wandb_service_processes()
    logged = read_offline_run(run_dir)
    steps = [row["num_env_steps_sampled_lifetime"] for row in logged["history"]]
    assert steps == [200, 400]
    assert all(isinstance(row.get("env_runners/episode_return_mean"), (int, float)) for row in logged["history"])
    assert logged["config"]["policy_setup"] == "shared-encoder"
    assert logged["config"]["hyperparameters"]["num_epochs"] == 1
    assert "model" in logged["artifacts"]
    assert (run_dir / "wandb_run_id").read_text().strip()


@pytest.mark.parametrize(
    "explicit, environ, mode",
    [
        (None, {}, "offline"),
        (None, {"WANDB_API_KEY": "k"}, "online"),
        (None, {"WANDB_MODE": "disabled", "WANDB_API_KEY": "k"}, "disabled"),
        (None, {"WANDB_MODE": "dryrun"}, "offline"),
        ("offline", {"WANDB_MODE": "online", "WANDB_API_KEY": "k"}, "offline"),
    ],
)
def test_wandb_mode_rule_never_goes_online_without_a_key_or_a_request(explicit, environ, mode):
    assert tracking.resolve_wandb_mode(explicit, environ) == mode


def test_without_wandb_flag_nothing_is_logged(tmp_path):
    run_dir = tmp_path / "run"
    run_marl.main(TINY[:-3] + ["--stop-iters", "1", "--no-progress", "--run-dir", str(run_dir)])
    assert not (run_dir / "wandb").exists()
