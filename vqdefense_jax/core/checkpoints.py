"""Orbax checkpoints of a train state, each bound to a record of what made it.

Every checkpoint directory holds `record.json`: the description of the model it holds (its config
section, the training data's digest, the seed, the code version). A run that asks for a directory whose
record differs gets a one-line error naming the differing fields instead of the old model. A missing,
corrupt or mismatched checkpoint is a `VQDefenseError` too.
"""

import asyncio
import contextlib
import json
import logging
import os
import shutil
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from vqdefense_jax.core import files, parallel
from vqdefense_jax.core.errors import VQDefenseError

log = logging.getLogger(__name__)
RECORD = "record.json"
RETRAIN_HINT = "use another --workdir, or add --retrain to delete these checkpoints and train them again"


@contextlib.contextmanager
def quiet() -> Iterator[None]:
  """Orbax logs a failed read at ERROR level before raising; the raised error is reported instead."""
  logger = logging.getLogger("absl")
  level = logger.level
  logger.setLevel(logging.CRITICAL)
  try:
    yield
  finally:
    logger.setLevel(level)


def _this_process_only() -> ocp.options.MultiprocessingOptions:
  """Orbax options that involve no other process: no barrier, no device collective (orbax's default barrier is
  one, dispatched between the run's own computations), nothing broadcast."""
  me = jax.process_index()
  return ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me})


def manager(directory: str, max_to_keep: int = 2) -> ocp.CheckpointManager:
  """The manager of `directory`'s checkpoints. On several processes each makes its own, of itself alone: the
  checkpoints hold full numpy values, so process 0 writes them (`save`) and the others wait for it."""
  os.makedirs(directory, exist_ok=True)
  # On several processes saves are synchronous: `save` returns once the checkpoint is complete on disk.
  return ocp.CheckpointManager(os.path.abspath(directory), options=ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, create=False, enable_async_checkpointing=jax.process_count() == 1,
      multiprocessing_options=_this_process_only()))


def reader(directory: str) -> ocp.CheckpointManager:
  """A read-only manager of this process alone: reading a checkpoint needs no other process, and whether one
  exists yet may differ between processes at a given moment (so no barrier may depend on it)."""
  return ocp.CheckpointManager(os.path.abspath(directory), options=ocp.CheckpointManagerOptions(
      read_only=True, create=False, multiprocessing_options=_this_process_only()))


def latest_step(directory: str) -> int | None:
  """The newest saved step in `directory`, None when there is none."""
  if not os.path.isdir(directory):
    return None
  with quiet():
    mngr = reader(directory)
    try:
      return mngr.latest_step()
    finally:
      mngr.close()


def restore(directory: str, abstract_state: Any, step: int | None = None) -> Any:
  """The state saved at `step` (default: the newest) in the structure of `abstract_state`."""
  if not os.path.isdir(directory):
    raise VQDefenseError(f"no checkpoint at {directory}; run train.py with this config and workdir first")
  with quiet():
    mngr = reader(directory)
    try:
      return restore_with(mngr, directory, abstract_state, mngr.latest_step() if step is None else step)
    finally:
      mngr.close()


def restore_with(mngr: ocp.CheckpointManager, directory: str, abstract_state: Any, step: int | None) -> Any:
  """The state at `step`, on this process's default device: whatever devices and processes wrote it (it is
  stored as numpy), the caller places it on its own mesh."""
  if step is None:
    raise VQDefenseError(f"no checkpoint at {directory}; run train.py with this config and workdir first")
  target = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), abstract_state)
  try:  # callers (restore, training.fit) hold `quiet()`
    with _late_reads_dropped():
      host = mngr.restore(step, args=ocp.args.StandardRestore(target))
  except Exception as e:  # orbax raises many types for unreadable or mismatched files.
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise VQDefenseError(f"checkpoint {directory} (step {step}) is corrupt or does not match the config: "
                         f"{first[:300]}; delete it to retrain") from e
  return jax.tree.map(jnp.asarray, host)


class _LateReadsLoop(asyncio.SelectorEventLoop):
  """The event loop orbax runs a restore on. When one read fails, orbax ends the restore and closes its loop while
  tensorstore's threads still finish the reads started alongside it; each then hands its result to the closed loop,
  and tensorstore prints the 'Event loop is closed' traceback that raises: tracebacks after the run's one error
  line. Nothing waits for those results, so here they are dropped instead."""

  def call_soon_threadsafe(self, callback, *args, context=None):
    if self.is_closed():
      return None
    return super().call_soon_threadsafe(callback, *args, context=context)


class _LateReadsPolicy(asyncio.DefaultEventLoopPolicy):
  def new_event_loop(self):
    return _LateReadsLoop()


@contextlib.contextmanager
def _late_reads_dropped() -> Iterator[None]:
  """Event loops made meanwhile (orbax makes one per restore) drop the results of reads that end after them."""
  previous = asyncio.get_event_loop_policy()
  asyncio.set_event_loop_policy(_LateReadsPolicy())
  try:
    yield
  finally:
    asyncio.set_event_loop_policy(previous)


def save(mngr: ocp.CheckpointManager, step: int, state: Any) -> None:
  """Write `state` as numpy arrays (its full value, gathered from every process), so that it restores on any
  mesh and any number of processes. Every process calls it; on several, process 0 writes and every process
  returns once the checkpoint is complete (a coordination-service barrier, not a device collective)."""
  host = parallel.to_host(state)
  if parallel.is_lead():
    mngr.save(step, args=ocp.args.StandardSave(host))
  parallel.barrier("checkpoint saved")


# --- records ----------------------------------------------------------------------------------------------

def normalized(record: dict[str, Any]) -> dict[str, Any]:
  """The record as JSON will give it back (tuples become lists), so stored and asked-for records compare."""
  return json.loads(json.dumps(record))


def read_record(directory: str) -> dict[str, Any] | None:
  path = os.path.join(directory, RECORD)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise VQDefenseError(f"{path} is unreadable ({type(e).__name__}); {RETRAIN_HINT}") from e


def differences(directory: str, record: dict[str, Any]) -> list[str] | None:
  """How the record of the checkpoints in `directory` differs from `record`: one 'field: old -> new' per
  differing field ([] when equal). None when `directory` holds no checkpoint (nothing to differ from)."""
  return None if latest_step(directory) is None else record_diff(directory, record)


def record_diff(directory: str, record: dict[str, Any]) -> list[str]:
  """`differences` for a directory known to hold checkpoints."""
  stored = read_record(directory)
  if stored is None:
    return [f"{RECORD} missing (made by a version before checkpoints carried their config)"]
  old, new = _flatten(stored), _flatten(normalized(record))
  return [f"{k}: {old.get(k, '(absent)')} -> {new.get(k, '(absent)')}"
          for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)]


def check(directory: str, record: dict[str, Any]) -> None:
  """A `VQDefenseError` naming the differing fields unless `directory`'s checkpoints were made from `record`."""
  diff = differences(directory, record)
  if diff:
    raise mismatch(directory, diff)


def delete_stale(directories: list[str]) -> None:
  """Delete checkpoint directories that another config made (`--retrain`; core/workdir.py found them), so that
  they are trained again."""
  for directory in directories:
    log.warning("--retrain: deleting %s, made by another config", directory)
    shutil.rmtree(directory)


def restore_finished(directory: str, record: dict[str, Any], abstract_state: Any, num_steps: int, name: str) -> Any:
  """The state of a finished run, whose checkpoints must have been made from `record` and reached `num_steps`."""
  check(directory, record)
  state = restore(directory, abstract_state)
  step = int(np.asarray(state.step).reshape(-1)[0])
  if step > num_steps:
    raise VQDefenseError(f"{name}: checkpoint is at step {step}, beyond the configured {num_steps}; {RETRAIN_HINT}")
  if step != num_steps:
    raise VQDefenseError(f"{name}: checkpoint is at step {step} of {num_steps}; re-run train.py with the same "
                         "config and workdir to finish training")
  return state


def mismatch(directory: str, diff: list[str]) -> VQDefenseError:
  shown = "; ".join(diff[:5]) + (f"; and {len(diff) - 5} more" if len(diff) > 5 else "")
  return VQDefenseError(f"the checkpoints in {directory} were made by another config ({shown}); {RETRAIN_HINT}")


def write_record(directory: str, record: dict[str, Any]) -> None:
  os.makedirs(directory, exist_ok=True)
  files.write_json_atomic(os.path.join(directory, RECORD), normalized(record))


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[prefix + k] = v
  return out
