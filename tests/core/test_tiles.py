import chex
import jax
import numpy as np
import pytest

from vqdefense_jax.core.errors import VQDefenseError
from vqdefense_jax.core.tiles import merge, split


@pytest.mark.slow
@pytest.mark.parametrize("k", [1, 2, 3, 4, 6])
def test_split_then_merge_is_identity_and_tiles_are_the_right_pixels(k):
  x = jax.random.uniform(jax.random.key(k), (3, 24, 24, 2))
  tiles = split(x, k)
  chex.assert_shape(tiles, (3 * k * k, 24 // k, 24 // k, 2))
  t = 24 // k
  for b, i, j in [(0, 0, 0), (2, k - 1, 0), (1, k // 2, k - 1)]:
    np.testing.assert_array_equal(tiles[b * k * k + i * k + j], x[b, i * t:(i + 1) * t, j * t:(j + 1) * t])
  np.testing.assert_array_equal(merge(tiles, k), x)
  np.testing.assert_array_equal(split(merge(tiles, k), k), tiles)


def test_split_rejects_sides_not_divisible_by_k():
  with pytest.raises(VQDefenseError, match="divide"):
    split(np.zeros((1, 24, 24, 1)), 5)
  with pytest.raises(VQDefenseError):
    merge(np.zeros((3, 12, 12, 1)), 2)
