"""What the attacks maximise, per image: cross-entropy, Croce & Hein's DLR and its targeted form, the margin.

All take logits (B, K) and return (B,). `loss_and_grad` differentiates the sum over images (they do not
interact), so each image's gradient is its own loss's.
"""

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from vqdefense_jax.core.errors import VQDefenseError

LogitsFn = Callable[[jnp.ndarray], jnp.ndarray]
LOSSES = ("ce", "dlr")


def _true_and_other(logits_BxK: jnp.ndarray, y_B: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(z_y, max_{i≠y} z_i) per image."""
  z_y = jnp.take_along_axis(logits_BxK, y_B[:, None], axis=-1)[:, 0]
  other = jnp.max(jnp.where(jax.nn.one_hot(y_B, logits_BxK.shape[-1], dtype=bool), -jnp.inf, logits_BxK), axis=-1)
  return z_y, other


def margin(logits_BxK: jnp.ndarray, y_B: jnp.ndarray) -> jnp.ndarray:
  """z_y − max_{i≠y} z_i: positive while the image is classified right (the Square attack's loss)."""
  z_y, other = _true_and_other(logits_BxK, y_B)
  return z_y - other


def dlr(logits_BxK: jnp.ndarray, y_B: jnp.ndarray) -> jnp.ndarray:
  """Croce & Hein's difference of logits ratio per image: −(z_y − max_{i≠y} z_i) / (z_π1 − z_π3 + 10⁻¹²),
  with z_π1 ≥ z_π2 ≥ z_π3 the largest logits. Invariant to shifting and scaling the logits."""
  if logits_BxK.shape[-1] < 3:
    raise VQDefenseError(f"the DLR loss needs 3 or more classes, got {logits_BxK.shape[-1]}; use attack.loss='ce'")
  z_sorted = jnp.sort(logits_BxK, axis=-1)
  return -margin(logits_BxK, y_B) / (z_sorted[:, -1] - z_sorted[:, -3] + 1e-12)


def dlr_targeted(logits_BxK: jnp.ndarray, y_B: jnp.ndarray, target_B: jnp.ndarray) -> jnp.ndarray:
  """Croce & Hein's targeted DLR (APGD-T): −(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2 + 10⁻¹²); maximising it
  pushes the target logit z_t above the true one."""
  if logits_BxK.shape[-1] < 4:
    raise VQDefenseError(f"the targeted DLR loss needs 4 or more classes, got {logits_BxK.shape[-1]}")
  z_sorted = jnp.sort(logits_BxK, axis=-1)
  at = lambda i_B: jnp.take_along_axis(logits_BxK, i_B[:, None], axis=-1)[:, 0]
  return -(at(y_B) - at(target_B)) / (z_sorted[:, -1] - 0.5 * (z_sorted[:, -3] + z_sorted[:, -4]) + 1e-12)


def per_image_loss(logits_BxK: jnp.ndarray, y_B: jnp.ndarray, loss: str = "ce") -> jnp.ndarray:
  if loss == "dlr":
    return dlr(logits_BxK, y_B)
  return optax.softmax_cross_entropy_with_integer_labels(logits_BxK, y_B)


def loss_and_grad(logits_fn: LogitsFn, x_BxHxWxC: jnp.ndarray, y_B: jnp.ndarray,
                  loss: str = "ce") -> tuple[jnp.ndarray, jnp.ndarray]:
  """Each image's loss (B,) and ∇ₓ of their sum (images do not interact)."""
  per_image = lambda x: per_image_loss(logits_fn(x), y_B, loss)
  values, pullback = jax.vjp(per_image, x_BxHxWxC)
  return values, pullback(jnp.ones_like(values))[0]


def value_grad_logits(loss_fn: Callable[[jnp.ndarray], jnp.ndarray], logits_fn: LogitsFn, x: jnp.ndarray):
  """(loss (B,), ∇ₓ Σ loss, logits (B, K)) of `loss_fn(logits)` at x: one forward and one backward pass,
  the logits kept so an attack can tell which iterates fooled the model without another forward pass."""
  def with_logits(v):
    z = logits_fn(v)
    return loss_fn(z), z

  values, pullback, logits = jax.vjp(with_logits, x, has_aux=True)
  return values, pullback(jnp.ones_like(values))[0], logits


def loss_grad(logits_fn: LogitsFn, x_BxHxWxC: jnp.ndarray, y_B: jnp.ndarray, loss: str = "ce") -> jnp.ndarray:
  """∇ₓ of the summed loss (cross-entropy with the true labels by default), per image.

  Summed (not mean): tiny per-example gradients do not underflow; the sign is
  the same either way, and images do not interact.
  """
  return loss_and_grad(logits_fn, x_BxHxWxC, y_B, loss)[1]
