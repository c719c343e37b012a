"""Mosaic de-identification: cell means by hand, idempotent on its own block grid, boxes of whole cells within the
configured range, and every box and mask a function of (seed, index) alone, whatever the batch."""

import jax.numpy as jnp
import numpy as np
import pytest

from vqdefense_jax.core.errors import VQDefenseError
from vqdefense_jax.restore import mosaic


def _images(n, shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).uniform(0, 1, (n,) + shape), jnp.float32)


def test_pixelate_replaces_every_cell_by_its_mean_including_cut_cells():
  x = np.random.default_rng(1).uniform(0, 1, (2, 7, 5, 3)).astype(np.float32)  # 3×3 cells: the last cut short
  out = np.asarray(mosaic.pixelate(jnp.asarray(x), 3))
  for r0 in range(0, 7, 3):
    for c0 in range(0, 5, 3):
      cell = x[:, r0:r0 + 3, c0:c0 + 3]
      expected = np.broadcast_to(cell.mean(axis=(1, 2), keepdims=True), cell.shape)
      np.testing.assert_allclose(out[:, r0:r0 + 3, c0:c0 + 3], expected, rtol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("shape,block,region", [((16, 16, 1), 4, "box"), ((12, 20, 3), 5, "box"),
                                                ((16, 16, 1), 4, "image"), ((10, 10, 1), 3, "image")])
def test_mosaic_is_idempotent_on_its_own_block_grid(shape, block, region):
  spec = mosaic.Mosaic(block=block, region=region, box_min=0.2, box_max=0.6)
  x, index = _images(8, shape), jnp.arange(8)
  once, mask = mosaic.deidentify(spec, 3, x, index)
  twice, mask2 = mosaic.deidentify(spec, 3, once, index)
  np.testing.assert_array_equal(mask, mask2)
  np.testing.assert_allclose(twice, once, atol=1e-6)
  m = np.asarray(mask, bool)
  np.testing.assert_array_equal(np.asarray(once)[~m], np.asarray(x)[~m])  # outside the box: the image itself
  changed = np.abs(np.asarray(once) - np.asarray(x)).max(axis=-1) > 1e-6
  assert changed[m].mean() > 0.9  # inside: (almost every pixel) replaced by its cell's mean
  if region == "image":
    assert m.all()


@pytest.mark.slow
def test_boxes_are_whole_cells_in_range_and_a_function_of_seed_and_index_alone():
  spec = mosaic.Mosaic(block=4, region="box", box_min=0.25, box_max=0.75)   # 24 px: 6 cells, box 2..4 (rounded)
  hw = (24, 24)
  index = jnp.arange(200)
  box = np.asarray(mosaic.boxes(spec, 7, index, hw))
  top, left, bottom, right = box.T
  assert np.all(box % 4 == 0)
  for side in (bottom - top, right - left):
    assert side.min() >= 8 and side.max() <= 16
    assert set(np.unique(side)) == {8, 12, 16}    # every allowed size is drawn
  assert top.min() >= 0 and left.min() >= 0 and bottom.max() <= 24 and right.max() <= 24
  assert len({tuple(b) for b in box}) > 50       # boxes differ between images
  # The same (seed, index) gives the same box in any batch; another seed gives other boxes.
  some = jnp.asarray([199, 3, 42])
  np.testing.assert_array_equal(mosaic.boxes(spec, 7, some, hw), box[np.asarray(some)])
  assert not np.array_equal(np.asarray(mosaic.boxes(spec, 8, index, hw)), box)
  x = _images(200, (24, 24, 1))
  out, mask = mosaic.deidentify(spec, 7, x, index)
  out_some, mask_some = mosaic.deidentify(spec, 7, x[np.asarray(some)], some)
  np.testing.assert_array_equal(mask_some, mask[np.asarray(some)])
  np.testing.assert_allclose(out_some, out[np.asarray(some)], atol=1e-6)  # cell means: summation order only
  np.testing.assert_array_equal(mask, mosaic.box_mask(jnp.asarray(box), hw))
  np.testing.assert_array_equal(np.asarray(mask).sum(axis=(1, 2)), (bottom - top) * (right - left))


def test_bad_mosaic_settings_are_clear_errors():
  for block in (0, 1):  # a 1-pixel block would "restore" an unchanged image
    with pytest.raises(VQDefenseError, match="mosaic.block"):
      mosaic.Mosaic(block=block)
  with pytest.raises(VQDefenseError, match="mosaic.region"):
    mosaic.Mosaic(region="face")
  with pytest.raises(VQDefenseError, match="box_min <= box_max"):
    mosaic.Mosaic(box_min=0.6, box_max=0.5)
  with pytest.raises(VQDefenseError, match="larger than the image side"):
    mosaic.Mosaic(block=32).cells(24)
