"""Cutting images into k×k tiles and putting them back, by reshape/transpose only."""

import jax.numpy as jnp

from vqdefense_jax.core.errors import VQDefenseError


def _check(side_h: int, side_w: int, k: int) -> None:
  if k < 1 or side_h % k or side_w % k:
    raise VQDefenseError(
        f"cannot split a {side_h}x{side_w} image into {k}x{k} tiles: k must be >= 1 and divide the image side")


def split(x_BxHxWxC: jnp.ndarray, k: int) -> jnp.ndarray:
  """(B, H, W, C) -> (B·k·k, H/k, W/k, C); each image's tiles in row-major order."""
  b, h, w, c = x_BxHxWxC.shape
  _check(h, w, k)
  x = x_BxHxWxC.reshape(b, k, h // k, k, w // k, c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(b * k * k, h // k, w // k, c)


def merge(tiles_NxhxwxC: jnp.ndarray, k: int) -> jnp.ndarray:
  """Exact inverse of `split`: (B·k·k, h, w, C) -> (B, k·h, k·w, C)."""
  n, h, w, c = tiles_NxhxwxC.shape
  if k < 1 or n % (k * k):
    raise VQDefenseError(f"cannot merge {n} tiles into {k}x{k} images")
  x = tiles_NxhxwxC.reshape(n // (k * k), k, k, h, w, c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(n // (k * k), k * h, k * w, c)
