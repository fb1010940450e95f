"""Shared fixtures."""
import pytest


@pytest.fixture
def isolated_run_dir(tmp_path, monkeypatch):
    """Run in a fresh directory (``runs/`` lands there) with wandb offline and no sweep context."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_SWEEP_ID", raising=False)
    return tmp_path
