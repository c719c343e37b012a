"""The config schema of a detection experiment: every field, with its meaning.

A file in configs/detect/ starts from `base_config()` and changes fields; `train.py` and `evaluate.py` run
the detection system for configs whose `system` is 'detect'. `detect.experiment.Experiment.from_config`
checks every section before anything is written.
"""

import ml_collections

from vqdefense_jax.core import config as core_config
from vqdefense_jax.purify import api as purify_api

# The sections a detection experiment shares with the purification experiment inside it (`purify`).
SHARED = ("seed", "data", "train", "parallel")
# Sources of test images made by the purification experiment's models (the classifier and the VQ-VAEs).
PURIFY_SOURCES = ("vqvae_no_split", "vqvae_split", "fgsm", "pgd")
SOURCES = ("alae_samples", "alae_reconstructions", "dcgan_samples") + PURIFY_SOURCES


def purify_section(p: ml_collections.ConfigDict | None = None) -> ml_collections.ConfigDict:
  """A purification config (`p`, e.g. configs/purify/quick.py's; default purify/config.py's base) without the
  sections shared with the detection experiment."""
  p = purify_api.base_config() if p is None else p
  return ml_collections.ConfigDict({key: p[key] for key in p if key not in SHARED})


def purify_config_of(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The full purification config of a detection config: its `purify` section plus the shared sections."""
  merged = purify_api.base_config().to_dict()
  merged.update(c.purify.to_dict())
  merged.update({key: c[key].to_dict() if isinstance(c[key], ml_collections.ConfigDict) else c[key]
                 for key in SHARED})
  return ml_collections.ConfigDict(merged)


def base_config() -> ml_collections.ConfigDict:
  """ALAE's MNIST MLP set-up and Wang et al.'s detector recipe, at full size (an accelerator job)."""
  c = ml_collections.ConfigDict()
  c.system = "detect"                 # which system train.py / evaluate.py run
  c.seed = 0
  c.data = core_config.data_section()
  c.data.image_size = 24              # the purification grid's size, so its images can be detection sources

  c.alae = ml_collections.ConfigDict()  # the generator of the fakes the detector is trained on
  c.alae.latent = 50                  # z and w size (ALAE's MNIST)
  c.alae.mapping_layers = 6           # F: z -> w
  c.alae.hidden = 1024                # G and E: MLPs hidden-hidden
  c.alae.r1_gamma = 10.0              # R1 penalty on real inputs
  c.alae.learning_rate = 0.002        # Adam, beta = (0, 0.99)
  c.alae.separate_adam = False        # False: ALAE's code (Adam states of (E, D) and (F, G), shared by the latent
                                      # regression); True: a third state for the latent regression
  c.alae.batch_size = 128
  c.alae.steps = 30000

  c.dcgan = ml_collections.ConfigDict()  # another generator, never seen by the detectors: do they generalise?
  c.dcgan.latent = 64
  c.dcgan.width = 32                  # channels of the first conv; transposed convs upsample ×4 in all
  c.dcgan.learning_rate = 2e-4        # Adam, beta = (0.5, 0.999) (DCGAN's)
  c.dcgan.batch_size = 64
  c.dcgan.steps = 10000

  c.detector = ml_collections.ConfigDict()  # Wang et al. (2020): real vs one generator's fakes, augmented
  c.detector.widths = (16, 32, 64)    # residual stages (stride 1, then 2)
  c.detector.learning_rate = 1e-3     # Adam
  c.detector.batch_size = 128
  c.detector.steps = 5000
  c.detector.num_fakes = 0            # ALAE samples to train on (0: as many as training images)
  c.detector.augment_p = (0.0, 0.1, 0.5)  # one detector per p: blur and JPEG each with probability p
  c.detector.sigma_max = 3.0          # blur sigma ~ U[0, sigma_max]
  c.detector.quality_min = 30         # JPEG quality ~ U{quality_min..100}

  # The classifier (FID features, the attacks) and the VQ-VAEs (reconstructions as fakes) are a purification
  # experiment, trained in <workdir>/purify/ with its own records; seed, data, train and parallel are shared.
  c.purify = purify_section()
  c.purify.vqvae.codebook_sizes = (768,)  # one size: the paper authors' released weights use 768

  # Detect, then purify (evaluate.py): the purification grid of `purify` (its attacks and ε) measures every
  # purifier also as "purify only the images this detector flags, pass the others through".
  c.gate = ml_collections.ConfigDict()
  c.gate.detector = "adversarial"     # a detector variant ('none', 'p0.1', ...) or 'adversarial': one more detector,
                                      # trained on real images vs grey-box FGSM examples of them (label 1)
  c.gate.epsilons = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3)  # 'adversarial': each training image attacked at one of these
  c.gate.threshold = 0.5              # flagged when the detector's probability exceeds this
  c.gate.grid = True                  # run the purification grid with the gate at evaluation (purify/ outputs)

  c.eval = ml_collections.ConfigDict()
  c.eval.sources = SOURCES            # image sources scored against the real test images; 'fgsm' and 'pgd' are
                                      # grey-box attacks on the classifier, one source per eval.attack_epsilons
  c.eval.attack_epsilons = (0.1, 0.2, 0.3)
  c.eval.fid = True                   # Frechet distance of each source on the classifier's penultimate features
  c.eval.num_fakes = 0                # fakes per source (0: as many as test images)
  c.eval.threshold = 0.5              # accuracy: "fake" when the probability exceeds this
  c.eval.blur_sigmas = (1.0, 2.0)     # robustness: AP on test images blurred at these sigmas
  c.eval.jpeg_qualities = (75, 50)    # ... and JPEG-compressed at these qualities

  c.train = core_config.train_section()
  c.parallel = core_config.parallel_section()
  c.lock()
  return c
