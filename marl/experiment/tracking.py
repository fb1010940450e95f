"""Weights & Biases logging: config, per-iteration metrics against env steps, the checkpoint.

The mode rule (safe: a run never stops at a login prompt):

1. ``--wandb-mode online|offline|disabled`` if given;
2. else ``$WANDB_MODE`` if set;
3. else ``online`` if ``$WANDB_API_KEY`` is set;
4. else ``offline``.

Offline runs are written under ``<run_dir>/wandb/offline-run-*`` and can be
uploaded later with ``wandb sync <run_dir>/wandb/offline-run-*``. A machine
that ran ``wandb login`` (key in ~/.netrc only) still defaults to offline:
pass ``--wandb-mode online`` (or set ``WANDB_MODE=online``) to log live.

Inside a wandb sweep agent (``$WANDB_SWEEP_ID`` set, or ``wandb.run`` already
started by ``wandb.agent``) tracking is on even without ``--wandb``, the mode
is online unless ``--wandb-mode`` / ``$WANDB_MODE`` say otherwise, and the
agent's run is used, so metrics land in the sweep.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping, Optional

from marl.experiment.run_dir import STEP_KEY


def resolve_wandb_mode(explicit: Optional[str] = None, environ: Optional[Mapping[str, str]] = None) -> str:
    """The mode by the rule above (``explicit`` is ``--wandb-mode``)."""
    environ = os.environ if environ is None else environ
    if explicit:
        return explicit
    env_mode = environ.get("WANDB_MODE", "").strip().lower()
    if env_mode:
        # "dryrun" is wandb's old name of offline; "run" of online.
        return {"dryrun": "offline", "run": "online"}.get(env_mode, env_mode)
    if environ.get("WANDB_API_KEY"):
        return "online"
    return "offline"


def in_wandb_sweep(environ: Optional[Mapping[str, str]] = None) -> bool:
    """True when a wandb sweep agent started this process (it sets ``WANDB_SWEEP_ID``)."""
    environ = os.environ if environ is None else environ
    return bool(environ.get("WANDB_SWEEP_ID"))


class NullTracker:
    """Used without ``--wandb``: every call does nothing."""

    run_path: Optional[str] = None

    def log(self, row: Mapping[str, Any]) -> None:
        pass

    def finish(self, checkpoint: Optional[Path], summary: Optional[Mapping[str, Any]] = None) -> None:
        pass

    def close(self) -> None:
        pass


class WandbTracker:
    """One wandb run for one training run.

    ``wandb.define_metric("*", step_metric=STEP_KEY)`` makes env steps the
    x-axis of every chart; each logged row carries that key.
    """

    def __init__(self, *, config: Mapping[str, Any], run_dir: Path, name: str, project: Optional[str],
                 entity: Optional[str], group: Optional[str], tags: Optional[list], mode: str,
                 resume_id: Optional[str] = None) -> None:
        import wandb

        self._wandb = wandb
        self._owns_run = wandb.run is None
        if self._owns_run:
            self.run = wandb.init(
                project=project,
                entity=entity,
                group=group,
                tags=list(tags or []) or None,
                name=name,
                config=dict(config),
                dir=str(run_dir),
                mode=mode,
                id=resume_id,
                resume="allow" if resume_id else None,
                settings=wandb.Settings(silent=True, console="off"),
            )
        else:  # wandb.agent started the run: add our config to the sweep's
            self.run = wandb.run
            self.run.config.update(dict(config), allow_val_change=True)
        self.mode = mode
        self.run.define_metric(STEP_KEY)
        self.run.define_metric("*", step_metric=STEP_KEY)
        self.run_path = getattr(self.run, "dir", None)

    @property
    def run_id(self) -> str:
        return self.run.id

    def log(self, row: Mapping[str, Any]) -> None:
        """Log one iteration's flattened metrics (None values are left out)."""
        self.run.log({k: v for k, v in row.items() if v is not None and not isinstance(v, str)})

    def close(self) -> None:
        """Nothing: the run ends with `finish`, after the final checkpoint it uploads is saved."""

    def finish(self, checkpoint: Optional[Path], summary: Optional[Mapping[str, Any]] = None) -> None:
        """Upload ``checkpoint`` as a ``model`` artifact and close the run (if we opened it)."""
        if summary:
            for key, value in summary.items():
                self.run.summary[key] = value
        if checkpoint is not None and Path(checkpoint).is_dir():
            artifact = self._wandb.Artifact(name=_artifact_name(f"{self.run.name or self.run.id}-checkpoint"),
                                            type="model")
            artifact.add_dir(str(checkpoint))
            self.run.log_artifact(artifact)
        if self._owns_run:
            self.run.finish()
            # run.finish() returns once wandb's service has the data, not once it is on disk:
            # the service writes the offline transaction log (run-<id>.wandb) when it closes
            # the run, later, and later still on a loaded machine. Tearing the service down
            # waits for that, so the run directory is complete when the run returns (the next
            # run starts a new service).
            if self._wandb.run is None:
                self._wandb.teardown()


def _artifact_name(text: str) -> str:
    """wandb artifact names allow letters, digits, '-', '_' and '.'."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:128]


def start_tracking(spec: Any, run_dir: Path, config: Mapping[str, Any], resume_id: Optional[str] = None):
    """A `WandbTracker` when ``--wandb`` is on (or a sweep agent runs us), else a `NullTracker`."""
    if not (spec.wandb or in_wandb_sweep()):
        return NullTracker()
    if in_wandb_sweep() and not spec.wandb_mode and not os.environ.get("WANDB_MODE"):
        mode = "online"  # a `wandb agent` process: its runs must reach the sweep's controller
    else:
        mode = resolve_wandb_mode(spec.wandb_mode)
    if mode == "disabled":
        return NullTracker()
    return WandbTracker(
        config=config,
        run_dir=run_dir,
        name=Path(run_dir).name,
        project=spec.wandb_project,
        entity=spec.wandb_entity,
        group=spec.wandb_group,
        tags=spec.wandb_tags,
        mode=mode,
        resume_id=resume_id,
    )
