"""Grey-box FGSM (Goodfellow et al. 2015), as in the paper: the attacker sees the classifier only."""

from typing import Callable

import jax
import jax.numpy as jnp
import optax

LogitsFn = Callable[[jnp.ndarray], jnp.ndarray]


def fgsm_sign(logits_fn: LogitsFn, x_BxHxWxC: jnp.ndarray, y_B: jnp.ndarray) -> jnp.ndarray:
  """sign(∇ₓ CE(f(x), y)) with the true labels.

  The summed (not mean) loss keeps tiny per-example gradients from underflowing;
  the sign is the same either way.
  """
  loss = lambda x: optax.softmax_cross_entropy_with_integer_labels(logits_fn(x), y_B).sum()
  return jnp.sign(jax.grad(loss)(x_BxHxWxC))


def fgsm(logits_fn: LogitsFn, x_BxHxWxC: jnp.ndarray, y_B: jnp.ndarray, eps_E: jnp.ndarray) -> jnp.ndarray:
  """x_adv = clip(x + ε·sign, 0, 1) for every ε at once: (E, B, H, W, C).

  The sign does not depend on ε, so one gradient serves the whole ε vector by
  broadcasting. ε is in pixel units (the paper's tables label ε ×10).
  """
  sign = fgsm_sign(logits_fn, x_BxHxWxC, y_B)
  eps = jnp.asarray(eps_E, x_BxHxWxC.dtype).reshape((-1,) + (1,) * x_BxHxWxC.ndim)
  return jnp.clip(x_BxHxWxC[None] + eps * sign[None], 0.0, 1.0)
