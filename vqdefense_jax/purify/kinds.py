"""What the `vqvae` config section describes, built once and checked: the VQ-VAE, its kinds and sizes.

A *kind* is one VQ-VAE trained for one job (`VQKind`): whole images (tiles = 1, the No-Split VQ-VAE) or
k×k tiles (the Split VQ-VAE, k = vqvae.split_k; finer splits k in vqvae.split_ks), trained on clean
images (the paper) or on adversarial → clean pairs (Defense-VAE). Every codebook size of a kind is one
model of its stack.
"""

import dataclasses

from vqdefense_jax.core.errors import VQDefenseError
from vqdefense_jax.purify import quantizer
from vqdefense_jax.purify.vqvae import VQVAE, latent_side, round_trips

TRAINING = ("clean", "adversarial")
MAX_CODEBOOK = 2 ** 16  # rows per codebook


@dataclasses.dataclass(frozen=True)
class VQKind:
  """One VQ-VAE kind: its tile count k per side and its training mode."""
  tiles: int = 1
  training: str = "clean"
  split_k: int = 2      # the paper's Split kind (named 'split'); other tile counts are named 'split_k<k>'

  @property
  def name(self) -> str:
    """'no_split', 'split', 'split_k<k>', with '_adv' when adversarially trained (checkpoint and metric names)."""
    base = "no_split" if self.tiles == 1 else "split" if self.tiles == self.split_k else f"split_k{self.tiles}"
    return base if self.training == "clean" else f"{base}_adv"

  @property
  def adversarial(self) -> bool:
    return self.training == "adversarial"


@dataclasses.dataclass(frozen=True)
class VQSpec:
  """The `vqvae` section: the model, the codebook sizes, and the kinds to train."""
  model: VQVAE
  codebook_sizes: tuple[int, ...]
  split_k: int
  training: tuple[str, ...]
  adversarial_epsilons: tuple[float, ...]
  split_ks: tuple[int, ...]

  @classmethod
  def from_config(cls, v, image_size: int) -> "VQSpec":
    sizes = tuple(v.codebook_sizes)  # config.check_types made every field its schema's type
    if not sizes:
      raise VQDefenseError("vqvae.codebook_sizes must be a non-empty list of integers")
    if not 0 <= v.k_max <= MAX_CODEBOOK or max(sizes) > MAX_CODEBOOK:
      raise VQDefenseError(f"vqvae.k_max and vqvae.codebook_sizes must be at most {MAX_CODEBOOK}, got "
                           f"{v.k_max} and {sizes}")
    k_max = v.k_max or max(sizes)
    for s in sizes:
      if not 1 <= s <= k_max:
        raise VQDefenseError(f"codebook size {s} is out of range: it must be an integer in 1..K_max={k_max}")
    if len(set(sizes)) != len(sizes):
      raise VQDefenseError(f"vqvae.codebook_sizes has duplicates: {sizes}")
    for key, lo, hi in (("channels", 1, 1024), ("embedding_dim", 1, 4096)):
      if not lo <= v[key] <= hi:
        raise VQDefenseError(f"vqvae.{key} must be in {lo}..{hi}, got {v[key]}")
    for key, ok, allowed in (("commitment_cost", v.commitment_cost >= 0, ">= 0"),
                             ("decay", 0 <= v.decay < 1, "in [0, 1)"), ("epsilon", 0 < v.epsilon <= 1, "in (0, 1]")):
      if not ok:
        raise VQDefenseError(f"vqvae.{key} must be {allowed}, got {v[key]}")
    if v.layout not in quantizer.LAYOUTS:
      raise VQDefenseError(f"vqvae.layout must be one of {quantizer.LAYOUTS}, not {v.layout!r}")
    modes = tuple(v.training)
    if not modes or modes[0] != "clean" or len(set(modes)) != len(modes) or not set(modes) <= set(TRAINING):
      raise VQDefenseError(f"vqvae.training must be ('clean',) or ('clean', 'adversarial'), got {modes}")
    eps = tuple(v.adversarial_epsilons)
    if not eps or any(not isinstance(e, (int, float)) or not 0.0 < float(e) <= 1.0 for e in eps):
      raise VQDefenseError(f"vqvae.adversarial_epsilons must be values in (0, 1], got {eps}")
    model = VQVAE(channels=v.channels, embedding_dim=v.embedding_dim, k_max=k_max, layout=v.layout,
                  commitment_cost=v.commitment_cost, decay=v.decay, epsilon=v.epsilon)
    spec = cls(model, sizes, v.split_k, modes, tuple(float(e) for e in eps), tuple(v.split_ks))
    spec._check_tiles(image_size)
    return spec

  def _check_tiles(self, size: int) -> None:
    k = self.split_k
    if not isinstance(k, int) or k < 1 or size % k:
      raise VQDefenseError(f"data.image_size {size} is not divisible by vqvae.split_k {k}")
    if len(set(self.split_ks)) != len(self.split_ks):
      raise VQDefenseError(f"vqvae.split_ks has duplicates: {self.split_ks}")
    for tiles in dict.fromkeys((1, k, *self.split_ks)):
      key = "vqvae.split_k" if tiles == k else "vqvae.split_ks"
      if not isinstance(tiles, int) or tiles < 1 or size % tiles:
        raise VQDefenseError(f"{key}: {tiles} does not divide data.image_size {size}")
      side = size // tiles
      what = "image" if tiles == 1 else f"{tiles}x{tiles} tile"
      if not round_trips(side):
        ok = [s for s in range(8, 65, 4) if s % k == 0 and round_trips(s // k)] if tiles in (1, k) else [
            j for j in range(1, size + 1) if size % j == 0 and round_trips(size // j)]
        raise VQDefenseError(f"data.image_size {size}: the {side}x{side} {what} does not round-trip through the "
                             f"VQ-VAE (two stride-2 convs, two x2 transposed convs); use one of {ok}"
                             + ("" if tiles in (1, k) else " as vqvae.split_ks"))
      m = self.model
      if m.layout == "nchw_chunks" and (m.channels * latent_side(side) ** 2) % m.embedding_dim:
        raise VQDefenseError(f"vqvae.embedding_dim {m.embedding_dim} does not divide the "
                             f"{m.channels * latent_side(side) ** 2} latent values of a {side}x{side} input "
                             "(layout nchw_chunks)")

  def kind(self, tiles: int, training: str = "clean") -> VQKind:
    return VQKind(tiles, training, self.split_k)

  @property
  def paper_kinds(self) -> tuple[VQKind, VQKind]:
    """(No-Split, Split), clean-trained."""
    return self.kind(1), self.kind(self.split_k)

  def split_kind(self, k: int) -> VQKind:
    """The clean kind whose model the Split purifier uses with k×k tiles (k = 1: the No-Split VQ-VAE)."""
    return self.kind(k)

  @property
  def kinds(self) -> tuple[VQKind, ...]:
    """Every kind to train, in training order: No-Split and Split per training mode, then finer splits."""
    kinds = [self.kind(t, mode) for mode in self.training for t in (1, self.split_k)]
    return tuple(kinds + [kk for kk in dict.fromkeys(self.split_kind(k) for k in self.split_ks) if kk not in kinds])
