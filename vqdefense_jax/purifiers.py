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

from vqdefense_jax import split as split_lib
from vqdefense_jax.errors import VQDefenseError
from vqdefense_jax.models import VQVAE, Variables

PURIFIERS = ("none", "no_split", "split", "vae_to_split", "split_to_vae")


@dataclasses.dataclass(frozen=True)
class Purifier:
  """Hashable by value, so equal purifiers share one compiled evaluation."""
  name: str
  no_split: VQVAE
  split: VQVAE
  k: int

  def __post_init__(self):
    if self.name not in PURIFIERS:
      raise VQDefenseError(f"unknown purifier {self.name!r}; expected one of {', '.join(PURIFIERS)}")

  def r_n(self, no_split_vars: Variables, x: jnp.ndarray) -> jnp.ndarray:
    return self.no_split.reconstruct(no_split_vars, x)

  def r_s(self, split_vars: Variables, x: jnp.ndarray) -> jnp.ndarray:
    return split_lib.merge(self.split.reconstruct(split_vars, split_lib.split(x, self.k)), self.k)

  def __call__(self, no_split_vars: Variables, split_vars: Variables, x: jnp.ndarray) -> jnp.ndarray:
    if self.name == "none":
      return x
    if self.name == "no_split":
      return self.r_n(no_split_vars, x)
    if self.name == "split":
      return self.r_s(split_vars, x)
    if self.name == "vae_to_split":
      return self.r_n(no_split_vars, self.r_s(split_vars, x))
    return self.r_s(split_vars, self.r_n(no_split_vars, x))  # split_to_vae


def make_purifier(name: str, no_split: VQVAE, split: VQVAE, k: int) -> Purifier:
  return Purifier(name, no_split, split, k)
