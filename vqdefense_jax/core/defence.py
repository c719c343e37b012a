"""Defences as the attacks see them, shared by every system: something that maps an image batch to an image
batch, with a forward pass and the pass a white-box attacker differentiates.

  Gate              a detector of manipulated images and its threshold: "detect, then purify" purifies only the
                    images it flags (detection offers it; purification's purifiers take one)
  ModulePurifier    a purifier that is one Flax module (images in [0, 1] -> images)
  NetworkPurifier   what a system registers to offer one such purifier to the purification grid: its config
                    section, its checked spec, its training pairs and the module that purifies; `register`,
                    `network_purifiers`. A purification config that lists one imports its module first (the
                    restorer: `vqdefense_jax.restore.purifier`), so purification imports no other system.

A defence answers `label`, `stages`, `stage(which, params, split_params, x)`, `__call__(params, split_params, x,
gate_params)` and `differentiable(...)` (the value an attacker differentiates: the true gradient, the
straight-through estimate through a quantiser, or BPDA's identity, as each attack asks); purify/purifiers.py's
VQ-VAE `Purifier` and the `ModulePurifier` below both do.
"""

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vqdefense_jax.core.errors import VQDefenseError

GATED_PREFIX = "detect_"


@dataclasses.dataclass(frozen=True)
class Gate:
  """A detector (a Flax module: images in [0, 1] -> (B,) logits of "manipulated") and the probability above
  which an image is flagged. The detector sees each image as an 8-bit file would store it (as in its
  training: the detection experiment quantises every image it sees).

  `flags` is the hard decision the evaluation uses. `soft` is sigmoid(logit - logit(threshold)), 1/2 at the
  threshold: a white-box attacker who knows the detector differentiates the gate through it
  (`Purifier.differentiable`).
  """
  detector: nn.Module
  threshold: float = 0.5

  def logits(self, params: Any, x: jnp.ndarray) -> jnp.ndarray:
    x8 = x + jax.lax.stop_gradient(jnp.round(jnp.clip(x, 0.0, 1.0) * 255) / 255 - x)  # straight through
    return self.detector.apply({"params": params}, x8)

  def flags(self, params: Any, x: jnp.ndarray) -> jnp.ndarray:
    return jax.nn.sigmoid(self.logits(params, x)) > self.threshold

  def soft(self, params: Any, x: jnp.ndarray) -> jnp.ndarray:
    t = self.threshold
    return jax.nn.sigmoid(self.logits(params, x) - jnp.log(t / (1 - t)))


def where_flagged(flag_B: jnp.ndarray, a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
  return jnp.where(flag_B.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)


@dataclasses.dataclass(frozen=True)
class ModulePurifier:
  """A purifier that is one Flax module (images in [0, 1] -> images), hashable by value like `Purifier`.

  The grid passes its params where a `Purifier` gets the No-Split VQ-VAE's variables; the Split slot is unused.
  A white-box attacker differentiates the module itself (no gate, no quantiser).
  """
  name: str
  module: nn.Module
  gate: None = None

  @property
  def label(self) -> str:
    return self.name

  @property
  def stages(self) -> tuple[str, ...]:
    return (f"module:{self.name}",)  # never shared with a VQ-VAE's stages in `apply_all`

  def stage(self, which: str, params: Any, split_vars: Any, x: jnp.ndarray) -> jnp.ndarray:
    del which, split_vars
    return self.module.apply({"params": params}, x)

  def purify(self, params: Any, split_vars: Any, x: jnp.ndarray) -> jnp.ndarray:
    return self.stage(self.stages[0], params, split_vars, x)

  def __call__(self, params: Any, split_vars: Any, x: jnp.ndarray, gate_params: Any = None) -> jnp.ndarray:
    del gate_params
    return self.purify(params, split_vars, x)

  differentiable = __call__


@dataclasses.dataclass(frozen=True)
class NetworkPurifier:
  """A purifier that is one trained network, offered by a system to the purification grid. It is trained there
  on (attacked, clean) pairs of the training images, the attacks made against the grid's classifier.

  name      its name in eval.purifiers and in the results, and its config section's
  section   () -> its config section (a purification config gains it once the system's module is imported)
  spec      (section, image_size, seed) -> the checked spec: `.step` (its training step), `.steps`,
            `.batch_size`, `.epsilons` (of its pairs), `.record()` and `.init(image_size)`
  pairs     (classifier params, classifier, images, labels, epsilons, seed) -> the attacked training inputs
  module    spec -> the Flax module that purifies (images in [0, 1] -> images)
  params    the trained state -> the module's params
  """
  name: str
  section: Callable[[], ml_collections.ConfigDict]
  spec: Callable[[Any, int, int], Any]
  pairs: Callable[..., Any]
  module: Callable[[Any], nn.Module]
  params: Callable[[Any], Any]

  def purifier(self, spec: Any) -> ModulePurifier:
    return ModulePurifier(self.name, self.module(spec))


_NETWORKS: dict[str, NetworkPurifier] = {}


def register(network: NetworkPurifier) -> NetworkPurifier:
  """Offer a network purifier to the purification grid (its module calls this once, on import)."""
  old = _NETWORKS.get(network.name)
  if old is not None and old.section.__module__ != network.section.__module__:  # (a module reloaded may replace)
    raise VQDefenseError(f"a network purifier named {network.name!r} is registered already")
  _NETWORKS[network.name] = network
  return network


def network_purifiers() -> dict[str, NetworkPurifier]:
  """The registered network purifiers, by name."""
  return dict(_NETWORKS)
