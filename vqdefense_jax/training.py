"""One generic training loop for every model: optax, orbax checkpoints, exact resume.

A model contributes a `Task`: its loss (params, state, x, y, rng, extra) ->
(loss, (new_state, metrics)), where `state` is non-gradient state such as the
VQ-VAE's EMA codebook and `extra` holds constant inputs of every step (the
frozen classifier that adversarial VQ-VAE training attacks), and its
optimiser. Batches and dropout keys are pure functions of (seed, step), so a
run restored from a checkpoint continues bit-identically with an
uninterrupted one.

The same loop trains a *sweep*: several runs of one task that differ only in
their initial state (the codebook sizes of one VQ-VAE kind), stacked along a
leading model axis and advanced together by one compiled step (`Sweep`,
`sweep_step`).
"""

import dataclasses
import functools
import json
import logging
import os
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from tqdm.auto import tqdm

from vqdefense_jax import parallel
from vqdefense_jax.errors import VQDefenseError

log = logging.getLogger(__name__)
LossFn = Callable[..., tuple[jnp.ndarray, tuple[Any, dict[str, jnp.ndarray]]]]


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
  """Hashable optimiser description, so one compiled step serves every run of a kind."""
  name: str = "adam"             # 'adam' or 'adadelta'
  learning_rate: float = 2e-4
  decay_per_epoch: float = 1.0   # lr × this after every epoch (1.0: constant)
  steps_per_epoch: int = 1

  def schedule(self) -> optax.Schedule:
    return optax.exponential_decay(self.learning_rate, self.steps_per_epoch, self.decay_per_epoch, staircase=True)

  def build(self) -> optax.GradientTransformation:
    lr = self.schedule()
    if self.name == "adam":
      return optax.adam(lr)
    if self.name == "adadelta":
      return optax.adadelta(lr, rho=0.9, eps=1e-6)  # PyTorch's defaults, as in the paper's classifier
    raise VQDefenseError(f"unknown optimizer {self.name!r}; expected 'adam' or 'adadelta'")


@dataclasses.dataclass(frozen=True)
class Task:
  """What the loop needs from a model. Hashable: it is a static argument of the jitted step."""
  loss: LossFn
  optimizer: OptimizerSpec
  batch_size: int
  num_steps: int
  seed: int


def init_train_state(task: Task, params: Any, state: Any) -> dict[str, Any]:
  return dict(step=jnp.zeros((), jnp.int32), params=params, opt_state=task.optimizer.build().init(params),
              state=state)


def initial_state(task: Task, init_fn: Callable[[], tuple[Any, Any]] | Sequence[Callable[[], tuple[Any, Any]]]):
  """The train state of one run, or of a sweep (a sequence of init functions) stacked on a leading model axis.

  A sweep stacks whole train states, not params: the optimiser's step count
  must get the model axis too.
  """
  if callable(init_fn):
    return init_train_state(task, *init_fn())
  return parallel.stack([init_train_state(task, *f()) for f in init_fn])


def _step(task: Task, ts: dict[str, Any], images: jnp.ndarray, labels: jnp.ndarray, idx_B: jnp.ndarray,
          extra: Any = None):
  rng = jax.random.fold_in(jax.random.key(task.seed), ts["step"])
  grad_fn = jax.value_and_grad(task.loss, has_aux=True)
  (loss, (state, metrics)), grads = grad_fn(ts["params"], ts["state"], images[idx_B], labels[idx_B], rng, extra)
  updates, opt_state = task.optimizer.build().update(grads, ts["opt_state"], ts["params"])
  new = dict(step=ts["step"] + 1, params=optax.apply_updates(ts["params"], updates), opt_state=opt_state,
             state=state)
  return new, dict(loss=loss, **metrics)


train_step = jax.jit(_step, static_argnums=0)


@functools.lru_cache(maxsize=None)
def sweep_step(task: Task, model_axis: str, mesh: Mesh):
  """The compiled step of a stack of runs (leading model axis), all on the same batch.

  The runs differ only in their state (e.g. codebook size), so each run gets
  exactly the update a single run would. The stack is split over the mesh's
  'model' axis; in- and out-shardings are fixed so the state's placement never
  changes between steps (a changed placement would compile the step again).
  """
  def local(ts_M, images, labels, idx_B, extra):
    return parallel.over_models(lambda ts: _step(task, ts, images, labels, idx_B, extra), model_axis)(ts_M)

  step = jax.shard_map(local, mesh=mesh, in_specs=(P("model"), P(), P(), P(), P()), out_specs=P("model"),
                       check_vma=False)
  models, replicated = NamedSharding(mesh, P("model")), NamedSharding(mesh, P())
  return jax.jit(step, in_shardings=(models, replicated, replicated, replicated, replicated),
                 out_shardings=models)


def batch_indices(seed: int, num_examples: int, batch_size: int, step: int) -> np.ndarray:
  """Indices of batch `step`: a fresh permutation per epoch, a pure function of (seed, step)."""
  per_epoch = num_examples // batch_size
  if per_epoch < 1:
    raise VQDefenseError(f"batch size {batch_size} is larger than the {num_examples} training examples")
  epoch, i = divmod(step, per_epoch)
  return _epoch_permutation(seed, num_examples, epoch)[i * batch_size:(i + 1) * batch_size]


@functools.lru_cache(maxsize=2)
def _epoch_permutation(seed: int, num_examples: int, epoch: int) -> np.ndarray:
  """Drawn once per epoch, not once per step."""
  perm = np.random.default_rng([seed, epoch]).permutation(num_examples)
  perm.flags.writeable = False  # shared by every step of the epoch
  return perm


def checkpoint_manager(directory: str, max_to_keep: int = 2) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(os.path.abspath(directory),
                               options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))


def restore(directory: str, abstract_ts: Any, step: int | None = None) -> dict[str, Any]:
  """Restore a train state; a missing, corrupt or mismatched checkpoint is a VQDefenseError."""
  if not os.path.isdir(directory):
    raise VQDefenseError(f"no checkpoint at {directory}; run train.py with this config and workdir first")
  mngr = checkpoint_manager(directory)
  try:
    return _restore(mngr, directory, abstract_ts, mngr.latest_step() if step is None else step)
  finally:
    mngr.close()


def _restore(mngr: ocp.CheckpointManager, directory: str, abstract_ts: Any, step: int | None) -> dict[str, Any]:
  if step is None:
    raise VQDefenseError(f"no checkpoint at {directory}; run train.py with this config and workdir first")
  try:
    return mngr.restore(step, args=ocp.args.StandardRestore(abstract_ts))
  except Exception as e:  # orbax raises many types for unreadable or mismatched files.
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise VQDefenseError(f"checkpoint {directory} (step {step}) is corrupt or does not match the config: "
                         f"{first[:300]}; delete it to retrain") from e


@dataclasses.dataclass(frozen=True)
class Sweep:
  """Train several runs of one task as a stack: one compiled step advances them all.

  `names` label each run in the metrics; `model_axis` is 'map' or 'vmap'
  (parallel.over_models); the stack is split over `mesh`'s 'model' axis.
  """
  names: tuple[str, ...]
  model_axis: str = "vmap"
  mesh: Mesh | None = None

  def resolved_mesh(self) -> Mesh:
    return self.mesh if self.mesh is not None else parallel.model_mesh(len(self.names))


def train(task: Task, init_fn: Callable[[], tuple[Any, Any]] | Sequence[Callable[[], tuple[Any, Any]]],
          images: jax.Array | np.ndarray, labels: jax.Array | np.ndarray, *,
          ckpt_dir: str, name: str, metrics_file: str | None = None, checkpoint_every: int = 500,
          log_every: int = 50, stop_at: int | None = None, sweep: Sweep | None = None,
          extra: Any = None) -> dict[str, Any]:
  """Train `task` from `init_fn()` (or from the newest checkpoint in ckpt_dir) for task.num_steps steps.

  With `sweep`, `init_fn` is one init function per run and the runs train as a
  stack (leading model axis in every leaf of the returned state), each exactly
  as it would alone: same initial state, same batches, same updates.
  `extra` is passed unchanged to every step's loss (e.g. a frozen classifier).
  `stop_at` ends the run early as an interruption would (used by the resume test).
  Returns the final train state.
  """
  init_state = lambda: initial_state(task, init_fn)
  if sweep is None:
    place = lambda ts: ts
    step_fn = functools.partial(train_step, task)
  else:
    if len(init_fn) != len(sweep.names):
      raise VQDefenseError(f"{name}: {len(init_fn)} init functions for {len(sweep.names)} runs")
    mesh = sweep.resolved_mesh()
    place = lambda ts: parallel.shard_models(ts, mesh)
    step_fn = sweep_step(task, sweep.model_axis, mesh)
  mngr = checkpoint_manager(ckpt_dir)
  out = None
  try:
    latest = mngr.latest_step()
    if latest is not None and latest > task.num_steps:
      raise VQDefenseError(f"{ckpt_dir} holds step {latest}, beyond the configured {task.num_steps} steps; "
                           "use a fresh workdir")
    if latest is None:
      ts = place(init_state())
    else:
      abstract = jax.eval_shape(init_state)
      if sweep is not None:
        sharding = NamedSharding(mesh, P("model"))
        abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), abstract)
      ts = _restore(mngr, ckpt_dir, abstract, latest)
      if latest < task.num_steps:
        log.warning("%s: resuming from checkpoint step %d of %d", name, latest, task.num_steps)
    start = int(np.asarray(ts["step"]).reshape(-1)[0])
    end = task.num_steps if stop_at is None else min(stop_at, task.num_steps)
    images_d, labels_d = jnp.asarray(images), jnp.asarray(labels)
    if sweep is not None:  # on every device of the mesh once, not copied there every step
      images_d, labels_d, extra = parallel.replicate((images_d, labels_d, extra), mesh)
    out = open(metrics_file, "a") if metrics_file else None
    bar = tqdm(range(start, end), initial=start, total=task.num_steps, desc=name, unit="step",
               disable=start >= end, dynamic_ncols=True)
    for step in bar:
      idx = batch_indices(task.seed, len(images), task.batch_size, step)
      ts, metrics = step_fn(ts, images_d, labels_d, jnp.asarray(idx), extra)
      done = step + 1
      if done % log_every == 0 or done == task.num_steps:
        rows = _metric_rows(jax.device_get(metrics), [name] if sweep is None else list(sweep.names))
        bar.set_postfix(loss=" ".join(f"{row['loss']:.4f}" for _, row in rows))
        if out:
          for model, row in rows:
            out.write(json.dumps({"model": model, "step": done, **row}) + "\n")
          out.flush()
      if done % checkpoint_every == 0 or done == task.num_steps:
        mngr.save(done, args=ocp.args.StandardSave(ts))
    mngr.wait_until_finished()
  finally:
    mngr.close()
    if out:
      out.close()
  return ts


def _metric_rows(metrics: dict[str, np.ndarray], names: list[str]) -> list[tuple[str, dict[str, float]]]:
  """One {metric: value} row per run; a stack's metrics carry a leading model axis."""
  if len(names) == 1 and all(np.ndim(v) == 0 for v in metrics.values()):
    return [(names[0], {k: float(v) for k, v in metrics.items()})]
  return [(n, {k: float(v[i]) for k, v in metrics.items()}) for i, n in enumerate(names)]
