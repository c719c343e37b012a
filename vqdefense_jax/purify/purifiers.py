"""Purifiers: pure functions (no_split_vars, split_vars, images) -> images.

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
"""

import dataclasses

import jax.numpy as jnp

from vqdefense_jax.core import tiles
from vqdefense_jax.core.errors import VQDefenseError
from vqdefense_jax.purify.vqvae import VQVAE, Variables

PURIFIERS = ("none", "no_split", "split", "vae_to_split", "split_to_vae")
# Each purifier is a sequence of stages: "N" = R_N, "S" = T_k(R_S), applied left to right.
STAGES = {"none": (), "no_split": ("N",), "split": ("S",), "vae_to_split": ("S", "N"), "split_to_vae": ("N", "S")}


@dataclasses.dataclass(frozen=True)
class Purifier:
  """Hashable by value, so equal purifiers share one compiled evaluation."""
  name: str
  no_split: VQVAE
  split: VQVAE
  k: int

  def __post_init__(self):
    if self.name not in STAGES:
      raise VQDefenseError(f"unknown purifier {self.name!r}; expected one of {', '.join(PURIFIERS)}")

  @property
  def stages(self) -> tuple[str, ...]:
    return STAGES[self.name]

  def stage(self, which: str, no_split_vars: Variables, split_vars: Variables, x: jnp.ndarray) -> jnp.ndarray:
    if which == "N":
      return self.no_split.reconstruct(no_split_vars, x)
    return tiles.merge(self.split.reconstruct(split_vars, tiles.split(x, self.k)), self.k)

  def __call__(self, no_split_vars: Variables, split_vars: Variables, x: jnp.ndarray) -> jnp.ndarray:
    for which in self.stages:
      x = self.stage(which, no_split_vars, split_vars, x)
    return x


def apply_all(purifiers: tuple[Purifier, ...], no_split_vars: Variables, split_vars: Variables,
              x: jnp.ndarray) -> list[jnp.ndarray]:
  """Every purifier's output; a stage prefix they share (R_N(x), T_k(R_S)(x)) is computed once."""
  done = {(): x}
  for p in purifiers:
    for i in range(1, len(p.stages) + 1):
      if p.stages[:i] not in done:
        done[p.stages[:i]] = p.stage(p.stages[i - 1], no_split_vars, split_vars, done[p.stages[:i - 1]])
  return [done[p.stages] for p in purifiers]
