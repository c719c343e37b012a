"""PSNR and SSIM over the box and the whole image, checked against dm_pix and a hand computation, independent of
how the images are batched."""

import dm_pix
import jax.numpy as jnp
import numpy as np
import pytest

from vqdefense_jax.restore import quality


def _pair(n=6, shape=(16, 16, 1), seed=0):
  rng = np.random.default_rng(seed)
  b = rng.uniform(0, 1, (n,) + shape).astype(np.float32)
  a = np.clip(b + rng.normal(0, 0.1, b.shape), 0, 1).astype(np.float32)
  mask = np.zeros((n,) + shape[:2], np.float32)
  for i in range(n):
    mask[i, i:i + 5, 2 * i:2 * i + 4] = 1
  return a, b, mask


@pytest.mark.slow
def test_psnr_is_pooled_over_the_region_and_equals_dm_pix_over_whole_images():
  a, b, mask = _pair()
  r = quality.summarise(a, b, mask)
  sq = (a - b) ** 2
  box = mask[..., None].astype(bool) & np.ones_like(a, bool)
  np.testing.assert_allclose(r["psnr"]["box"], -10 * np.log10(sq[box].mean()), rtol=1e-5)
  np.testing.assert_allclose(r["psnr"]["image"], -10 * np.log10(np.mean(dm_pix.mse(a, b))), rtol=1e-5)
  one = quality.summarise(a[:1], b[:1], mask[:1])
  np.testing.assert_allclose(one["psnr"]["image"], dm_pix.psnr(a[0], b[0]), rtol=1e-5)
  # An exact box (a mosaic of flat background) has an infinite PSNR of its own; pooled, it only adds zeros.
  b2 = b.copy()
  b2[0][mask[0].astype(bool)] = a[0][mask[0].astype(bool)]
  sq2 = (a - b2) ** 2
  np.testing.assert_allclose(quality.summarise(a, b2, mask)["psnr"]["box"], -10 * np.log10(sq2[box].mean()),
                             rtol=1e-5)


@pytest.mark.slow
def test_ssim_map_is_dm_pixs_inside_the_image_and_averages_over_each_box():
  a, b, mask = _pair(shape=(20, 20, 3))
  size, half = 7, 3
  ours = np.asarray(dm_pix.ssim(jnp.asarray(a), jnp.asarray(b), return_map=True,
                                filter_fn=quality.reflect_filter(size, 1.5)))
  valid = np.asarray(dm_pix.ssim(jnp.asarray(a), jnp.asarray(b), return_map=True, filter_size=size))
  np.testing.assert_allclose(ours[:, half:-half, half:-half], valid, rtol=1e-4, atol=1e-5)
  r = quality.summarise(a, b, mask, ssim_size=size)
  per_pixel = ours.mean(axis=-1)
  box = [per_pixel[i][mask[i].astype(bool)].mean() for i in range(len(a))]
  np.testing.assert_allclose(r["ssim"]["box"], np.mean(box), rtol=1e-5)
  np.testing.assert_allclose(r["ssim"]["image"], per_pixel.mean(), rtol=1e-5)
  same = quality.summarise(b, b, mask, ssim_size=size)
  np.testing.assert_allclose([same["ssim"]["box"], same["ssim"]["image"]], [1.0, 1.0], rtol=1e-5)
  assert same["psnr"]["image"] == float("inf")


@pytest.mark.slow
def test_summaries_do_not_depend_on_batching():
  a, b, mask = _pair(n=7)
  whole = quality.summarise(a, b, mask)
  batched = quality.summarise(a, b, mask, batch=3)
  for metric in ("psnr", "ssim"):
    for region in ("box", "image"):
      np.testing.assert_allclose(batched[metric][region], whole[metric][region], rtol=1e-5)
