"""The experiment skeleton every system's `experiment.py` is built from: plain functions, in big_vision's manner.

  CODE_VERSION       one version for every checkpoint record of every system
  common_record      what every checkpoint of a run was made from besides its own section: code, seed, data
  check_schedule     a section's batch size and step count in range (one message for every section)
  check_batch        a batch no larger than what it draws from, known once the data is loaded
  Run                one model's (or one sweep's) training run: name, record, init, step, steps, batches
  classifier_run     the classifier's run, the same in every system
  checked            {checkpoint directory: (record, steps)} of runs, what core/workdir.py checks
  prepare            the workdir's checks for every run (and a nested experiment's), then config.json, metrics
  fit_run            a run trained (or resumed, or imported) into <workdir>/checkpoints/<name>, data-parallel
                     over every device when the run says so (`data_mesh`)
  load               a finished run's state, made from its record
  unfinished         the runs whose checkpoints are absent, unfinished or made by another config
  load_or_train      finished checkpoints, else (when allowed) train them first

A system supplies its runs (one `runs(exp, ds)` serves both its `train_all` and its `load_trained`, so what is
trained is what is loaded), its evaluation and its rendering. Every check of a run (its record, its steps, its
batches) runs when its runs are built, before `prepare` deletes or writes anything.
"""

import dataclasses
import logging
import os
from typing import Any, Callable, TypeVar

import jax
import numpy as np
from jax.sharding import Mesh

from vqdefense_jax.core import checkpoints
from vqdefense_jax.core import classifier
from vqdefense_jax.core import data as data_lib
from vqdefense_jax.core import parallel
from vqdefense_jax.core import training
from vqdefense_jax.core import workdir as workdir_lib
from vqdefense_jax.core.config import require
from vqdefense_jax.core.errors import VQDefenseError
from vqdefense_jax.core.metrics import MetricsLog

log = logging.getLogger(__name__)
T = TypeVar("T")

# Bump when a code change alters what a checkpoint trained from the same config holds (the model's layers,
# its initialisation, the batch order, the loss): older checkpoints then no longer match their record.
CODE_VERSION = 1


def common_record(seed: int, data: data_lib.DataSpec, ds: data_lib.Dataset, dataset: bool = False) -> dict[str, Any]:
  """The fields every checkpoint record of a run starts with. `dataset` adds the dataset's name (restoration,
  which runs on other datasets too; the records of the other systems predate the field and keep their form)."""
  d = dict(dataset=data.dataset) if dataset else {}
  return dict(code_version=CODE_VERSION, seed=seed,
              data=dict(**d, image_size=data.image_size, train_examples=len(ds.train_images),
                        train_sha256=ds.train_sha256))


def check_schedule(section: str, batch_size: int, steps: int) -> None:
  """`<section>.batch_size` in 1..MAX_BATCH and `<section>.steps` in 1..MAX_STEPS, or one error naming both."""
  require(1 <= batch_size <= training.MAX_BATCH and 1 <= steps <= training.MAX_STEPS,
          f"{section}.batch_size must be in 1..{training.MAX_BATCH} and {section}.steps in 1..{training.MAX_STEPS}, "
          f"got {batch_size} and {steps}")


def check_batch(section: str, batch_size: int, examples: int, what: str = "training examples") -> None:
  """One error naming `<section>.batch_size` when a batch is larger than the examples it draws from. Known only
  once the data is loaded, so every system checks it as it builds its runs: before anything is trained, deleted
  or written, not when the run's turn to train comes."""
  require(batch_size <= examples, f"batch size {batch_size} is larger than the {examples} {what}: lower "
          f"{section}.batch_size")


def index_batches(section: str, seed: int, examples: int, batch_size: int) -> training.IndexBatches:
  """`training.IndexBatches` over `examples`, its batch size checked first (`check_batch`)."""
  check_batch(section, batch_size, examples)
  return training.IndexBatches(seed, examples, batch_size)


def image_shape(ds: data_lib.Dataset) -> tuple[int, int, int]:
  return tuple(int(s) for s in np.shape(ds.train_images)[1:])


@dataclasses.dataclass(frozen=True)
class Run:
  """One call of `training.fit`: a model (or a stack of them) with its step, init, batches and checkpoint."""
  name: str                                   # checkpoint directory and progress-bar label
  step: Any                                   # `step(state, batch, *consts) -> (state, metrics)`
  init: Callable[[], Any]                     # the initial state (stacked for a sweep)
  num_steps: int
  batch_size: int
  record: dict[str, Any]                      # what defines the model: stored with its checkpoints
  sweep: training.Sweep | None = None
  # Batch `step`. None while the batches depend on another model's output (a detector's fakes): the system
  # fills them in with dataclasses.replace before `fit_run`, once that model is trained.
  batches: Callable[[int], Any] | None = None
  needs: tuple[str, ...] = ()                 # the trained models it takes as a constant input, by name
  imported: Callable[[], Any] | None = None   # a state converted from elsewhere (saved as step 0), not trained
  # The config key of its batch size ('gan.batch_size') when its batches are split over every device
  # (`training.fit`'s data_parallel; a warning names the key when the devices do not divide it). None: the step
  # runs on the default device, or on the sweep's mesh.
  data_parallel: str | None = None

  def directory(self, workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), "checkpoints", self.name)

  @property
  def model_names(self) -> tuple[str, ...]:
    return (self.name,) if self.sweep is None else self.sweep.names


def schedule_record(s: training.Schedule) -> dict[str, Any]:
  """What a schedule's steps do, for a record. `epochs`/`steps` are left out: they say where training ends, so a
  longer schedule resumes from a finished checkpoint (bit-identically with training that long at once)."""
  return dict(optimizer=s.optimizer, learning_rate=s.learning_rate, lr_decay_per_epoch=s.lr_decay_per_epoch,
              batch_size=s.batch_size)


def classifier_section(schedule: training.Schedule, model: classifier.Classifier) -> dict[str, Any]:
  """The `classifier` field of a trained classifier's record, the same in every system: its schedule and its
  input convention."""
  return dict(schedule_record(schedule), input_mean=model.mean, input_std=model.std)


def classifier_run(schedule: training.Schedule, model: classifier.Classifier, seed: int, image_size: int,
                   n_train: int, record: dict[str, Any], data_parallel: bool = False) -> Run:
  """The classifier's run on `n_train` examples, seeded by (seed, 'classifier') in every system that trains one,
  so a classifier section trains the same model wherever it appears; `data_parallel`: its batches split over
  every device."""
  seed = training.stable_seed(seed, "classifier")
  batches = index_batches("classifier", seed, n_train, schedule.batch_size)  # before optimizer_spec divides by it
  step = training.SupervisedStep(classifier.ClassifierLoss(model), schedule.optimizer_spec(n_train), seed)
  init = lambda: step.init(classifier.init_params(seed, image_size, model), {})
  return Run("classifier", step, init, schedule.num_steps(n_train), schedule.batch_size, record, batches=batches,
             data_parallel="classifier.batch_size" if data_parallel else None)


def checked(runs: list[Run], workdir: str) -> dict[str, tuple[dict[str, Any], int]]:
  """{checkpoint directory: (record, steps)} of `runs`: what core/workdir.py checks."""
  return {r.directory(workdir): (r.record, r.num_steps) for r in runs}


def prepare(workdir: str, config: dict[str, Any], runs: list[Run], retrain: bool, lead: bool = True,
            nested: tuple[tuple[list[Run], str], ...] = ()) -> MetricsLog:
  """The workdir accepted for `runs` (core/workdir.py: every record and step count checked, and the `nested`
  experiments' (runs, workdir) too, before the stale checkpoints are deleted and config.json written); returns
  its metrics log."""
  return workdir_lib.accept(workdir, config, checked(runs, workdir), retrain, lead,
                            also=tuple(checked(r, w) for r, w in nested))


def fit_run(run: Run, workdir: str, consts: tuple, metrics: MetricsLog, loop: training.LoopSpec,
            stop_at: int | None) -> Any:
  """The run's state: trained (or resumed, or skipped when finished) with `training.fit` and the `train`
  section's settings, or, for an imported run, its checkpoint or its conversion."""
  if run.imported is not None:
    return _import(run, workdir)
  if run.batches is None:
    raise ValueError(f"{run.name}: its batches are not filled in")  # a programming error, not the user's
  return training.fit(run.step, run.init, run.batches, num_steps=run.num_steps, ckpt_dir=run.directory(workdir),
                      name=run.name, consts=consts, metrics=metrics, checkpoint_every=loop.checkpoint_every,
                      log_every=loop.log_every, stop_at=stop_at, sweep=run.sweep, data_parallel=data_mesh(run),
                      record=run.record)


def data_mesh(run: Run) -> Mesh | None:
  """The mesh a data-parallel run's batches are split over (None for the others). When the devices do not
  divide its batch size, the batch is split over the largest count that does (`parallel.data_mesh`): the
  config still runs, unchanged, and a warning names the key that would use every device."""
  if run.data_parallel is None:
    return None
  mesh, n = parallel.data_mesh(run.batch_size), jax.device_count()
  if (d := mesh.shape["batch"]) < n:
    log.warning("%s: batch size %d splits over %d of the %d devices; set %s to a multiple of %d to use them all",
                run.name, run.batch_size, d, n, run.data_parallel, n)
  return mesh


def _import(run: Run, workdir: str) -> Any:
  """An imported run's state: from its checkpoint (whose record `prepare` checked), or converted and saved as
  step 0 with its record."""
  directory = run.directory(workdir)
  if checkpoints.latest_step(directory) is not None:
    return checkpoints.restore(directory, jax.eval_shape(run.init))
  source = run.record.get("imported", {})
  log.info("%s: importing %s (sha256 %s)", run.name, source.get("file"), source.get("sha256"))
  state = run.imported()
  if jax.process_index() == 0:
    checkpoints.write_record(directory, run.record)
  with checkpoints.quiet():
    mngr = checkpoints.manager(directory)
    try:
      checkpoints.save(mngr, 0, state)
      mngr.wait_until_finished()
    finally:
      mngr.close()
  return state


def load(run: Run, workdir: str) -> Any:
  """A finished run's state from its checkpoint, which must have been made from the run's record."""
  return checkpoints.restore_finished(run.directory(workdir), run.record, jax.eval_shape(run.init), run.num_steps,
                                      run.name)


def unfinished(runs: list[Run], workdir: str) -> list[str]:
  """Names of the runs whose checkpoints are absent, unfinished or made by another config."""
  return [r.name for r in runs
          if checkpoints.latest_step(r.directory(workdir)) != r.num_steps  # else it holds checkpoints
          or checkpoints.record_diff(r.directory(workdir), r.record)]


def load_or_train(load: Callable[[], T], train: Callable[[], T], train_missing: bool) -> T:
  """`load()` (finished checkpoints made from this config); where they are missing, unfinished or made by another
  config, `train()` when `train_missing` (which raises a mismatch itself unless told to retrain), else the error."""
  try:
    return load()
  except VQDefenseError:
    if not train_missing:
      raise
    return train()
