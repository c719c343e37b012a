"""A run's workdir, checked before anything is written: every system's `train_all` and `evaluate` open it here.

A workdir belongs to one system and one config. Its `config.json` (the resolved config of the last accepted
training run) names the system (`system`; purification configs predate the field and lack it). Opening it:

  claim     the workdir exists (or may be created) and holds no other system's run
  accept    every checkpoint directory the run will use was made from its record and holds no more steps than
            the config asks for; only then (with `retrain`) the stale ones are deleted, and `config.json` and
            `metrics.jsonl` are written

so a refused run leaves the workdir as it was, and a run never mixes its files with another system's.
"""

import json
import os
from typing import Any

from vqdefense_jax.core import checkpoints
from vqdefense_jax.core import files
from vqdefense_jax.core.errors import VQDefenseError
from vqdefense_jax.core.metrics import MetricsLog

CONFIG = "config.json"


def system_of(config: dict[str, Any]) -> str:
  """The system a resolved config belongs to: its `system` field, else 'purify'."""
  return config.get("system", "purify")


def owner(workdir: str) -> str | None:
  """The system whose run the workdir holds (from its config.json), None when it holds none."""
  path = os.path.join(workdir, CONFIG)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      return system_of(json.load(f))
  except (OSError, ValueError) as e:
    raise VQDefenseError(f"{path} is unreadable ({type(e).__name__}); use another --workdir") from e


def _refuse_another_system(workdir: str, system: str) -> None:
  if (held := owner(workdir)) not in (None, system):
    raise VQDefenseError(f"workdir {workdir} holds a {held} run (its {CONFIG}); a workdir belongs to one system: "
                         f"give this {system} run another --workdir")


def claim(workdir: str, system: str, create: bool = True) -> str:
  """The workdir's absolute path, once it is known to hold no other system's run. It is created (and proven
  writable) only with `create`; without it (evaluation of finished checkpoints) a missing workdir is an error."""
  workdir = os.path.abspath(workdir)
  if not os.path.isdir(workdir):
    if not create:
      raise VQDefenseError(f"workdir {workdir} does not exist: train first (train.py with the same --config and "
                           "--workdir), or add --grid to train what is missing")
    return files.prepare_workdir(workdir)
  _refuse_another_system(workdir, system)
  return files.prepare_workdir(workdir)


def check(runs: dict[str, tuple[dict[str, Any], int]], retrain: bool) -> list[str]:
  """The checkpoint directories of `runs` ({directory: (record, num_steps)}) that another config made: made
  from another record, or holding more steps than num_steps. Without `retrain` the first is an error; with it,
  they are returned (to delete). Reads only."""
  stale = {}
  for directory, (record, num_steps) in runs.items():
    latest = checkpoints.latest_step(directory)
    if latest is None:
      continue
    diff = checkpoints.record_diff(directory, record)
    if latest > num_steps:
      diff = diff + [f"steps: {latest} saved -> {num_steps} asked"]
    if diff:
      stale[directory] = diff
  if stale and not retrain:
    raise checkpoints.mismatch(*next(iter(stale.items())))
  return list(stale)


def accept(workdir: str, config: dict[str, Any], runs: dict[str, tuple[dict[str, Any], int]], retrain: bool,
           lead: bool = True, also: tuple[dict[str, tuple[dict[str, Any], int]], ...] = ()) -> MetricsLog:
  """Check every run (and the runs of `also`: a nested experiment's, checked here, accepted by its own call),
  then, only on the `lead` process: delete the stale checkpoints (`retrain`), write config.json; returns the
  workdir's metrics log (None-backed off the lead)."""
  _refuse_another_system(workdir, system_of(config))
  stale = check(runs, retrain)
  for more in also:
    check(more, retrain)
  if lead:
    checkpoints.delete_stale(stale)
    files.write_json_atomic(os.path.join(workdir, CONFIG), config)
  return MetricsLog(os.path.join(workdir, "metrics.jsonl") if lead else None)
