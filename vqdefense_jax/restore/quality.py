"""Restoration quality against the clean image: PSNR and SSIM (dm_pix) over the mosaic box and the whole image.

  PSNR = 10·log10(1 / MSE), pixels in [0, 1]. MSE is pooled over the region's pixels of every test image
         (Σ (a - b)² · mask / Σ mask), so a box that is all background, which the mosaic leaves exact, cannot
         make it infinite. Over the whole image this is the PSNR of the mean of dm_pix's per-image MSE.
  SSIM   dm_pix's SSIM map (Gaussian window, σ = 1.5, Wang et al. 2004's constants) with the image reflected at
         its border by half a window, so the map covers every pixel (dm_pix's 'valid' map of a 24×24 image with
         an 11-pixel window would drop most of the image, and every box near the border). An image's SSIM over a
         region is the mean of its map there, averaged over channels; the reported value is the mean over
         images. Inside the image, away from the border, the map is dm_pix's own (tested).
"""

import functools

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np

from vqdefense_jax.core.errors import VQDefenseError

REGIONS = ("box", "image")


def gaussian(size: int, sigma: float) -> jax.Array:
  """dm_pix's 1-D SSIM window (odd sizes)."""
  f = jnp.exp(-0.5 * ((jnp.arange(size) - size // 2) / sigma) ** 2)
  return f / f.sum()


def reflect_filter(size: int, sigma: float):
  """A separable Gaussian blur of (B, H, W, C) images that keeps their size (reflection at the border), for
  `dm_pix.ssim(filter_fn=...)`."""
  if size < 1 or size % 2 == 0 or not sigma > 0:
    raise VQDefenseError(f"eval.ssim_filter_size must be an odd number >= 1 and eval.ssim_sigma > 0, got {size} "
                         f"and {sigma}")
  f, half = gaussian(size, sigma), size // 2

  def blur(z_BxHxWxC):
    h, w = z_BxHxWxC.shape[1:3]
    if half >= min(h, w):
      raise VQDefenseError(f"an SSIM window of {size} pixels needs images larger than {half} pixels a side")
    z = jnp.pad(z_BxHxWxC, ((0, 0), (half, half), (half, half), (0, 0)), mode="reflect")
    z = sum(f[t] * z[:, t:t + h] for t in range(size))
    return sum(f[t] * z[:, :, t:t + w] for t in range(size))

  return blur


@functools.partial(jax.jit, static_argnums=(3, 4))
def sums(a_BxHxWxC: jax.Array, b_BxHxWxC: jax.Array, mask_BxHxW: jax.Array, ssim_size: int = 11,
         ssim_sigma: float = 1.5) -> dict[str, jax.Array]:
  """Per-batch sums for `summarise`: squared error and pixel counts per region, and per-image region SSIMs."""
  ssim_map = dm_pix.ssim(a_BxHxWxC, b_BxHxWxC, return_map=True,
                         filter_fn=reflect_filter(ssim_size, ssim_sigma)).mean(axis=-1)  # (B, H, W)
  sq = jnp.square(a_BxHxWxC - b_BxHxWxC).mean(axis=-1)
  out = {}
  for region, m in (("box", mask_BxHxW), ("image", jnp.ones_like(mask_BxHxW))):
    area_B = m.sum(axis=(1, 2))
    out[f"sq_{region}"] = (sq * m).sum()
    out[f"n_{region}"] = area_B.sum()
    out[f"ssim_{region}"] = ((ssim_map * m).sum(axis=(1, 2)) / jnp.maximum(area_B, 1.0)).sum()
  return out


def summarise(a: np.ndarray, b: np.ndarray, mask: np.ndarray, ssim_size: int = 11, ssim_sigma: float = 1.5,
              batch: int = 500) -> dict[str, dict[str, float]]:
  """{'psnr': {'box': .., 'image': ..}, 'ssim': {...}} of images `a` against references `b` (N, H, W, C) in
  [0, 1], with the box masks (N, H, W)."""
  total: dict[str, float] = {}
  for i in range(0, len(a), batch):
    part = sums(jnp.asarray(a[i:i + batch]), jnp.asarray(b[i:i + batch]), jnp.asarray(mask[i:i + batch]),
                ssim_size, ssim_sigma)
    for k, v in part.items():
      total[k] = total.get(k, 0.0) + float(v)
  psnr = {r: float(-10 * np.log10(total[f"sq_{r}"] / total[f"n_{r}"])) if total[f"sq_{r}"] > 0 else float("inf")
          for r in REGIONS}
  return dict(psnr=psnr, ssim={r: total[f"ssim_{r}"] / len(a) for r in REGIONS})
