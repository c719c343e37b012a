"""The experiment skeleton every system's `experiment.py` is built from: plain functions, in big_vision's manner.

  CODE_VERSION       one version for every checkpoint record of every system
  common_record      what every checkpoint of a run was made from besides its own section: code, seed, data
  check_schedule     a section's batch size and step count in range (one message for every section)
  image_shape        (H, W, C) of a dataset's images
  fit                `training.fit` into <workdir>/checkpoints/<name> with the `train` section's settings
  load_or_train      finished checkpoints, else (when allowed) train them first

The workdir's checks and writes (one system per workdir, nothing written before every check) are
core/workdir.py's; the one training loop is core/training.py's.
"""

import os
from typing import Any, Callable, TypeVar

import numpy as np

from vqdefense_jax.core import data as data_lib
from vqdefense_jax.core import training
from vqdefense_jax.core.config import require
from vqdefense_jax.core.errors import VQDefenseError

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


def image_shape(ds: data_lib.Dataset) -> tuple[int, int, int]:
  return tuple(int(s) for s in np.shape(ds.train_images)[1:])


def fit(step, init: Callable[[], Any], batches, *, num_steps: int, workdir: str, name: str, record: dict[str, Any],
        consts: tuple, metrics, loop: training.LoopSpec, stop_at: int | None) -> Any:
  """One model's training run into <workdir>/checkpoints/<name> (training.fit: resume, records, metrics)."""
  return training.fit(step, init, batches, num_steps=num_steps, ckpt_dir=os.path.join(workdir, "checkpoints", name),
                      name=name, consts=consts, metrics=metrics, checkpoint_every=loop.checkpoint_every,
                      log_every=loop.log_every, stop_at=stop_at, record=record)


def load_or_train(load: Callable[[], T], train: Callable[[], T], train_missing: bool) -> T:
  """`load()` (finished checkpoints made from this config); where they are missing, unfinished or made by another
  config, `train()` when `train_missing` (which raises a mismatch itself unless told to retrain), else the error."""
  try:
    return load()
  except VQDefenseError:
    if not train_missing:
      raise
    return train()
