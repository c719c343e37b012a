"""Signed-gradient attacks over a whole ε vector: FGSM (Goodfellow et al. 2015) and PGD (Madry et al. 2018).

Each returns x_adv of shape (E, B, H, W, C) for the ε vector (E,), with ‖x_adv − x‖∞ ≤ ε and x_adv ∈ [0, 1].
FGSM is one signed-gradient step of size ε (one gradient serves every ε). PGD takes `steps` steps of size
`step_size`·ε, projected to the ε-ball and [0, 1], from a uniform random start in the ball when
`random_start` (drawn per image from `key` and the image's index, so results do not depend on how the test
set is chunked).
"""

import jax
import jax.numpy as jnp

from vqdefense_jax.core.attacks.losses import LogitsFn, loss_grad
from vqdefense_jax.core.errors import VQDefenseError


def fgsm_sign(logits_fn: LogitsFn, x_BxHxWxC: jnp.ndarray, y_B: jnp.ndarray) -> jnp.ndarray:
  return jnp.sign(loss_grad(logits_fn, x_BxHxWxC, y_B))


def eps_like(eps_E, x):
  return jnp.asarray(eps_E, x.dtype).reshape((-1,) + (1,) * x.ndim)


def fgsm(logits_fn: LogitsFn, x_BxHxWxC: jnp.ndarray, y_B: jnp.ndarray, eps_E: jnp.ndarray) -> jnp.ndarray:
  """x_adv = clip(x + ε·sign ∇ₓ, 0, 1) for every ε at once: (E, B, H, W, C).

  The sign does not depend on ε, so one gradient serves the whole ε vector by
  broadcasting. ε is in pixel units (the paper's tables label ε ×10).
  """
  sign = fgsm_sign(logits_fn, x_BxHxWxC, y_B)
  return jnp.clip(x_BxHxWxC[None] + eps_like(eps_E, x_BxHxWxC) * sign[None], 0.0, 1.0)


def fgsm_pairs(logits_fn: LogitsFn, x_BxHxWxC: jnp.ndarray, y_B: jnp.ndarray, eps_choices, key: jax.Array):
  """Defense-VAE training inputs: each image FGSM-attacked at an ε drawn from `eps_choices`.

  Returns (x_adv, ε per image); ‖x_adv[b] − x[b]‖∞ ≤ ε[b].
  """
  eps_B = jax.random.choice(key, jnp.asarray(eps_choices, x_BxHxWxC.dtype), (x_BxHxWxC.shape[0],))
  return fgsm_per_image(logits_fn, x_BxHxWxC, y_B, eps_B), eps_B


def fgsm_per_image(logits_fn: LogitsFn, x_BxHxWxC: jnp.ndarray, y_B: jnp.ndarray, eps_B: jnp.ndarray) -> jnp.ndarray:
  """FGSM with image b's own ε: clip(x[b] + ε[b]·sign ∇ₓ, 0, 1), shape (B, H, W, C)."""
  sign = fgsm_sign(logits_fn, x_BxHxWxC, y_B)
  return jnp.clip(x_BxHxWxC + eps_B.reshape((-1,) + (1,) * (x_BxHxWxC.ndim - 1)) * sign, 0.0, 1.0)


def start(x: jnp.ndarray, eps: jnp.ndarray, random_start: bool, key: jax.Array | None,
           index_B: jnp.ndarray | None) -> jnp.ndarray:
  """(E, B, H, W, C) starting points: x, or uniform in each ε-ball from (key, image index)."""
  x_ExB = jnp.broadcast_to(x[None], (eps.shape[0],) + x.shape)
  if not random_start:
    return x_ExB
  if key is None:
    raise VQDefenseError("an iterative attack with a random start needs a PRNG key")
  index_B = jnp.arange(x.shape[0]) if index_B is None else index_B
  noise = jax.vmap(lambda i: jax.random.uniform(jax.random.fold_in(key, i), x_ExB.shape[:1] + x.shape[1:],
                                                x.dtype, -1.0, 1.0))(index_B)   # (B, E, H, W, C)
  return jnp.clip(x_ExB + eps * jnp.swapaxes(noise, 0, 1), 0.0, 1.0)


def pgd(logits_fn: LogitsFn, x_BxHxWxC: jnp.ndarray, y_B: jnp.ndarray, eps_E: jnp.ndarray, *, steps: int,
        step_size: float, random_start: bool, key: jax.Array | None = None,
        index_B: jnp.ndarray | None = None, loss: str = "ce") -> jnp.ndarray:
  """L∞ PGD for every ε at once: (E, B, H, W, C); all E·B images advance in one batch per step.

  `key` and `index_B` (each image's index in the test set) draw the random
  start; without `index_B` the position in the batch is used.
  """
  x = x_BxHxWxC
  eps = eps_like(eps_E, x)                                         # (E, 1, 1, 1, 1)
  x_ExB = start(x, eps, random_start, key, index_B)
  y_EB = jnp.tile(y_B, eps.shape[0])
  flat = lambda a: a.reshape((-1,) + x.shape[1:])

  def step(x_adv, _):
    g = loss_grad(logits_fn, flat(x_adv), y_EB, loss).reshape(x_adv.shape)
    x_adv = x_adv + step_size * eps * jnp.sign(g)
    return jnp.clip(jnp.clip(x_adv, x[None] - eps, x[None] + eps), 0.0, 1.0), None

  return jax.lax.scan(step, x_ExB, None, length=steps)[0]
