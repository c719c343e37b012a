"""The MNIST classifier every system defends (the paper's target model): model, training loss, accuracy."""

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vqdefense_jax.core import layers
from vqdefense_jax.core.config import require


class Classifier(nn.Module):
  """conv3×3·32 → ReLU → conv3×3·64 → ReLU → maxpool2 → drop .25 → dense128 → ReLU → drop .5 → dense10.

  Takes pixels in [0, 1] and sees (x - mean) / std, so attacks act in pixel units whatever the input
  convention: the config's `classifier.input_mean` / `input_std` (MNIST's statistics here; 0 and 1 for the
  paper authors' classifier, which takes raw pixels).
  """
  num_classes: int = 10
  mean: float = 0.1307
  std: float = 0.3081

  @nn.compact
  def __call__(self, x_BxHxWx1: jnp.ndarray, train: bool = False, features: bool = False) -> jnp.ndarray:
    """Logits (B, 10); with `features`, the 128-d penultimate ReLU activations instead (an early return, so the
    parameter names and the logits are those of the plain model)."""
    x = (x_BxHxWx1 - self.mean) / self.std
    x = nn.relu(layers.Conv(32, (3, 3), padding="VALID")(x))
    x = nn.relu(layers.Conv(64, (3, 3), padding="VALID")(x))
    x = layers.max_pool_2x2(x)
    x = nn.Dropout(0.25, deterministic=not train)(x)
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(128)(x))
    if features:
      return x
    x = nn.Dropout(0.5, deterministic=not train)(x)
    return nn.Dense(self.num_classes)(x)


@dataclasses.dataclass(frozen=True)
class ClassifierLoss:
  """Cross-entropy with dropout on; `state` is unused (the classifier has none)."""
  model: Classifier = Classifier()

  def __call__(self, params, state, x, y, rng, extra=None):
    del extra
    logits = self.model.apply({"params": params}, x, train=True, rngs={"dropout": rng})
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss, (state, dict(accuracy=jnp.mean(jnp.argmax(logits, -1) == y)))


def from_config(section) -> Classifier:
  """The model of the `classifier` config section (its input convention); the schedule is `training.Schedule`."""
  mean, std = float(section.input_mean), float(section.input_std)
  require(0 < std <= 1e3 and abs(mean) <= 1e3, f"classifier.input_std must be in (0, 1000] and "
          f"classifier.input_mean in [-1000, 1000], got {std} and {mean}")
  return Classifier(mean=mean, std=std)


def logits_fn(params, model: Classifier = Classifier()) -> Callable[[jax.Array], jax.Array]:
  """The classifier as a function of images (eval mode)."""
  return lambda x: model.apply({"params": params}, x)


def features(params, x_BxHxWx1: jax.Array, model: Classifier = Classifier()) -> jax.Array:
  """The penultimate activations (B, 128), eval mode: the feature space of the MNIST Fréchet distance
  (`detect.alae.frechet_distance`)."""
  return model.apply({"params": params}, x_BxHxWx1, features=True)


def init_params(seed: int, image_size: int, model: Classifier = Classifier()) -> Any:
  return model.init(jax.random.key(seed), jnp.zeros((1, image_size, image_size, 1), jnp.float32))["params"]


@functools.partial(jax.jit, static_argnums=0)
def _correct(model: Classifier, params, x, y):
  return jnp.sum(jnp.argmax(logits_fn(params, model)(x), -1) == y)


def accuracy(params, images: np.ndarray, labels: np.ndarray, batch: int = 1000,
             model: Classifier = Classifier()) -> float:
  correct = sum(int(_correct(model, params, images[i:i + batch], labels[i:i + batch]))
                for i in range(0, len(images), batch))
  return correct / len(images)
