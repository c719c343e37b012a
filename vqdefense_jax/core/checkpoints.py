"""Orbax checkpoints of a train state: a missing, corrupt or mismatched one is a one-line `VQDefenseError`."""

import os
from typing import Any

import orbax.checkpoint as ocp

from vqdefense_jax.core.errors import VQDefenseError


def manager(directory: str, max_to_keep: int = 2) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(os.path.abspath(directory),
                               options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))


def latest_step(directory: str) -> int | None:
  """The newest saved step in `directory`, None when there is none."""
  if not os.path.isdir(directory):
    return None
  mngr = manager(directory)
  try:
    return mngr.latest_step()
  finally:
    mngr.close()


def restore(directory: str, abstract_state: Any, step: int | None = None) -> Any:
  """The state saved at `step` (default: the newest) in the structure of `abstract_state`."""
  if not os.path.isdir(directory):
    raise VQDefenseError(f"no checkpoint at {directory}; run train.py with this config and workdir first")
  mngr = manager(directory)
  try:
    return restore_with(mngr, directory, abstract_state, mngr.latest_step() if step is None else step)
  finally:
    mngr.close()


def restore_with(mngr: ocp.CheckpointManager, directory: str, abstract_state: Any, step: int | None) -> Any:
  if step is None:
    raise VQDefenseError(f"no checkpoint at {directory}; run train.py with this config and workdir first")
  try:
    return mngr.restore(step, args=ocp.args.StandardRestore(abstract_state))
  except Exception as e:  # orbax raises many types for unreadable or mismatched files.
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise VQDefenseError(f"checkpoint {directory} (step {step}) is corrupt or does not match the config: "
                         f"{first[:300]}; delete it to retrain") from e


def save(mngr: ocp.CheckpointManager, step: int, state: Any) -> None:
  mngr.save(step, args=ocp.args.StandardSave(state))
