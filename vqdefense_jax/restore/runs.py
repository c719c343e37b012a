"""What a restoration experiment trains: the classifier (eval.classifier) and one restorer per variant, as
core/experiment.py runs, with their records and the (mosaic, clean) pairs.

Every variant is trained from the same initialisation seed and batch order (`stable_seed(seed, 'restorer')`), so an
ablation changes only what its name says. A restorer's record leaves gan.steps out, so a longer schedule continues
it. Every run is data-parallel: its batches are split over every device of every process (core/training.py).
"""

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np

from vqdefense_jax.core import data as data_lib
from vqdefense_jax.core import experiment as skeleton
from vqdefense_jax.core import parallel
from vqdefense_jax.core import training
from vqdefense_jax.restore import gan
from vqdefense_jax.restore import models
from vqdefense_jax.restore import mosaic as mosaic_lib

if TYPE_CHECKING:  # experiment.py builds its runs here
  from vqdefense_jax.restore.experiment import Experiment


def restorer_name(v: gan.Variant) -> str:
  return f"restorer_{v.name}"


# --- records ---------------------------------------------------------------------------------------------

def _common(exp: "Experiment", ds: data_lib.Dataset) -> dict[str, Any]:
  return skeleton.common_record(exp.seed, exp.data, ds, dataset=True)


def classifier_record(exp: "Experiment", ds: data_lib.Dataset) -> dict[str, Any]:
  return dict(model="classifier", **_common(exp, ds),
              classifier=skeleton.classifier_section(exp.classifier, exp.classifier_model))


def restorer_record(exp: "Experiment", ds: data_lib.Dataset, v: gan.Variant) -> dict[str, Any]:
  """What a restorer checkpoint was made from; gan.steps is left out, so a longer schedule continues it."""
  n = exp.nets
  return dict(model=restorer_name(v), **_common(exp, ds), mosaic=dataclasses.asdict(exp.mosaic),
              generator=dict(width=n.width, blocks=n.blocks, cbam=v.cbam, cbam_reduction=models.REDUCTION,
                             cbam_kernel=models.SPATIAL_KERNEL),
              discriminator=dict(width=n.d_width, layers=n.d_layers),
              gan=dict(adversarial=v.adversarial, l1_weight=v.l1_weight, learning_rate=exp.gan.learning_rate,
                       adam_b1=gan.ADAM_B1, adam_b2=gan.ADAM_B2, batch_size=exp.gan.batch_size))


# --- data and runs ---------------------------------------------------------------------------------------

def pairs(exp: "Experiment", images: np.ndarray, split: str) -> tuple[np.ndarray, np.ndarray]:
  """(mosaicked images, box masks) of a split's images, image i's box from (seed of the split, i)."""
  seed = training.stable_seed(exp.seed, f"mosaic/{split}")
  index = np.arange(len(images), dtype=np.int32)
  return parallel.batched(lambda x, i: mosaic_lib.deidentify(exp.mosaic, seed, x, i), images, index, batch=1000)


def restorer_step(exp: "Experiment", v: gan.Variant) -> gan.RestorerStep:
  n = exp.nets
  return gan.RestorerStep(width=n.width, blocks=n.blocks, cbam=v.cbam, d_width=n.d_width, d_layers=n.d_layers,
                          adversarial=v.adversarial, l1_weight=v.l1_weight, learning_rate=exp.gan.learning_rate,
                          seed=training.stable_seed(exp.seed, "restorer"))


def _restorer_run(exp: "Experiment", ds: data_lib.Dataset, v: gan.Variant) -> skeleton.Run:
  step, shape, n = restorer_step(exp, v), skeleton.image_shape(ds), len(ds.train_images)
  return skeleton.Run(restorer_name(v), step, lambda: step.init(shape), exp.gan.steps, exp.gan.batch_size,
                      restorer_record(exp, ds, v), batches=skeleton.index_batches("gan", step.seed, n,
                                                                                  exp.gan.batch_size),
                      data_parallel="gan.batch_size")


def runs(exp: "Experiment", ds: data_lib.Dataset) -> list[skeleton.Run]:
  """Every run in training order: the classifier (with eval.classifier, seeded as the purification experiment
  seeds its own), then one restorer per variant."""
  out = [] if exp.classifier is None else [skeleton.classifier_run(
      exp.classifier, exp.classifier_model, exp.seed, exp.data.image_size, len(ds.train_images),
      classifier_record(exp, ds), data_parallel=True)]
  return out + [_restorer_run(exp, ds, v) for v in exp.variants]
