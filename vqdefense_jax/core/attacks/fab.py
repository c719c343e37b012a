"""FAB-T: Croce & Hein's (ICML 2020) fast adaptive boundary attack, targeted, L∞, as AutoAttack's standard
version runs it (the third attack of the suite).

FAB looks for the smallest perturbation that changes the prediction. At x⁽ᵏ⁾ it linearises the decision
boundary between the true class y and the target t, g(z) = z_t − z_y ≈ g(x⁽ᵏ⁾) + ∇g·(z − x⁽ᵏ⁾), and
projects both x⁽ᵏ⁾ and the clean x onto {g = 0} ∩ [0, 1]ᵈ in L∞ (`projection_linf`, giving δ₁ and δ₂). It
steps to x⁽ᵏ⁺¹⁾ = clip((1 − α)(x⁽ᵏ⁾ + η δ₁) + α(x + η δ₂), 0, 1), with α = min(‖δ₁‖∞ / (‖δ₁‖∞ + ‖δ₂‖∞),
α_max), which biases the step towards the clean image; once a point is adversarial it keeps the smallest
such point and steps back towards x: x⁽ᵏ⁺¹⁾ ← x + β(x⁽ᵏ⁺¹⁾ − x). η = 1.05, β = 0.9, α_max = 0.1, no random
start (AutoAttack's standard settings). The attack succeeds on an item only if the smallest adversarial
point it found lies within ε; otherwise it returns the clean image.
"""

import math

import jax
import jax.numpy as jnp

from vqdefense_jax.core.attacks import items
from vqdefense_jax.core.attacks.autopgd import target_of_rank
from vqdefense_jax.core.attacks.losses import LogitsFn
from vqdefense_jax.core.errors import VQDefenseError

FAB_ETA = 1.05       # overshoot of the projection step
FAB_BETA = 0.9       # backward step towards the clean image after an adversarial point
FAB_ALPHA_MAX = 0.1  # largest weight of the step from the clean image


def projection_linf(t_MxD: jnp.ndarray, w_MxD: jnp.ndarray, b_M: jnp.ndarray) -> jnp.ndarray:
  """d of smallest ‖d‖∞ with w·(t + d) = b and t + d ∈ [0, 1]ᵈ, per row; where the hyperplane misses the box,
  the d that comes closest (Croce & Hein's sort-and-bisect algorithm, as in their reference code).

  With the sign of w·t − b folded into w and b, moving coordinate i towards a_i (0 or 1, the end that lowers
  w·z) changes w·z at rate |w_i|, until it reaches the box; the optimum moves every coordinate by λ (or until
  it hits the box) for the smallest λ that reaches the hyperplane. Sorting the coordinates by how far they can
  move turns finding λ into a bisection over ⌈log₂ D⌉ steps.
  """
  m, d = t_MxD.shape
  rows = jnp.arange(m)[:, None]
  sign = 2.0 * ((jnp.sum(w_MxD * t_MxD, axis=1) - b_M) >= 0) - 1.0
  w, b = w_MxD * sign[:, None], b_M * sign
  a = (w < 0).astype(t_MxD.dtype)
  nonzero = w != 0
  dd = jnp.where(nonzero, a - t_MxD, 0.0)
  p = a - t_MxD * (2.0 * a - 1.0)
  indp = jnp.argsort(p, axis=1)
  b = b - jnp.sum(w * t_MxD, axis=1)
  b0 = jnp.sum(w * dd, axis=1)
  indp2 = indp[:, ::-1]
  ws = jnp.take_along_axis(w, indp2, axis=1)
  bs2 = -ws * jnp.take_along_axis(dd, indp2, axis=1)
  s = jnp.cumsum(jnp.abs(ws), axis=1)
  sb = jnp.cumsum(bs2, axis=1) + b0[:, None]
  b2 = sb[:, -1] - s[:, -1] * jnp.take_along_axis(p, indp[:, :1], axis=1)[:, 0]
  c_l = b - b2 > 0
  c2 = (b - b0 > 0) & ~c_l

  def bisect(_, bounds):
    lb, ub = bounds
    mid = jnp.floor((lb + ub) / 2)
    k = mid.astype(jnp.int32)[:, None]
    ind = jnp.take_along_axis(indp, d - 1 - k, axis=1)
    b_mid = (jnp.take_along_axis(sb, k, axis=1) - jnp.take_along_axis(s, k, axis=1)
             * jnp.take_along_axis(p, ind, axis=1))[:, 0]
    c = b - b_mid > 0
    return jnp.where(c, mid, lb), jnp.where(c, ub, mid)

  init = (jnp.zeros(m, t_MxD.dtype), jnp.full((m,), d - 1, t_MxD.dtype))
  lb = jax.lax.fori_loop(0, math.ceil(math.log2(d)) if d > 1 else 0, bisect, init)[0].astype(jnp.int32)
  safe = lambda num, den: jnp.where(den != 0, num / jnp.where(den != 0, den, 1.0), 0.0)
  lam_l = jnp.maximum(safe(b - sb[:, -1], -s[:, -1]), 0.0)[:, None]
  lam_2 = jnp.maximum(safe(b - sb[rows[:, 0], lb], -s[rows[:, 0], lb]), 0.0)[:, None]
  d_l = (2.0 * a - 1.0) * lam_l
  d_2 = jnp.minimum(lam_2, dd) * a + jnp.maximum(-lam_2, dd) * (1.0 - a)
  out = jnp.where(c_l[:, None], d_l, jnp.where(c2[:, None], d_2, dd))
  return jnp.where(nonzero, out, 0.0)


def fab_run(logits_fn: LogitsFn, x0_N: jnp.ndarray, y_N: jnp.ndarray, target_N: jnp.ndarray, steps: int,
            trace: bool = False):
  """One targeted FAB run from the clean images (no random start). Returns (adv_N, dist_N): the smallest
  adversarial point found and its ‖·‖∞ distance from x0 (∞ where none was found); with `trace`, also the
  distance after every step (steps, N)."""
  n = x0_N.shape[0]
  flat = lambda v: v.reshape(n, -1)
  per = lambda v: items.per_item(v, x0_N)
  at = lambda z, i: jnp.take_along_axis(z, i[:, None], axis=-1)[:, 0]

  def boundary(v):  # g(v) = z_t − z_y per item (what AutoAttack differentiates: −(z_y − z_t))
    z = logits_fn(v)
    return at(z, target_N) - at(z, y_N)

  def step(carry, _):
    x1, adv, dist = carry
    g, pullback = jax.vjp(boundary, x1)
    dg = pullback(jnp.ones_like(g))[0]
    w = flat(dg)
    b = -g + jnp.sum(w * flat(x1), axis=1)
    d3 = projection_linf(jnp.concatenate([flat(x1), flat(x0_N)]), jnp.concatenate([w, w]), jnp.concatenate([b, b]))
    d1, d2 = d3[:n].reshape(x0_N.shape), d3[n:].reshape(x0_N.shape)
    a0 = jnp.maximum(jnp.max(jnp.abs(d3), axis=1), 1e-8)
    a1, a2 = a0[:n], a0[n:]
    alpha = jnp.clip(a1 / (a1 + a2), 0.0, FAB_ALPHA_MAX)
    x1 = jnp.clip((x1 + FAB_ETA * d1) * per(1.0 - alpha) + (x0_N + d2 * FAB_ETA) * per(alpha), 0.0, 1.0)
    is_adv = jnp.argmax(logits_fn(x1), -1) != y_N
    t = jnp.max(jnp.abs(flat(x1 - x0_N)), axis=1)
    closer = is_adv & (t < dist)
    adv, dist = jnp.where(per(closer), x1, adv), jnp.where(closer, t, dist)
    x1 = jnp.where(per(is_adv), x0_N + (x1 - x0_N) * FAB_BETA, x1)
    return (x1, adv, dist), dist if trace else None

  init = (x0_N, x0_N, jnp.full((n,), jnp.inf, x0_N.dtype))
  (_, adv, dist), history = jax.lax.scan(step, init, None, length=steps)
  return (adv, dist, history) if trace else (adv, dist)


def fab_targeted(logits_fn: LogitsFn, x0_N, y_N, eps_N, clean_logits_NxK, active_N, *, steps: int, targets: int,
                 batch: int):
  """AutoAttack's FAB-T on items: for target ranks 2 … targets + 1 in turn, one FAB run on the still-active
  items (`items.compact`, `batch` at a time); an item is fooled when the run found an adversarial point within
  its ε. Returns (x_adv_N, fooled_N), x_adv = x0 where not fooled."""
  if not 1 <= targets < clean_logits_NxK.shape[-1]:
    raise VQDefenseError(f"FAB-T: attack.targets must be in 1..{clean_logits_NxK.shape[-1] - 1} (the other "
                         f"classes), got {targets}")

  def one_target(rank, state):
    def attack(a):
      adv, dist = fab_run(logits_fn, a["x0"], a["y"], target_of_rank(a["logits"], rank), steps)
      ok = dist <= a["eps"]
      # Within ε already; the projection only guards the bound against rounding.
      return jnp.where(items.per_item(ok, adv), items.project(adv, a["x0"], a["eps"]), a["x0"]), ok

    args = dict(x0=x0_N, y=y_N, eps=eps_N, logits=clean_logits_NxK)
    return items.compact(attack, active_N & ~state[1], args, state, batch)

  return jax.lax.fori_loop(2, targets + 2, one_target, (x0_N, jnp.zeros_like(active_N)))
