"""What a detection experiment trains: ALAE, the DCGAN and one detector per variant, as core/experiment.py runs,
with their records and the detectors' training sets.

A detector's batches are drawn from real training images and fakes that another model makes (ALAE's samples, or
grey-box FGSM examples against the purification classifier), so its run's batches are filled in once that model
is trained; their size is checked when the runs are built, before anything is trained. Every run is
data-parallel: its batches are split over every device of every process (core/training.py).
"""

import dataclasses
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from vqdefense_jax.core import attacks
from vqdefense_jax.core import classifier
from vqdefense_jax.core import data as data_lib
from vqdefense_jax.core import experiment as skeleton
from vqdefense_jax.core import parallel
from vqdefense_jax.core import training
from vqdefense_jax.core.config import require
from vqdefense_jax.detect import alae as alae_lib
from vqdefense_jax.detect import detector as detector_lib
from vqdefense_jax.detect.detector import ADVERSARIAL
from vqdefense_jax.detect.sources import quantize, samples
from vqdefense_jax.purify import api as purify_api

if TYPE_CHECKING:  # experiment.py builds its runs here
  from vqdefense_jax.detect.experiment import Experiment

# Wang et al. (2020) train on balanced real and fake sets; many more fakes than real images only tilt the
# detector's classes, and a huge count would fill the memory once ALAE is trained.
MAX_FAKES_PER_REAL = 10


# --- records ---------------------------------------------------------------------------------------------

def _common(exp: "Experiment", ds: data_lib.Dataset) -> dict[str, Any]:
  return skeleton.common_record(exp.seed, exp.data, ds)


def alae_record(exp: "Experiment", ds: data_lib.Dataset) -> dict[str, Any]:
  a = dataclasses.asdict(exp.alae)
  a.pop("steps")  # a longer schedule continues a finished model
  return dict(model="alae", **_common(exp, ds), alae=a)


def dcgan_record(exp: "Experiment", ds: data_lib.Dataset) -> dict[str, Any]:
  g = dataclasses.asdict(exp.dcgan)
  g.pop("steps")
  return dict(model="dcgan", **_common(exp, ds), dcgan=g)


def detector_record(exp: "Experiment", ds: data_lib.Dataset, variant: str) -> dict[str, Any]:
  d = dataclasses.asdict(exp.detector)
  for key in ("steps", "augment_p"):
    d.pop(key)
  fakes_from = alae_record(exp, ds) if variant != ADVERSARIAL else dict(
      attack="fgsm", epsilons=list(exp.gate.epsilons), classifier=purify_api.classifier_record(exp.purify, ds))
  return dict(model=f"detector_{variant}", **_common(exp, ds), detector=dict(d, p=exp.augment_of[variant]),
              fakes_from=fakes_from)


# --- runs ------------------------------------------------------------------------------------------------

def num_fakes(exp: "Experiment", n_train: int, variant: str) -> int:
  """The fakes of a detector's training set: detector.num_fakes ALAE samples (0: as many as training images),
  or FGSM examples of the first that many training images (at most all of them)."""
  n = exp.detector.num_fakes or n_train
  return min(n, n_train) if variant == ADVERSARIAL else n


def runs(exp: "Experiment", ds: data_lib.Dataset) -> list[skeleton.Run]:
  """Every run in training order: ALAE, the DCGAN, then one detector per variant (batches filled in later)."""
  n, shape = len(ds.train_images), skeleton.image_shape(ds)
  require(exp.detector.num_fakes <= MAX_FAKES_PER_REAL * n, f"detector.num_fakes={exp.detector.num_fakes} is more "
          f"than {MAX_FAKES_PER_REAL}x the {n} training images; 0: as many fakes as training images")
  require(exp.eval.num_fakes <= len(ds.test_images), f"eval.num_fakes={exp.eval.num_fakes} is more than the "
          f"{len(ds.test_images)} test images each source is scored against; 0: as many as test images")
  alae = exp.alae.step(training.stable_seed(exp.seed, "alae"))
  dcgan = exp.dcgan.step(training.stable_seed(exp.seed, "dcgan"))
  out = [skeleton.Run("alae", alae, lambda: alae.init(shape), exp.alae.steps, exp.alae.batch_size,
                      alae_record(exp, ds), batches=skeleton.index_batches("alae", alae.seed, n, exp.alae.batch_size),
                      data_parallel="alae.batch_size"),
         skeleton.Run("dcgan", dcgan, lambda: dcgan.init(shape), exp.dcgan.steps, exp.dcgan.batch_size,
                      dcgan_record(exp, ds),
                      batches=skeleton.index_batches("dcgan", dcgan.seed, n, exp.dcgan.batch_size),
                      data_parallel="dcgan.batch_size")]
  return out + [_detector_run(exp, ds, v, shape) for v in exp.variants]


def _detector_run(exp: "Experiment", ds: data_lib.Dataset, variant: str, shape) -> skeleton.Run:
  name, d = f"detector_{variant}", exp.detector
  seed, step = training.stable_seed(exp.seed, name), d.step()
  n = len(ds.train_images)
  skeleton.check_batch("detector", d.batch_size, n + num_fakes(exp, n, variant), "real and fake training images")
  return skeleton.Run(name, step, lambda: step.init(detector_lib.init_params(d.model, seed, shape)), d.steps,
                      d.batch_size, detector_record(exp, ds, variant),
                      needs=("purify",) if variant == ADVERSARIAL else ("alae",), data_parallel="detector.batch_size")


def detector_batches(exp: "Experiment", variant: str, x: np.ndarray, y: np.ndarray) -> training.HostTransform:
  """A detector's batches from its training set: (seed, step) picks the images, the variant's Blur+JPEG
  augmentation runs on the host."""
  seed = training.stable_seed(exp.seed, f"detector_{variant}")
  return training.HostTransform(_Take(training.IndexBatches(seed, len(x), exp.detector.batch_size), x, y),
                                exp.detector.augment(exp.augment_of[variant]), seed)


@dataclasses.dataclass(frozen=True)
class _Take:
  """Batch `step`: the images and labels at IndexBatches' indices (host arrays, for the host augmentation)."""
  index: training.IndexBatches
  x: np.ndarray = dataclasses.field(compare=False, repr=False)
  y: np.ndarray = dataclasses.field(compare=False, repr=False)

  def __call__(self, step: int):
    idx = self.index(step)
    return self.x[idx], self.y[idx]


# --- training sets ---------------------------------------------------------------------------------------

def detector_training_set(exp: "Experiment", ds: data_lib.Dataset, alae_params) -> tuple[np.ndarray, np.ndarray]:
  """Real training images (label 0) and as many ALAE samples (label 1; detector.num_fakes overrides)."""
  n_fake = num_fakes(exp, len(ds.train_images), "alae")
  fakes = samples(alae_lib.sample, exp, alae_params, n_fake, skeleton.image_shape(ds), "train")
  x = quantize(np.concatenate([ds.train_images, fakes]))
  y = np.concatenate([np.zeros(len(ds.train_images), np.int32), np.ones(n_fake, np.int32)])
  return x, y


def adversarial_training_set(exp: "Experiment", ds: data_lib.Dataset, cls_params) -> tuple[np.ndarray, np.ndarray]:
  """Real training images (label 0) and grey-box FGSM examples of them (label 1), each at an ε drawn from
  gate.epsilons by (seed, image index); detector.num_fakes limits the attacked images to the first n."""
  n = num_fakes(exp, len(ds.train_images), ADVERSARIAL)
  rng = np.random.default_rng(training.stable_seed(exp.seed, "detector_adversarial/epsilons"))
  eps_N = rng.choice(np.asarray(exp.gate.epsilons, np.float32), n)
  f = lambda x, y: attacks.fgsm_sign(classifier.logits_fn(cls_params, exp.purify.classifier_model), x, y)
  sign = parallel.batched(jax.jit(f), ds.train_images[:n], ds.train_labels[:n])
  adv = ds.train_images[:n] + eps_N[:, None, None, None] * sign
  x = quantize(np.concatenate([ds.train_images, adv]))
  y = np.concatenate([np.zeros(len(ds.train_images), np.int32), np.ones(n, np.int32)])
  return x, y
