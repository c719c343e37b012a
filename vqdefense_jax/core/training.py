"""One training loop for every model: `fit` owns resume, checkpoint cadence, logging and the progress bar.

The caller brings the rest:
  state    any pytree with a `step` field (e.g. a `flax.struct.dataclass`); it may hold several models
           with their own optimisers (a generator and a discriminator updated in turn);
  step     `step(state, batch, *consts) -> (state, metrics)`, a pure function; hashable (a frozen
           dataclass), so equal steps share one compiled function;
  batches  `batches(step) -> batch` on the host, a pure function of (seed, step) (`IndexBatches`, and
           `HostTransform` for augmentations that must run on the host, such as a real JPEG codec);
  consts   arguments every step receives unchanged (the training set on the device, a frozen model).
Because batches and every PRNG key derive from (seed, step), a run restored from a checkpoint continues
bit-identically with an uninterrupted one.

A *sweep* trains several runs of one step that differ only in their initial state (e.g. the codebook sizes
of one VQ-VAE kind): `Sweep` wraps any step in `parallel.over_models` (map or vmap) over a leading model
axis, split over the mesh's 'model' axis, so one compiled step advances them all.

*Data-parallel* training (`data_parallel`, a mesh from `parallel.data_mesh`) splits every batch over the mesh's
'batch' axis and replicates the state and consts: one global step, jitted with those shardings, so XLA sums each
device's share of the gradient over every device of every process. It is the same computation as one device's
(the loss is still the mean over the whole batch, and threefry keys are partitionable, so a random draw does not
depend on how it is split): only the order of float sums differs, and on one device it is the same program.

`SupervisedStep` is the step of a model with one loss and one optimiser (the classifier, every VQ-VAE).
"""

import dataclasses
import functools
import logging
import zlib
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from tqdm.auto import tqdm

from vqdefense_jax.core import checkpoints
from vqdefense_jax.core import parallel
from vqdefense_jax.core.config import require
from vqdefense_jax.core.errors import VQDefenseError
from vqdefense_jax.core.metrics import MetricsLog, per_model

log = logging.getLogger(__name__)
StepFn = Callable[..., tuple[Any, dict[str, jax.Array]]]
LossFn = Callable[..., tuple[jax.Array, tuple[Any, dict[str, jax.Array]]]]
OPTIMIZERS = ("adam", "adadelta")
MAX_STEPS = 10 ** 9      # the step counter is int32
MAX_BATCH = 2 ** 16


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
    raise VQDefenseError(f"unknown optimizer {self.name!r}; expected one of {', '.join(OPTIMIZERS)}")


@dataclasses.dataclass(frozen=True)
class Schedule:
  """A config section's optimiser and length: optimizer, learning_rate, lr_decay_per_epoch, batch_size, epochs,
  steps (> 0 overrides epochs). Checked here, where it is used."""
  optimizer: str
  learning_rate: float
  lr_decay_per_epoch: float
  batch_size: int
  epochs: int
  steps: int

  @classmethod
  def from_config(cls, section, name: str) -> "Schedule":
    s = cls(section.optimizer, section.learning_rate, section.lr_decay_per_epoch, section.batch_size,
            section.epochs, section.steps)
    require(s.optimizer in OPTIMIZERS, f"{name}.optimizer must be one of {', '.join(OPTIMIZERS)}, not {s.optimizer!r}")
    require(s.learning_rate > 0, f"{name}.learning_rate must be > 0, got {s.learning_rate}")
    require(0 < s.lr_decay_per_epoch <= 1, f"{name}.lr_decay_per_epoch must be in (0, 1], got {s.lr_decay_per_epoch}")
    require(1 <= s.batch_size <= MAX_BATCH, f"{name}.batch_size must be in 1..{MAX_BATCH}, got {s.batch_size}")
    require(0 <= s.epochs <= MAX_STEPS and 0 <= s.steps <= MAX_STEPS and (s.epochs or s.steps),
            f"{name}: epochs or steps must be > 0 (and at most {MAX_STEPS:,}), got epochs={s.epochs}, steps={s.steps}")
    return s

  def num_steps(self, num_examples: int) -> int:
    n = self.steps or self.epochs * steps_per_epoch(num_examples, self.batch_size)
    require(n <= MAX_STEPS, f"{self.epochs} epochs of {num_examples} examples are {n:,} steps, more than {MAX_STEPS:,}")
    return n

  def optimizer_spec(self, num_examples: int) -> OptimizerSpec:
    return OptimizerSpec(self.optimizer, self.learning_rate, self.lr_decay_per_epoch,
                         steps_per_epoch(num_examples, self.batch_size))


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  """Full batches per epoch (the last partial batch of an epoch is dropped)."""
  per_epoch = num_examples // batch_size
  if per_epoch < 1:
    raise VQDefenseError(f"batch size {batch_size} is larger than the {num_examples} training examples")
  return per_epoch


@flax.struct.dataclass
class TrainState:
  """One model with one optimiser; `state` is non-gradient model state (e.g. an EMA codebook)."""
  step: jax.Array
  params: Any
  opt_state: Any
  state: Any


@dataclasses.dataclass(frozen=True)
class SupervisedStep:
  """One loss, one optimiser: the train step of the classifier and of every VQ-VAE.

  `loss(params, state, x, y, rng, extra) -> (loss, (new_state, metrics))`; the batch is the indices of
  its examples in `images`/`labels` (on the device once for the whole run); `extra` is a constant input
  (the frozen classifier an adversarial VQ-VAE attacks). The dropout key is fold_in(key(seed), step).
  """
  loss: LossFn
  optimizer: OptimizerSpec
  seed: int

  def init(self, params: Any, state: Any) -> TrainState:
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=self.optimizer.build().init(params),
                      state=state)

  def __call__(self, ts: TrainState, idx_B, images, labels, extra=None) -> tuple[TrainState, dict[str, jax.Array]]:
    rng = jax.random.fold_in(jax.random.key(self.seed), ts.step)
    grad_fn = jax.value_and_grad(self.loss, has_aux=True)
    (loss, (state, metrics)), grads = grad_fn(ts.params, ts.state, images[idx_B], labels[idx_B], rng, extra)
    updates, opt_state = self.optimizer.build().update(grads, ts.opt_state, ts.params)
    new = TrainState(step=ts.step + 1, params=optax.apply_updates(ts.params, updates), opt_state=opt_state,
                     state=state)
    return new, dict(loss=loss, **metrics)


def stable_seed(seed: int, name: str) -> int:
  """The seed of one named run (or draw) of an experiment: the same name always gets the same seed."""
  return int(np.uint32(seed) ^ np.uint32(zlib.crc32(name.encode())))


@dataclasses.dataclass(frozen=True)
class IndexBatches:
  """Batch `step` is the indices of `batch_size` examples: a fresh permutation per epoch, from (seed, step)."""
  seed: int
  num_examples: int
  batch_size: int

  def __post_init__(self):
    steps_per_epoch(self.num_examples, self.batch_size)

  def __call__(self, step: int) -> np.ndarray:
    epoch, i = divmod(step, steps_per_epoch(self.num_examples, self.batch_size))
    return _epoch_permutation(self.seed, self.num_examples, epoch)[i * self.batch_size:(i + 1) * self.batch_size]


@functools.lru_cache(maxsize=2)
def _epoch_permutation(seed: int, num_examples: int, epoch: int) -> np.ndarray:
  """Drawn once per epoch, not once per step."""
  perm = np.random.default_rng([seed, epoch]).permutation(num_examples)
  perm.flags.writeable = False  # shared by every step of the epoch
  return perm


@dataclasses.dataclass(frozen=True)
class HostTransform:
  """`transform(batches(step), rng)` on the host, with rng = numpy Generator([seed, step]): still a pure
  function of (seed, step). For augmentations that must run outside JAX (a real JPEG codec)."""
  batches: Callable[[int], Any]
  transform: Callable[[Any, np.random.Generator], Any]
  seed: int

  def __call__(self, step: int) -> Any:
    return self.transform(self.batches(step), np.random.default_rng([self.seed, step]))


def _apply(step: StepFn, state, batch, *consts):
  return step(state, batch, *consts)


compiled_step = jax.jit(_apply, static_argnums=0)  # keyed by the (hashable) step: equal steps compile once


@dataclasses.dataclass(frozen=True)
class Sweep:
  """Train a stack of runs (leading model axis in every leaf of the state) with one compiled step.

  `names` label each run in the metrics; `model_axis` is 'map' or 'vmap' (parallel.over_models); the
  stack is split over `mesh`'s 'model' axis (default: the most devices that divide the number of runs).
  """
  names: tuple[str, ...]
  model_axis: str = "vmap"
  mesh: Mesh | None = None

  def resolved_mesh(self) -> Mesh:
    return self.mesh if self.mesh is not None else parallel.model_mesh(len(self.names))


@functools.lru_cache(maxsize=None)
def sweep_step(step: StepFn, model_axis: str, mesh: Mesh, num_consts: int):
  """`step` over a stack of states, all on the same batch and consts.

  The runs differ only in their state, so each gets exactly the update it would get alone. In- and
  out-shardings are fixed, so the state's placement never changes between steps (a changed placement
  would compile the step again).
  """
  def local(state_M, batch, *consts):
    return parallel.over_models(lambda state: step(state, batch, *consts), model_axis)(state_M)

  replicated = (P(),) * (1 + num_consts)
  mapped = jax.shard_map(local, mesh=mesh, in_specs=(P("model"),) + replicated, out_specs=P("model"),
                         check_vma=False)
  models, whole = NamedSharding(mesh, P("model")), NamedSharding(mesh, P())
  return jax.jit(mapped, in_shardings=(models,) + (whole,) * (1 + num_consts), out_shardings=models)


@functools.lru_cache(maxsize=None)
def data_step(step: StepFn, mesh: Mesh, num_consts: int):
  """`step` on a batch split over `mesh`'s 'batch' axis (its leading axis), the state and consts replicated.

  The shardings are fixed, so the state stays replicated between steps; XLA's partitioner inserts the
  all-reduces that make every replica's update the whole batch's.
  """
  whole, split = NamedSharding(mesh, P()), NamedSharding(mesh, P("batch"))
  return jax.jit(functools.partial(_apply, step), in_shardings=(whole, split) + (whole,) * num_consts,
                 out_shardings=whole)


def fit(step: StepFn, init: Callable[[], Any], batches: Callable[[int], Any], *, num_steps: int, ckpt_dir: str,
        name: str, consts: tuple = (), metrics: MetricsLog | None = None, checkpoint_every: int = 500,
        log_every: int = 50, stop_at: int | None = None, sweep: Sweep | None = None,
        data_parallel: Mesh | None = None, record: dict[str, Any] | None = None) -> Any:
  """Train from `init()` (or from the newest checkpoint in `ckpt_dir`) until `num_steps`; returns the state.

  With `sweep`, `init()` returns the stacked states of the runs. With `data_parallel` (`parallel.data_mesh`),
  every batch is split over the mesh's 'batch' axis (its size must divide the batch's leading axis) and the
  state returned is one replica of it, on this process's first device of the mesh. `stop_at` ends the run
  early, as an interruption would (the resume tests use it). `record` describes what the checkpoints hold: it is
  written with the first one, and resuming from checkpoints with another record is an error.
  A non-finite loss or state stops training with an error before it is logged or saved, so the last
  checkpoint stays the last good one. Metrics rows a killed run logged after its last checkpoint are
  dropped on resume, so `metrics.jsonl` holds each step once.
  """
  batch_of = batches
  if sweep is not None and data_parallel is not None:
    raise ValueError("a sweep's batch is whole on every device: it takes no data_parallel mesh")
  if data_parallel is not None:
    mesh, names = data_parallel, [name]
    place, run_step = (lambda s: parallel.replicate(s, mesh)), data_step(step, mesh, len(consts))
    consts = parallel.replicate(consts, mesh)
    split = NamedSharding(mesh, P("batch"))
    batch_of = lambda i: parallel.put(batches(i), split)  # each process puts only its devices' shares
  elif sweep is None:
    place, run_step = (lambda s: s), functools.partial(compiled_step, step)
    names, mesh = [name], None
  else:
    mesh = sweep.resolved_mesh()
    place, run_step = (lambda s: parallel.shard_models(s, mesh)), sweep_step(step, sweep.model_axis, mesh, len(consts))
    consts = parallel.replicate(consts, mesh)  # on every device of the mesh once, not copied there every step
    names = list(sweep.names)
  with checkpoints.quiet():  # orbax's failures surface as exceptions (reported once); its log lines are noise
    mngr = checkpoints.manager(ckpt_dir)
    try:
      state = _start(mngr, ckpt_dir, init, place, num_steps, name, record)
      start = int(parallel.to_host(state.step).reshape(-1)[0])
      if metrics is not None:
        metrics.rewrite(lambda row: not (row.get("model") in names and row.get("step", -1) > start))
      end = num_steps if stop_at is None else min(stop_at, num_steps)
      bar = tqdm(range(start, end), initial=start, total=num_steps, desc=name, unit="step",
                 disable=start >= end or not parallel.is_lead(), dynamic_ncols=True)
      losses = []  # since the last check, still on the device (fetched together, not once per step)
      for i in bar:
        state, step_metrics = run_step(state, batch_of(i), *consts)
        losses.append(step_metrics["loss"])
        done = i + 1
        save_now = done % checkpoint_every == 0 or done == num_steps
        if save_now or done % log_every == 0:
          _check_finite(losses, done, names, mngr, state if save_now else None)
          losses = []
        if done % log_every == 0 or done == num_steps:
          rows = per_model(parallel.to_host(step_metrics), names)
          bar.set_postfix(loss=" ".join(f"{row['loss']:.4f}" for _, row in rows))
          if metrics is not None:
            metrics.write([{"model": model, "step": done, **row} for model, row in rows])
        if save_now:
          checkpoints.save(mngr, done, state)
      mngr.wait_until_finished()
    finally:
      mngr.close()
  # One replica: what this process's own computations (sampling, evaluation) can take as an argument.
  return parallel.one_replica(state) if data_parallel is not None else state


@jax.jit
def _all_finite(tree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _check_finite(losses: list, done: int, names: list[str], mngr, state=None) -> None:
  """Stop on the first non-finite loss of the last `len(losses)` steps (or a non-finite `state`)."""
  loss_SM = np.asarray(parallel.to_host(losses), np.float64).reshape(len(losses), -1)
  bad = ~np.isfinite(loss_SM)
  if bad.any():
    row = int(np.argmax(bad.any(axis=1)))
    which, at = [n for n, b in zip(names, bad[row]) if b], f"the loss is {loss_SM[row][bad[row]][0]}"
    step = done - len(losses) + row + 1
  elif state is not None and not bool(_all_finite(state)):
    which, at, step = names, "the model state is not finite", done
  else:
    return
  mngr.wait_until_finished()
  last = checkpoints.latest_step(str(mngr.directory))  # from disk: on several processes, process 0 wrote them
  kept = "before its first checkpoint" if last is None else f"and the last good checkpoint (step {last}) is kept"
  raise VQDefenseError(f"{', '.join(which)}: training diverged: {at} at step {step}; stopped {kept}; lower the "
                       "learning rate or check the data")


def _start(mngr, ckpt_dir: str, init, place, num_steps: int, name: str,
           record: dict[str, Any] | None):
  """The initial state, or the newest checkpoint's (placed like the initial state would be)."""
  latest = mngr.latest_step()
  parallel.barrier(f"start {ckpt_dir}")  # every process has looked before the first one writes
  if record is not None:
    if latest is None:
      if parallel.is_lead():  # on several processes, one writes the files
        checkpoints.write_record(ckpt_dir, record)
    elif diff := checkpoints.record_diff(ckpt_dir, record):
      raise checkpoints.mismatch(ckpt_dir, diff)
  if latest is None:
    return place(init())
  if latest > num_steps:
    raise VQDefenseError(f"{ckpt_dir} holds step {latest}, beyond the configured {num_steps} steps; "
                         "use a fresh workdir")
  state = place(checkpoints.restore_with(mngr, ckpt_dir, jax.eval_shape(init), latest))
  if latest < num_steps:
    log.warning("%s: resuming from checkpoint step %d of %d", name, latest, num_steps)
  return state


@flax.struct.dataclass
class GANState:
  """The state of an alternating GAN step (detect/dcgan.py, restore/gan.py): `step` (what `fit` counts), both
  networks (`params.generator`, `params.discriminator`), and each one's own optimizer state."""
  step: jax.Array
  params: Any
  opt_d: Any  # D's optimizer: update (a)
  opt_g: Any  # G's optimizer: update (b)

  @classmethod
  def create(cls, params: Any, optimizer: optax.GradientTransformation) -> "GANState":
    return cls(step=jnp.zeros((), jnp.int32), params=params, opt_d=optimizer.init(params.discriminator),
               opt_g=optimizer.init(params.generator))


def apply_optimizer(optimizer: optax.GradientTransformation, grads: Any, opt_state: Any, params: Any):
  """(new params, new optimizer state) after one update of `params` by `grads`."""
  updates, opt_state = optimizer.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


@dataclasses.dataclass(frozen=True)
class LoopSpec:
  """The `train` config section, checked: what `fit` does besides stepping."""
  checkpoint_every: int = 500
  log_every: int = 50
  sweep: bool = True

  @classmethod
  def from_config(cls, section) -> "LoopSpec":
    spec = cls(section.checkpoint_every, section.log_every, section.sweep)
    if spec.checkpoint_every < 1 or spec.log_every < 1:
      raise VQDefenseError("train.checkpoint_every and train.log_every must be >= 1")
    return spec
