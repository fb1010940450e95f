"""Running experiments, importable as a library: the machinery behind ``scripts/run_marl.py``,
``sweep.py`` and ``plot.py`` (thin entry points over this package).

One module, one job:

- `cli`: the command line (and ``--config`` files) to one resolved `RunSpec`.
- `presets`: the default experiment and the per-env defaults it fills in.
- `policy_setups`: ``shared`` / ``per-agent`` / ``shared-encoder`` module layouts.
- `algo_config`: a `RunSpec` plus the env's agent ids to an ``AlgorithmConfig``.
- `run_dir`: the run directory: ``config.yaml``, ``metrics.jsonl``, checkpoint paths.
- `stopping`: the stop conditions (``--stop-iters`` ...).
- `loggers`: each iteration's metrics, flattened once, to metrics.jsonl, progress.csv, TensorBoard, wandb.
- `seeds`: ``--seeds``: one run per seed (in turn or in parallel processes) and the summary across them.
- `progress`: the progress bar or per-iteration lines, and the rich summary tables.
- `interrupts`: Ctrl-C / SIGTERM as "stop after this iteration" (a second one stops at once).
- `closed_pipes`: console output that is dropped, not fatal, once its reader (``| tee``) has died.
- `tracking`: Weights & Biases logging (offline by default, never a login prompt).
- `evaluation`: greedy episodes from a checkpoint, optionally recorded as a GIF.
- `plotting`: learning curves of one run or of groups of runs (mean and spread).
- `local_sweep`: wandb sweep YAML files run locally through Optuna.

Like ``marl.algorithms``, this package may import ``envs`` and ``learners``; nothing in
``marl.core``, ``marl.models`` or the sampler imports it. ``import marl`` does not load it.
"""
