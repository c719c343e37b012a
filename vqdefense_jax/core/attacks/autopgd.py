"""Croce & Hein's (ICML 2020) APGD, the first attack of AutoAttack, and its targeted form APGD-T.

x⁽¹⁾ = P(x⁽⁰⁾ + η sign ∇f(x⁽⁰⁾)) with η = 2ε; then z = P(x⁽ᵏ⁾ + η sign ∇f(x⁽ᵏ⁾)) and
x⁽ᵏ⁺¹⁾ = P(x⁽ᵏ⁾ + α(z − x⁽ᵏ⁾) + (1 − α)(x⁽ᵏ⁾ − x⁽ᵏ⁻¹⁾)), α = 0.75. At each checkpoint w_j (per image), if
fewer than ρ = 0.75 of the steps since w_{j−1} raised the loss, or neither η nor the best loss changed since
w_{j−1}, η is halved and the next step starts from the best point. `steps` (at least 2) gradient evaluations.

`apgd` is the grid's `apgd` attack: every ε at once, a uniform random start, and it returns the point of
highest loss. `apgd_targeted` is AutoAttack's APGD-T on flat items (items.py): for each of the `targets`
largest other logits of the clean image in turn, APGD on the targeted DLR loss, run only on the items no
earlier target fooled; like AutoAttack's code it starts at x + ε·t/‖t‖∞ (t uniform in [−1, 1]) and
returns the last iterate that fooled the model, if any did.
"""

import math

import jax
import jax.numpy as jnp

from vqdefense_jax.core.attacks import items
from vqdefense_jax.core.attacks.gradient import eps_like, start
from vqdefense_jax.core.attacks.losses import LogitsFn, dlr_targeted, per_image_loss, value_grad_logits
from vqdefense_jax.core.errors import VQDefenseError

APGD_MOMENTUM = 0.75  # α: the weight of the new step against the last one (Croce & Hein 2020)
APGD_RHO = 0.75       # ρ: halve the step when fewer than this share of the steps since the last checkpoint gained


def apgd_checkpoints(steps: int) -> tuple[int, ...]:
  """Croce & Hein's checkpoints w_j = ⌈p_j · steps⌉, with p_0 = 0, p_1 = 0.22 and
  p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06), up to the last one below `steps`."""
  p = [0.0, 0.22]
  while p[-1] + max(p[-1] - p[-2] - 0.03, 0.06) <= 1.0:
    p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
  w = {math.ceil(round(q * steps, 9)) for q in p}  # round: 0.57 · 100 is 57.000000000000007 in floating point
  return tuple(sorted(c for c in w if c < steps))


def apgd_items(logits_fn: LogitsFn, loss_fn, x0_N: jnp.ndarray, y_N: jnp.ndarray, eps_N: jnp.ndarray,
               x_start_N: jnp.ndarray, steps: int, trace: bool = False) -> dict:
  """APGD on flat items from `x_start_N`, maximising `loss_fn(logits)` (N,).

  Returns {'best_x', 'best_loss'}: the point of highest loss; {'adv_x', 'fooled'}: the last evaluated point
  where the model's prediction was not y (the start included), and whether there was one. With `trace`, also
  {'best_loss_steps', 'eta_steps'}: (steps, N) per gradient evaluation, for tests.
  """
  per = lambda v: items.per_item(v, x0_N)
  proj = lambda v: items.project(v, x0_N, eps_N)
  f_and_g = lambda v: value_grad_logits(loss_fn, logits_fn, v)
  wrong = lambda logits: jnp.argmax(logits, -1) != y_N

  f_start, g_start, z_start = f_and_g(x_start_N)
  eta = 2.0 * eps_N
  x_1 = proj(x_start_N + per(eta) * jnp.sign(g_start))
  f_1, g_1, z_1 = f_and_g(x_1)
  better = f_1 > f_start
  best_f, best_x = jnp.maximum(f_1, f_start), jnp.where(per(better), x_1, x_start_N)
  best_g = jnp.where(per(better), g_1, g_start)       # the gradient there: a restart from the best point needs it
  fooled = wrong(z_start) | wrong(z_1)
  adv_x = jnp.where(per(wrong(z_1)), x_1, x_start_N)
  checkpoints = apgd_checkpoints(steps)
  is_ckpt = jnp.asarray([k in checkpoints for k in range(steps)], bool)
  since = jnp.asarray([k - max([c for c in checkpoints if c < k], default=0) for k in range(steps)], jnp.float32)

  def step(carry, xs):
    x_prev, x_k, f_k, g_k, eta, best_f, best_x, best_g, gains, eta_ckpt, best_ckpt, adv_x, fooled = carry
    k_is_ckpt, k_since = xs
    z = proj(x_k + per(eta) * jnp.sign(g_k))
    x_next = proj(x_k + APGD_MOMENTUM * (z - x_k) + (1.0 - APGD_MOMENTUM) * (x_k - x_prev))
    f_next, g_next, logits = f_and_g(x_next)
    now_wrong = wrong(logits)
    adv_x, fooled = jnp.where(per(now_wrong), x_next, adv_x), fooled | now_wrong
    gains = gains + (f_next > f_k)
    improved = f_next > best_f
    best_f, best_x = jnp.where(improved, f_next, best_f), jnp.where(per(improved), x_next, best_x)
    best_g = jnp.where(per(improved), g_next, best_g)
    # A checkpoint: halve η and restart from the best point where progress stalled.
    stalled = (gains < APGD_RHO * k_since) | ((eta == eta_ckpt) & (best_f == best_ckpt))
    halve = k_is_ckpt & stalled
    eta_new = jnp.where(halve, eta / 2.0, eta)
    x_next = jnp.where(per(halve), best_x, x_next)
    f_next, g_next = jnp.where(halve, best_f, f_next), jnp.where(per(halve), best_g, g_next)
    gains = jnp.where(k_is_ckpt, 0.0, gains)
    eta_ckpt, best_ckpt = jnp.where(k_is_ckpt, eta, eta_ckpt), jnp.where(k_is_ckpt, best_f, best_ckpt)
    carry = (x_k, x_next, f_next, g_next, eta_new, best_f, best_x, best_g, gains, eta_ckpt, best_ckpt, adv_x,
             fooled)
    return carry, (best_f, eta_new) if trace else None

  init = (x_start_N, x_1, f_1, g_1, eta, best_f, best_x, best_g, jnp.zeros_like(eta), eta, best_f, adv_x, fooled)
  carry, history = jax.lax.scan(step, init, (is_ckpt[1:steps - 1], since[1:steps - 1]))
  out = dict(best_x=carry[6], best_loss=carry[5], adv_x=carry[11], fooled=carry[12])
  if trace:
    out["best_loss_steps"] = jnp.concatenate([jnp.stack([f_start, jnp.maximum(f_1, f_start)]), history[0]])
    out["eta_steps"] = jnp.concatenate([jnp.stack([2.0 * eps_N, 2.0 * eps_N]), history[1]])
  return out


def apgd(logits_fn: LogitsFn, x_BxHxWxC: jnp.ndarray, y_B: jnp.ndarray, eps_E: jnp.ndarray, *, steps: int,
         random_start: bool = True, key: jax.Array | None = None, index_B: jnp.ndarray | None = None,
         loss: str = "ce", trace: bool = False):
  """APGD for every ε at once: the point of highest loss, (E, B, H, W, C).

  The start is uniform in each ε-ball, drawn per image from `key` and `index_B`.
  With `trace`, also returns {'best_loss', 'eta'}: (steps, E·B) per step, for tests.
  """
  x = x_BxHxWxC
  eps = eps_like(eps_E, x)
  e, shape = eps.shape[0], x.shape[1:]
  flat = lambda a: a.reshape((-1,) + shape)
  x0 = flat(x[None] * jnp.ones_like(eps))                            # clean images, (E·B, ...)
  eps_N = jnp.broadcast_to(eps.reshape(e, 1), (e, x.shape[0])).reshape(-1)
  y_N = jnp.tile(y_B, e)
  x_start = flat(start(x, eps, random_start, key, index_B))
  res = apgd_items(logits_fn, lambda z: per_image_loss(z, y_N, loss), x0, y_N, eps_N, x_start, steps, trace)
  out = res["best_x"].reshape((e,) + x.shape)
  if not trace:
    return out
  return out, dict(best_loss=res["best_loss_steps"], eta=res["eta_steps"])


def autoattack_start(x0_N: jnp.ndarray, eps_N: jnp.ndarray, key_N: jax.Array) -> jnp.ndarray:
  """AutoAttack's APGD start: x + ε·t/‖t‖∞ with t uniform in [−1, 1] (one coordinate on the sphere), clipped."""
  t = jax.vmap(lambda k: jax.random.uniform(k, x0_N.shape[1:], x0_N.dtype, -1.0, 1.0))(key_N)
  t_max = jnp.max(jnp.abs(t).reshape(t.shape[0], -1), axis=-1)
  return jnp.clip(x0_N + items.per_item(eps_N / (t_max + 1e-12), t) * t, 0.0, 1.0)


def apgd_ce(logits_fn: LogitsFn, x0_N, y_N, eps_N, key_N, *, steps: int):
  """AutoAttack's APGD-CE on items: (x_adv_N, fooled_N); x_adv is the fooling point where there is one, else the
  point of highest loss."""
  res = apgd_items(logits_fn, lambda z: per_image_loss(z, y_N, "ce"), x0_N, y_N, eps_N,
                   autoattack_start(x0_N, eps_N, key_N), max(steps, 2))
  return jnp.where(items.per_item(res["fooled"], x0_N), res["adv_x"], res["best_x"]), res["fooled"]


def target_of_rank(clean_logits_NxK: jnp.ndarray, rank) -> jnp.ndarray:
  """The class with the `rank`-th largest clean logit (rank 2: the runner-up); `rank` may be traced."""
  order = jnp.argsort(clean_logits_NxK, axis=-1)
  return jnp.take_along_axis(order, (clean_logits_NxK.shape[-1] - rank) * jnp.ones((order.shape[0], 1), jnp.int32),
                             axis=-1)[:, 0]


def apgd_targeted(logits_fn: LogitsFn, x0_N, y_N, eps_N, key_N, clean_logits_NxK, active_N, *, steps: int,
                  targets: int, batch: int):
  """AutoAttack's APGD-T: for target ranks 2 … targets + 1 in turn, APGD on the targeted DLR loss, on the
  still-active items only (`items.compact`, `batch` at a time). Returns (x_adv_N, fooled_N) with x_adv = x0
  where no target fooled the model."""

  def one_target(rank, state):
    x_adv, fooled = state

    def attack(a):
      t = target_of_rank(a["logits"], rank)
      res = apgd_items(logits_fn, lambda z: dlr_targeted(z, a["y"], t), a["x0"], a["y"], a["eps"],
                       autoattack_start(a["x0"], a["eps"], jax.vmap(jax.random.fold_in, (0, None))(a["key"], rank)),
                       max(steps, 2))
      return jnp.where(items.per_item(res["fooled"], a["x0"]), res["adv_x"], a["x0"]), res["fooled"]

    args = dict(x0=x0_N, y=y_N, eps=eps_N, key=key_N, logits=clean_logits_NxK)
    return items.compact(attack, active_N & ~fooled, args, (x_adv, fooled), batch)

  if not 1 <= targets < clean_logits_NxK.shape[-1]:
    raise VQDefenseError(f"APGD-T: attack.targets must be in 1..{clean_logits_NxK.shape[-1] - 1} (the other "
                         f"classes), got {targets}")
  init = (x0_N, jnp.zeros_like(active_N))
  return jax.lax.fori_loop(2, targets + 2, one_target, init)
