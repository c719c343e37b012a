"""Defences as the attacks see them, shared by every system: something that maps an image batch to an image
batch, given its parameters, with a forward pass and the pass a white-box attacker differentiates.

  Defence           the protocol (below) the purification grid and the attacks use
  Gate              a detector of manipulated images and its threshold: "detect, then purify" purifies only the
                    images it flags (detection trains one; a defence may carry one)
  ModulePurifier    a defence that is one Flax module (images in [0, 1] -> images), its params the module's
  NetworkPurifier   what a system offers to the purification grid when its defence is a network trained there:
                    its config section, its checked spec, its training pairs and the module that purifies
  register, registered, network_purifiers
                    the registry by name: each system registers what it offers when its module is imported
                    (purification its VQ-VAE purifiers and pipelines, purify/purifiers.py; restoration its
                    restorer, restore/purifier.py). A purification config that lists the restorer imports its
                    module first, so purification imports no other system.

A defence is a hashable value (a static argument of the compiled grid); its parameters travel beside it, so
the grid pairs every defence with its own parameters (a VQ-VAE purifier: its No-Split and Split variables;
the restorer: its generator's params).
"""

import dataclasses
from typing import Any, Callable, Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vqdefense_jax.core.errors import VQDefenseError

GATED_PREFIX = "detect_"


class Defence(Protocol):
  """Images (B, H, W, C) in [0, 1] -> images, given `params` (and, with a gate, the detector's `gate_params`).

  label           its name in results
  gate            a `Gate`, or None: with one, only the images its detector flags are purified
  stages          the names of its steps, applied left to right by `stage`: defences of one grid call (equal
                  params) that share a prefix of stages share its output (`purify.purifiers.apply_all`), so a
                  name must mean the same computation in every defence that uses it
  __call__        the forward pass: what the classifier sees after the defence (the hard gate, the real
                  quantiser)
  differentiable  the same value; its gradient is what a white-box attacker follows: the true gradient through
                  a network, the straight-through estimate through a quantiser, and through a gate the soft
                  gate's (`Gate.soft`). BPDA needs nothing more from a defence: the attacks
                  (core/attacks/dispatch.py `target_fn`) run `differentiable` forward and take the identity
                  backward; `ste_*` attacks differentiate it; black-box ones (Square) only query it.
  """

  @property
  def label(self) -> str: ...

  @property
  def gate(self) -> "Gate | None": ...

  @property
  def stages(self) -> tuple[str, ...]: ...

  def stage(self, which: str, params: Any, x: jnp.ndarray) -> jnp.ndarray: ...

  def __call__(self, params: Any, x: jnp.ndarray, gate_params: Any = None) -> jnp.ndarray: ...

  def differentiable(self, params: Any, x: jnp.ndarray, gate_params: Any = None) -> jnp.ndarray: ...


@dataclasses.dataclass(frozen=True)
class Gate:
  """A detector (a Flax module: images in [0, 1] -> (B,) logits of "manipulated") and the probability above
  which an image is flagged. The detector sees each image as an 8-bit file would store it (as in its
  training: the detection experiment quantises every image it sees).

  `flags` is the hard decision the evaluation uses. `soft` is sigmoid(logit - logit(threshold)), 1/2 at the
  threshold: a white-box attacker who knows the detector differentiates the gate through it
  (`Defence.differentiable`).
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
  """A `Defence` that is one Flax module (images in [0, 1] -> images), its params the module's; hashable by
  value. A white-box attacker differentiates the module itself (no gate, no quantiser)."""
  name: str
  module: nn.Module
  gate: None = None

  @property
  def label(self) -> str:
    return self.name

  @property
  def stages(self) -> tuple[str, ...]:
    return (f"module:{self.name}",)  # never shared with a VQ-VAE's stages in `apply_all`

  def stage(self, which: str, params: Any, x: jnp.ndarray) -> jnp.ndarray:
    del which
    return self.module.apply({"params": params}, x)

  def __call__(self, params: Any, x: jnp.ndarray, gate_params: Any = None) -> jnp.ndarray:
    del gate_params
    return self.stage(self.stages[0], params, x)

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


# name -> (the system that offers it, what it offers: a NetworkPurifier, or a system's own description)
_REGISTRY: dict[str, tuple[str, Any]] = {}


def register(system: str, offer: Any) -> Any:
  """Offer a defence under `offer.name` (its system's module calls this once, on import). A name belongs to one
  system: the same system may register it again (a reloaded module), another may not."""
  old = _REGISTRY.get(offer.name)
  if old is not None and old[0] != system:
    raise VQDefenseError(f"a defence named {offer.name!r} is registered already, by {old[0]}")
  _REGISTRY[offer.name] = (system, offer)
  return offer


def registered(kind: type | None = None) -> dict[str, Any]:
  """The registered offers by name, in the order they were registered; with `kind`, those of that type."""
  return {name: offer for name, (_, offer) in _REGISTRY.items() if kind is None or isinstance(offer, kind)}


def network_purifiers() -> dict[str, NetworkPurifier]:
  """The registered network purifiers (trained in the purification grid on attacked pairs), by name."""
  return registered(NetworkPurifier)
