"""The restorer as a purifier: G trained on (adversarial, clean) pairs, one more row of the
purification grid beside the VQ-VAEs (a Defense-GAN-like purifier: a generator maps the attacked image back).

The network and its loss are the restoration system's (restore/gan.py: CBAM ResNet G, PatchGAN D, adversarial
+ λ·L1, alternating Adams); only the pairs differ. Each training image is attacked once, before training, with
grey-box FGSM against the purification experiment's classifier at an ε drawn per image from
`restorer.epsilons` (image i's ε from (seed, i); Defense-VAE's pairs, as `vqvae.training = 'adversarial'`
draws them). The pairs are fixed data, so a resumed run continues bit-identically.

In the grid (purify/grid.py) the restorer is a `ModulePurifier` (core/defence.py's `Defence`) paired with its
own params, G's: grey-box attacks are the classifier's, as for every purifier; the white-box attacks
differentiate through G (`ste_*`: its true gradient; G has no quantiser) or take it as the identity backward
(`bpda_*`).

Importing this module registers the restorer as a network purifier (core/defence.py's registry, under the
restoration system): a purification config that lists 'restorer' in eval.purifiers imports it first, and gains
the `restorer` section.
"""

import dataclasses
import functools
from typing import Any

import jax
import ml_collections
import numpy as np

from vqdefense_jax.core import attacks
from vqdefense_jax.core import classifier
from vqdefense_jax.core import config as config_lib
from vqdefense_jax.core import defence
from vqdefense_jax.core import experiment as skeleton
from vqdefense_jax.core import parallel
from vqdefense_jax.core import training
from vqdefense_jax.restore import gan
from vqdefense_jax.restore import models

NAME = "restorer"  # its name in eval.purifiers and in the grid's results


def config_section() -> ml_collections.ConfigDict:
  """The `restorer` section of a purification config: read when eval.purifiers lists 'restorer'."""
  s = ml_collections.ConfigDict()
  s.width = 64                        # G's first width (CycleGAN's ngf)
  s.blocks = 9                        # residual blocks, CBAM after each
  s.cbam = True                       # False: plain residual blocks (the ablation)
  s.d_width = 64                      # PatchGAN's first width (ndf)
  s.d_layers = 0                      # PatchGAN stride-2 layers; 0: the deepest that fits the image (models.py)
  s.adversarial = True                # False: G's loss is λ·L1 alone
  s.l1_weight = 1.0                   # λ (the attention-GAN paper: 1)
  s.learning_rate = 2e-4              # both Adams, β = (0.5, 0.999)
  s.batch_size = 64
  s.steps = 20000
  s.epsilons = (0.2, 0.25, 0.3, 0.35)  # each training image's FGSM ε is one of these (Defense-VAE's)
  return s


@dataclasses.dataclass(frozen=True)
class RestorerSpec:
  """The `restorer` section, checked, with the PatchGAN depth resolved for the image size."""
  step: gan.RestorerStep
  batch_size: int
  steps: int
  epsilons: tuple[float, ...]

  @classmethod
  def from_config(cls, s, image_size: int, seed: int) -> "RestorerSpec":
    require = config_lib.require
    require(1 <= s.width <= 1024 and 0 <= s.blocks <= 64 and 1 <= s.d_width <= 1024 and 0 <= s.d_layers <= 8,
            f"restorer.width (1..1024), blocks (0..64), d_width (1..1024) or d_layers (0..8; 0: by image size) out "
            f"of range: {s.width}, {s.blocks}, {s.d_width}, {s.d_layers}")
    skeleton.check_schedule("restorer", s.batch_size, s.steps)
    eps = tuple(float(e) for e in s.epsilons)
    require(bool(eps) and all(0.0 < e <= 1.0 for e in eps),
            f"restorer.epsilons must be one or more ε in (0, 1] (pixel units), got {tuple(s.epsilons)}")
    d_layers = s.d_layers or models.patch_layers(image_size)
    step = gan.RestorerStep(width=s.width, blocks=s.blocks, cbam=bool(s.cbam), d_width=s.d_width, d_layers=d_layers,
                            adversarial=bool(s.adversarial), l1_weight=float(s.l1_weight),
                            learning_rate=float(s.learning_rate), seed=training.stable_seed(seed, NAME))
    models.check_shapes((image_size, image_size, 1), step.blocks, step.d_layers)
    return cls(step, s.batch_size, s.steps, eps)

  def record(self) -> dict[str, Any]:
    """What defines the trained restorer besides the data and the classifier (purify/experiment.py's network_record)."""
    st = self.step
    return dict(generator=dict(width=st.width, blocks=st.blocks, cbam=st.cbam),
                discriminator=dict(width=st.d_width, layers=st.d_layers),
                gan=dict(adversarial=st.adversarial, l1_weight=st.l1_weight, learning_rate=st.learning_rate,
                         batch_size=self.batch_size),
                pairs=dict(attack="fgsm", epsilons=list(self.epsilons)))

  def init(self, image_size: int) -> training.GANState:
    return self.step.init((image_size, image_size, 1))


def pair_epsilons(epsilons, n: int, seed: int) -> np.ndarray:
  """(n,) float32: image i's ε, one of `epsilons`, from (seed, i) alone."""
  choice = np.random.default_rng([seed, 0x5E51]).integers(0, len(epsilons), n)
  return np.asarray(epsilons, np.float32)[choice]


@functools.partial(jax.jit, static_argnums=1)
def _fgsm_per_image(cls_params, cls_model: classifier.Classifier, x_BxHxWx1, y_B, eps_B):
  return attacks.fgsm_per_image(classifier.logits_fn(cls_params, cls_model), x_BxHxWx1, y_B, eps_B)


def adversarial_pairs(cls_params, cls_model: classifier.Classifier, images: np.ndarray, labels: np.ndarray,
                      epsilons, seed: int, batch: int = 500) -> np.ndarray:
  """The training inputs: each image FGSM-attacked against the classifier at its ε (`pair_epsilons`); the
  targets are the clean images. Images do not interact, so the result does not depend on `batch`."""
  if not len(images):
    return np.zeros_like(images)
  eps_N = pair_epsilons(epsilons, len(images), seed)
  return parallel.batched(functools.partial(_fgsm_per_image, cls_params, cls_model), images, labels, eps_N,
                          batch=batch)


RESTORER = defence.register("restore", defence.NetworkPurifier(
    name=NAME, section=config_section, spec=RestorerSpec.from_config, pairs=adversarial_pairs,
    module=lambda spec: spec.step.nets().generator, params=lambda state: state.params.generator))
