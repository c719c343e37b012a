"""De-identification as data: mosaic (pixelation) over a box, every image's box a function of (seed, index).

Pixelation with block size b replaces every b×b cell of the image's block grid (cells start at pixel 0; the last
row and column of cells are cut short when b does not divide H or W) by the mean of its pixels, channel by
channel, as resizing a face down by b and back up with nearest neighbours does. Only the cells inside the
region change:
  region 'box'    a random rectangle of whole cells per image: its height and width in cells drawn from
                  [round(box_min · H/b), round(box_max · H/b)] (W likewise), its position uniformly among those
                  that fit, all from the key fold_in(key(seed), index);
  region 'image'  every cell (the box is the whole image).
mask_BxHxW is 1 on the mosaicked pixels. The box is made of whole cells, so mosaic is idempotent on its own
grid: mosaicking a mosaicked image again changes nothing (up to float rounding of the cell means).

A (mosaic, clean) training pair is (deidentify(x_i, i), x_i): no image is stored twice on disk, and the same
(seed, index) always gives the same box, whatever the batch or the order.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp

from vqdefense_jax.core.errors import VQDefenseError

REGIONS = ("box", "image")


@dataclasses.dataclass(frozen=True)
class Mosaic:
  """The `mosaic` config section: block size, region, and the box's side range (fractions of the image side)."""
  block: int = 4
  region: str = "box"
  box_min: float = 0.3
  box_max: float = 0.5

  def __post_init__(self):
    if not 2 <= self.block <= 256:  # a block of 1 pixel changes nothing: there would be nothing to restore
      raise VQDefenseError(f"mosaic.block must be in 2..256 (1 leaves the image unchanged), got {self.block}")
    if self.region not in REGIONS:
      raise VQDefenseError(f"mosaic.region must be one of {', '.join(REGIONS)}, not {self.region!r}")
    if not 0 < self.box_min <= self.box_max <= 1:
      raise VQDefenseError(f"mosaic.box_min and mosaic.box_max must satisfy 0 < box_min <= box_max <= 1, got "
                           f"{self.box_min} and {self.box_max}")

  @classmethod
  def from_config(cls, s) -> "Mosaic":
    return cls(int(s.block), s.region, float(s.box_min), float(s.box_max))

  def cells(self, size: int) -> tuple[int, int, int]:
    """For an image side of `size` pixels: (cells on the side, least and most cells of the box's side)."""
    if self.block > size:
      raise VQDefenseError(f"mosaic.block={self.block} is larger than the image side {size}")
    n = -(-size // self.block)
    lo = min(n, max(1, round(self.box_min * n)))
    return n, lo, min(n, max(lo, round(self.box_max * n)))


def boxes(spec: Mosaic, seed: int, index_B: jax.Array, hw: tuple[int, int]) -> jax.Array:
  """(B, 4) int32 boxes (top, left, bottom, right) in pixels, bottom and right exclusive, of images `index_B`."""
  h, w = hw
  if spec.region == "image":
    return jnp.tile(jnp.array([[0, 0, h, w]], jnp.int32), (index_B.shape[0], 1))
  (nh, lo_h, hi_h), (nw, lo_w, hi_w) = spec.cells(h), spec.cells(w)

  def one(i):
    k_h, k_w, k_top, k_left = jax.random.split(jax.random.fold_in(jax.random.key(seed), i), 4)
    bh = jax.random.randint(k_h, (), lo_h, hi_h + 1)
    bw = jax.random.randint(k_w, (), lo_w, hi_w + 1)
    top = jax.random.randint(k_top, (), 0, nh - bh + 1)
    left = jax.random.randint(k_left, (), 0, nw - bw + 1)
    b = spec.block
    return jnp.stack([top * b, left * b, jnp.minimum((top + bh) * b, h), jnp.minimum((left + bw) * b, w)])

  return jax.vmap(one)(jnp.asarray(index_B, jnp.int32)).astype(jnp.int32)


def box_mask(box_Bx4: jax.Array, hw: tuple[int, int]) -> jax.Array:
  """(B, H, W) float32: 1 inside each box, 0 outside."""
  rows, cols = jnp.arange(hw[0]), jnp.arange(hw[1])
  in_rows = (rows[None] >= box_Bx4[:, 0:1]) & (rows[None] < box_Bx4[:, 2:3])
  in_cols = (cols[None] >= box_Bx4[:, 1:2]) & (cols[None] < box_Bx4[:, 3:4])
  return (in_rows[:, :, None] & in_cols[:, None, :]).astype(jnp.float32)


def pixelate(x_BxHxWxC: jax.Array, block: int) -> jax.Array:
  """Every cell of the block grid replaced by its mean (per channel); cells cut short at the border average their
  own pixels only."""
  bsz, h, w, c = x_BxHxWxC.shape
  nh, nw = -(-h // block), -(-w // block)
  pad = ((0, 0), (0, nh * block - h), (0, nw * block - w), (0, 0))
  cells = lambda a: jnp.pad(a, pad).reshape(a.shape[0], nh, block, nw, block, a.shape[-1]).sum(axis=(2, 4))
  mean_BxNhxNwxC = cells(x_BxHxWxC) / cells(jnp.ones((1, h, w, 1), x_BxHxWxC.dtype))
  up = jnp.repeat(jnp.repeat(mean_BxNhxNwxC, block, axis=1), block, axis=2)
  return up[:, :h, :w]


@functools.partial(jax.jit, static_argnums=(0, 1))
def deidentify(spec: Mosaic, seed: int, x_BxHxWxC: jax.Array, index_B: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(mosaicked images, mask_BxHxW) of images `x` whose dataset indices are `index_B`."""
  hw = x_BxHxWxC.shape[1:3]
  mask_BxHxW = box_mask(boxes(spec, seed, index_B, hw), hw)
  out = jnp.where(mask_BxHxW[..., None] > 0, pixelate(x_BxHxWxC, spec.block), x_BxHxWxC)
  return out, mask_BxHxW
