"""The fake-image detector: a small ResNet with one logit (Wang et al. 2020 use a ResNet-50; MNIST needs less).

Trained with binary cross-entropy on real images (label 0) against one generator's fakes (label 1). Its
batches are images on the host, so that blur and a real JPEG codec can augment them there
(`augment.Augment` through `core.training.HostTransform`); the step itself is a pure function of
(state, batch). GroupNorm instead of BatchNorm keeps the model stateless: the same function at training and
test time.
"""

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vqdefense_jax.core import experiment as skeleton
from vqdefense_jax.core import layers, parallel, training
from vqdefense_jax.core.config import require
from vqdefense_jax.detect import augment


class Block(nn.Module):
  """conv3×3 (stride s) → GN → ReLU → conv3×3 → GN, plus the input (1×1 conv when the shape changes), ReLU."""
  width: int
  stride: int

  @nn.compact
  def __call__(self, x):
    groups = min(8, self.width)
    y = layers.Conv(self.width, (3, 3), strides=self.stride, padding=1, use_bias=False)(x)
    y = nn.relu(nn.GroupNorm(groups)(y))
    y = nn.GroupNorm(groups)(layers.Conv(self.width, (3, 3), padding=1, use_bias=False)(y))
    if x.shape[-1] != self.width or self.stride != 1:
      x = layers.Conv(self.width, (1, 1), strides=self.stride, use_bias=False, name="shortcut")(x)
    return nn.relu(x + y)


class Detector(nn.Module):
  """stem conv3×3 → one residual block per width (the first at stride 1, then stride 2) → mean pool → logit.

  Any (H, W, C) input in [0, 1]; returns (B,) logits of "fake".
  """
  widths: tuple[int, ...] = (16, 32, 64)

  @nn.compact
  def __call__(self, x_BxHxWxC: jnp.ndarray) -> jnp.ndarray:
    x = nn.relu(layers.Conv(self.widths[0], (3, 3), padding=1)(x_BxHxWxC - 0.5))
    for i, width in enumerate(self.widths):
      x = Block(width, 1 if i == 0 else 2)(x)
    return nn.Dense(1)(jnp.mean(x, axis=(1, 2)))[:, 0]


def init_params(model: Detector, seed: int, image_shape: tuple[int, int, int]) -> Any:
  return model.init(jax.random.key(seed), jnp.zeros((1,) + tuple(image_shape), jnp.float32))["params"]


def num_params(params: Any) -> int:
  return sum(int(a.size) for a in jax.tree.leaves(params))


@dataclasses.dataclass(frozen=True)
class DetectorStep:
  """One Adam step of binary cross-entropy on a host batch (x_BxHxWxC, y_B) with y = 1 for fakes."""
  model: Detector
  optimizer: training.OptimizerSpec

  def init(self, params: Any) -> training.TrainState:
    return training.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                               opt_state=self.optimizer.build().init(params), state={})

  def __call__(self, ts: training.TrainState, batch) -> tuple[training.TrainState, dict[str, jax.Array]]:
    x, y = batch

    def loss_fn(params):
      logits = self.model.apply({"params": params}, x)
      return optax.sigmoid_binary_cross_entropy(logits, y.astype(jnp.float32)).mean(), logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(ts.params)
    updates, opt_state = self.optimizer.build().update(grads, ts.opt_state, ts.params)
    new = ts.replace(step=ts.step + 1, params=optax.apply_updates(ts.params, updates), opt_state=opt_state)
    return new, dict(loss=loss, accuracy=jnp.mean((logits > 0) == (y > 0)))


@functools.partial(jax.jit, static_argnums=0)
def _prob(model: Detector, params: Any, x: jnp.ndarray) -> jnp.ndarray:
  return jax.nn.sigmoid(model.apply({"params": params}, x))


def scores(model: Detector, params: Any, images: np.ndarray, batch: int = 500) -> np.ndarray:
  """The probability of "fake" of each image (N,), in batches (one compiled function per batch shape)."""
  if not len(images):
    return np.zeros((0,), np.float32)
  return parallel.batched(functools.partial(_prob, model, params), images, batch=batch)


# --- the `detector` config section and its variants --------------------------------------------------------

ADVERSARIAL = "adversarial"  # the gate's own detector variant: real images vs grey-box FGSM examples of them


def variant_name(p: float) -> str:
  """'none' for p = 0, else 'p<p>' ('p0.1', 'p0.5'): Wang et al.'s Blur+JPEG (p) variants."""
  return "none" if p == 0 else f"p{p:g}"


@dataclasses.dataclass(frozen=True)
class DetectorSpec:
  """The `detector` config section, checked: one detector per augmentation probability in `augment_p`."""
  widths: tuple[int, ...]
  learning_rate: float
  batch_size: int
  steps: int
  num_fakes: int
  augment_p: tuple[float, ...]
  sigma_max: float
  quality_min: int

  @classmethod
  def from_config(cls, s) -> "DetectorSpec":
    spec = cls(tuple(s.widths), float(s.learning_rate), s.batch_size, s.steps, s.num_fakes,
               tuple(float(p) for p in s.augment_p), float(s.sigma_max), s.quality_min)
    require(bool(spec.widths) and all(1 <= w <= 1024 for w in spec.widths),
            f"detector.widths must be a non-empty list of widths in 1..1024, got {spec.widths}")
    require(spec.learning_rate > 0, "detector.learning_rate must be > 0")
    skeleton.check_schedule("detector", spec.batch_size, spec.steps)
    require(spec.num_fakes >= 0, "detector.num_fakes must be >= 0 (0: as many as training images)")
    require(bool(spec.augment_p) and all(0 <= p <= 1 for p in spec.augment_p)
            and len(set(spec.augment_p)) == len(spec.augment_p),
            f"detector.augment_p must be distinct probabilities in [0, 1], got {spec.augment_p}")
    require(0 <= spec.sigma_max <= 20 and 1 <= spec.quality_min <= 100,
            "detector.sigma_max must be in [0, 20] and detector.quality_min in 1..100")
    return spec

  def augment(self, p: float) -> augment.Augment:
    return augment.Augment(p_blur=p, p_jpeg=p, sigma_max=self.sigma_max, quality_min=self.quality_min)

  @property
  def model(self) -> Detector:
    return Detector(self.widths)

  def step(self) -> DetectorStep:
    return DetectorStep(self.model, training.OptimizerSpec("adam", self.learning_rate))
