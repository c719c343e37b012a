"""Purifiers: pure functions (VQ-VAE variables, images) -> images, `Defence`s (core/defence.py).

With R_N the No-Split VQ-VAE's reconstruction, R_S the Split VQ-VAE's, and
T_k(f)(x) = merge(f(split(x, k)), k) (cut into k×k tiles, reconstruct each
tile, reassemble), the purifiers are exactly:

  none          x
  no_split      R_N(x)
  split         T_k(R_S)(x)
  vae_to_split  R_N(T_k(R_S)(x))   tiles through the Split VQ-VAE first, then the whole image
                                   through the No-Split VQ-VAE (the paper's "VAE to Split", Sec. 4.1)
  split_to_vae  T_k(R_S)(R_N(x))   the No-Split VQ-VAE first, then its output tiled through the
                                   Split VQ-VAE (the paper's "Split to VAE", Sec. 4.1)

The paper's names read backwards against their order of application; the
definitions above follow its Sec. 4.1 text, which describes the order.

Every purifier's parameters are one `VQParams`: the No-Split and the Split VQ-VAE's variables (in the grid,
stacks of them over codebook sizes). Importing this module registers each name as a `Pipeline` in
core/defence.py's registry, beside the network purifiers other systems offer (the restorer, which the grid
runs with its own parameters).

Detect, then purify: a purifier with a `Gate` (core/defence.py: a detector of manipulated images and its
threshold) purifies only the images the detector flags and passes the others through unchanged, so clean
images the detector lets through keep the classifier's clean accuracy. Its name is `detect_<purifier>`.
"""

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from vqdefense_jax.core import defence
from vqdefense_jax.core import tiles
from vqdefense_jax.core.defence import GATED_PREFIX, Defence, Gate, where_flagged as _where
from vqdefense_jax.core.errors import VQDefenseError
from vqdefense_jax.purify.vqvae import VQVAE, Variables

PURIFIERS = ("none", "no_split", "split", "vae_to_split", "split_to_vae")
# Each purifier is a sequence of stages: "N" = R_N, "S" = T_k(R_S), applied left to right.
STAGES = {"none": (), "no_split": ("N",), "split": ("S",), "vae_to_split": ("S", "N"), "split_to_vae": ("N", "S")}


class VQParams(NamedTuple):
  """A VQ-VAE purifier's parameters (a pytree: the grid stacks it over codebook sizes on a leading axis)."""
  no_split: Variables
  split: Variables


@dataclasses.dataclass(frozen=True)
class Pipeline:
  """What purification registers under each purifier's name: its stages, in the order they apply."""
  name: str
  stages: tuple[str, ...]


PIPELINES = tuple(defence.register("purify", Pipeline(name, STAGES[name])) for name in PURIFIERS)


@dataclasses.dataclass(frozen=True)
class Purifier:
  """A `Defence` of `VQParams`. Hashable by value, so equal purifiers share one compiled evaluation. With a
  `gate`: detect, then purify."""
  name: str
  no_split: VQVAE
  split: VQVAE
  k: int
  gate: Gate | None = None

  def __post_init__(self):
    if self.name not in STAGES:
      raise VQDefenseError(f"unknown purifier {self.name!r}; expected one of {', '.join(PURIFIERS)}")
    if self.gate is not None and self.name == "none":
      raise VQDefenseError("'none' purifies nothing: it takes no detector")

  @property
  def label(self) -> str:
    """The name in results: `name`, or `detect_<name>` with a gate."""
    return self.name if self.gate is None else GATED_PREFIX + self.name

  @property
  def stages(self) -> tuple[str, ...]:
    return STAGES[self.name]

  def stage(self, which: str, params: VQParams, x: jnp.ndarray) -> jnp.ndarray:
    if which == "N":
      return self.no_split.reconstruct(params.no_split, x)
    return tiles.merge(self.split.reconstruct(params.split, tiles.split(x, self.k)), self.k)

  def purify(self, params: VQParams, x: jnp.ndarray) -> jnp.ndarray:
    """The stages, on every image (without the gate)."""
    for which in self.stages:
      x = self.stage(which, params, x)
    return x

  def __call__(self, params: VQParams, x: jnp.ndarray, gate_params: Any = None) -> jnp.ndarray:
    out = self.purify(params, x)
    return out if self.gate is None else _where(self.gate.flags(gate_params, x), out, x)

  def differentiable(self, params: VQParams, x: jnp.ndarray, gate_params: Any = None) -> jnp.ndarray:
    """What a white-box attacker differentiates: the purifier's value (its quantisers straight through), and
    with a gate the gradient of the soft gate x + s(x)·(P(x) − x), through the detector (an attacker who
    knows it)."""
    if self.gate is None:
      return self(params, x)
    out = self.purify(params, x)
    s = self.gate.soft(gate_params, x).reshape((-1,) + (1,) * (x.ndim - 1))
    soft = x + s * (out - x)
    return _where(self.gate.flags(gate_params, x), out, x) + soft - jax.lax.stop_gradient(soft)


def apply_all(purifiers: tuple[Defence, ...], params: Any, x: jnp.ndarray, gate_params: Any = None
              ) -> list[jnp.ndarray]:
  """Every purifier's output, all of the same `params`; a stage prefix they share (R_N(x), T_k(R_S)(x)) and a
  gate's flags are computed once."""
  done, flags = {(): x}, {}
  for p in purifiers:
    for i in range(1, len(p.stages) + 1):
      if p.stages[:i] not in done:
        done[p.stages[:i]] = p.stage(p.stages[i - 1], params, done[p.stages[:i - 1]])
    if p.gate is not None and p.gate not in flags:
      flags[p.gate] = p.gate.flags(gate_params, x)
  return [done[p.stages] if p.gate is None else _where(flags[p.gate], done[p.stages], x) for p in purifiers]
