"""Vector quantisation with EMA codebook updates, padded to K_max.

The codebook size is data, not shape: every codebook is allocated with K_max
rows and carries its real size `size` as an int32 scalar. Rows >= size are
masked out of the nearest-code search (distance +inf) and never updated, so
codebooks of every size share one compiled computation (and can be stacked).

A codebook is a plain dict pytree (checkpointable by orbax, stackable by vmap):
  embedding (K_max, D)  the codes e_k
  ema_w     (K_max, D)  EMA of the sum of inputs assigned to each code
  ema_count (K_max,)    EMA of the number of inputs assigned to each code
  size      ()          number of valid codes K
"""

from typing import Any

import jax
import jax.numpy as jnp

Codebook = dict[str, jnp.ndarray]
LAYOUTS = ("per_position", "nchw_chunks")


def init_codebook(rng: jax.Array, size: Any, k_max: int, dim: int) -> Codebook:
  """Codes ~ U(-1/K, 1/K) in the valid rows (as the authors' code), zeros elsewhere."""
  size = jnp.asarray(size, jnp.int32)
  valid_K = jnp.arange(k_max) < size
  emb_KxD = jax.random.uniform(rng, (k_max, dim), minval=-1.0, maxval=1.0) / size
  emb_KxD = jnp.where(valid_K[:, None], emb_KxD, 0.0)
  return dict(embedding=emb_KxD, ema_w=emb_KxD, ema_count=jnp.zeros((k_max,), jnp.float32), size=size)


def to_vectors(z_BxHxWxC: jnp.ndarray, layout: str, dim: int) -> jnp.ndarray:
  """Latent map -> (B, N, D) vectors to quantise.

  per_position: one D-vector per latent position (the standard VQ-VAE; D == C).
  nchw_chunks:  what the paper's authors' PyTorch code does: the (B, C, H, W)
    latent is reshaped row-major into rows of D values without moving channels
    last, so each vector holds pieces of several channels' spatial maps. The
    paper's numbers come from this layout.
  """
  b, h, w, c = z_BxHxWxC.shape
  if layout == "per_position":
    return z_BxHxWxC.reshape(b, h * w, c)
  if layout == "nchw_chunks":
    return z_BxHxWxC.transpose(0, 3, 1, 2).reshape(b, c * h * w // dim, dim)
  raise ValueError(f"unknown codebook layout {layout!r}; expected one of {LAYOUTS}")


def from_vectors(v_BxNxD: jnp.ndarray, shape_BHWC: tuple[int, ...], layout: str) -> jnp.ndarray:
  """Exact inverse of `to_vectors`."""
  b, h, w, c = shape_BHWC
  if layout == "per_position":
    return v_BxNxD.reshape(b, h, w, c)
  if layout == "nchw_chunks":
    return v_BxNxD.reshape(b, c, h, w).transpose(0, 2, 3, 1)
  raise ValueError(f"unknown codebook layout {layout!r}; expected one of {LAYOUTS}")


def valid_mask(codebook: Codebook) -> jnp.ndarray:
  return jnp.arange(codebook["embedding"].shape[0]) < codebook["size"]


def nearest_code(codebook: Codebook, x_NxD: jnp.ndarray) -> jnp.ndarray:
  """Index of the nearest valid code for each row (padded codes are never chosen)."""
  emb_KxD = codebook["embedding"]
  # |x|² − 2·x·eᵀ + |e|², at full precision: TF32 matmuls on GPUs can flip argmins.
  dot_NxK = jnp.dot(x_NxD, emb_KxD.T, precision=jax.lax.Precision.HIGHEST)
  dist_NxK = (jnp.sum(x_NxD**2, -1, keepdims=True) - 2 * dot_NxK + jnp.sum(emb_KxD**2, -1)[None])
  dist_NxK = jnp.where(valid_mask(codebook)[None], dist_NxK, jnp.inf)
  return jnp.argmin(dist_NxK, axis=-1)


def straight_through(x: jnp.ndarray, q: jnp.ndarray) -> jnp.ndarray:
  """Forward value q, gradient the identity w.r.t. x (the encoder gets the decoder's gradient)."""
  return x + jax.lax.stop_gradient(q - x)


def ema_update(codebook: Codebook, x_NxD: jnp.ndarray, idx_N: jnp.ndarray, decay: float,
               epsilon: float) -> Codebook:
  """One EMA step (van den Oord et al. 2017, App. A.1) with Laplace-smoothed counts.

  Only the `size` valid rows change; padded rows are carried through untouched.
  """
  k_max = codebook["embedding"].shape[0]
  valid_K = valid_mask(codebook)
  size = codebook["size"].astype(jnp.float32)
  onehot_NxK = jax.nn.one_hot(idx_N, k_max, dtype=x_NxD.dtype)
  count_K = decay * codebook["ema_count"] + (1 - decay) * onehot_NxK.sum(0)
  n = jnp.sum(jnp.where(valid_K, count_K, 0.0))
  # Laplace smoothing keeps unused codes from dividing by zero.
  count_K = (count_K + epsilon) / (n + size * epsilon) * n
  dw_KxD = jnp.dot(onehot_NxK.T, x_NxD, precision=jax.lax.Precision.HIGHEST)
  ema_w_KxD = decay * codebook["ema_w"] + (1 - decay) * dw_KxD
  emb_KxD = ema_w_KxD / count_K[:, None]
  keep = lambda new, old: jnp.where(valid_K.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)
  return dict(embedding=keep(emb_KxD, codebook["embedding"]), ema_w=keep(ema_w_KxD, codebook["ema_w"]),
              ema_count=keep(count_K, codebook["ema_count"]), size=codebook["size"])


def usage_from_counts(count_K: jnp.ndarray, size: jnp.ndarray) -> dict[str, jnp.ndarray]:
  """Perplexity of a code histogram and the share of the `size` valid codes it never uses."""
  p_K = count_K / jnp.maximum(count_K.sum(), 1)
  perplexity = jnp.exp(-jnp.sum(jnp.where(p_K > 0, p_K * jnp.log(jnp.where(p_K > 0, p_K, 1.0)), 0.0)))
  valid_K = jnp.arange(count_K.shape[0]) < size
  return dict(perplexity=perplexity, dead_code_share=jnp.sum(valid_K & (count_K == 0)) / size)


def usage(codebook: Codebook, idx_N: jnp.ndarray) -> dict[str, jnp.ndarray]:
  """Code usage of one batch of indices."""
  count_K = jnp.bincount(idx_N.reshape(-1), length=codebook["embedding"].shape[0])
  return usage_from_counts(count_K, codebook["size"])
