"""L∞ attacks over a whole ε vector: grey-box (the paper's) and white-box (they see the purifier).

Every attack returns x_adv of shape (E, B, H, W, C) for the ε vector (E,),
with ‖x_adv − x‖∞ ≤ ε and x_adv ∈ [0, 1]. What the attacker differentiates:

  fgsm, pgd, apgd                 grey-box: the classifier f only (the paper's threat model)
  bpda_fgsm, bpda_pgd, bpda_apgd  white-box BPDA (Athalye et al. 2018): f(p(x)) forward, the purifier p
                                  taken as the identity backward, i.e. ∇ₓ = ∇f evaluated at p(x)
  ste_fgsm, ste_pgd, ste_apgd     white-box: the true gradient of f(p(x)), through encoder, decoder
                                  and the quantiser's straight-through estimator

`*_fgsm` is one signed-gradient step of size ε (one gradient serves every ε);
`*_pgd` is Madry et al.'s PGD: `steps` steps of size `step_size`·ε, projected
to the ε-ball and [0, 1], from a uniform random start in the ball when
`random_start` (drawn per image from `key` and the image's index, so results do
not depend on how the test set is chunked). `*_apgd` is Croce & Hein's (2020)
APGD, the first attack of AutoAttack: step size 2ε halved at checkpoints when
progress stalls, momentum 0.75, and it returns the best point it visited.
Iterative attacks maximise the cross-entropy (`loss='ce'`) or the difference
of logits ratio (`loss='dlr'`, Croce & Hein's scale-invariant loss).
`restarts` is used by the grid: the per-image worst case over that many random
starts (purify/grid.py).
"""

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from vqdefense_jax.core.errors import VQDefenseError

LogitsFn = Callable[[jnp.ndarray], jnp.ndarray]
ImagesFn = Callable[[jnp.ndarray], jnp.ndarray]
ATTACKS = ("fgsm", "pgd", "apgd", "bpda_fgsm", "bpda_pgd", "bpda_apgd", "ste_fgsm", "ste_pgd", "ste_apgd")
LOSSES = ("ce", "dlr")
RESTART_PICKS = ("defended", "classifier")


@dataclasses.dataclass(frozen=True)
class Attack:
  """Hashable (a static argument of the jitted grid)."""
  name: str = "fgsm"
  steps: int = 10              # PGD / APGD iterations (gradient evaluations)
  step_size: float = 0.25      # PGD step, as a fraction of ε (APGD sets its own)
  random_start: bool = True    # PGD / APGD start uniformly in the ε-ball
  loss: str = "ce"             # what iterative attacks maximise: cross-entropy or difference of logits ratio
  restarts: int = 1            # random starts; the grid counts an image correct only if it survives all
  restart_pick: str = "defended"  # the grid's worst case over restarts: judged on the defended prediction, or
                                  # (grey-box attacks) the restart with the highest loss of the classifier alone

  def __post_init__(self):
    if self.name not in ATTACKS:
      raise VQDefenseError(f"unknown attack {self.name!r}; expected one of {', '.join(ATTACKS)}")
    if self.iterative and (self.steps < 1 or self.step_size <= 0):
      raise VQDefenseError(f"attack {self.name}: steps must be >= 1 and step_size > 0")
    if self.loss not in LOSSES or self.restart_pick not in RESTART_PICKS:
      raise VQDefenseError(f"attack loss must be one of {LOSSES} and restart_pick one of {RESTART_PICKS}, got "
                           f"{self.loss!r} and {self.restart_pick!r}")
    if not 1 <= self.restarts <= 1000 or (self.restarts > 1 and not (self.iterative and self.random_start)):
      raise VQDefenseError(f"attack {self.name}: restarts must be in 1..1000, and above 1 only for iterative attacks "
                           f"with a random start, got {self.restarts}")

  @property
  def gradient(self) -> str:
    """'classifier' (grey-box), 'bpda' or 'ste'."""
    return self.name.split("_")[0] if "_" in self.name else "classifier"

  @property
  def method(self) -> str:
    """'fgsm', 'pgd' or 'apgd'."""
    return self.name.split("_")[-1]

  @property
  def white_box(self) -> bool:
    return self.gradient != "classifier"

  @property
  def iterative(self) -> bool:
    return self.method != "fgsm"

  @property
  def threat_model(self) -> str:
    return "white-box" if self.white_box else "grey-box"

  def grey_box(self) -> "Attack":
    """The same attack against the classifier alone (what it is against an undefended classifier)."""
    return dataclasses.replace(self, name=self.method)


def target_fn(attack: Attack, logits_fn: LogitsFn, purify: ImagesFn | None) -> LogitsFn:
  """The function whose loss gradient the attack follows."""
  if purify is None or not attack.white_box:
    return logits_fn
  if attack.gradient == "bpda":
    return lambda x: logits_fn(x + jax.lax.stop_gradient(purify(x) - x))
  return lambda x: logits_fn(purify(x))


def dlr(logits_BxK: jnp.ndarray, y_B: jnp.ndarray) -> jnp.ndarray:
  """Croce & Hein's difference of logits ratio per image: −(z_y − max_{i≠y} z_i) / (z_π1 − z_π3 + 10⁻¹²),
  with z_π1 ≥ z_π2 ≥ z_π3 the largest logits. Invariant to shifting and scaling the logits."""
  if logits_BxK.shape[-1] < 3:
    raise VQDefenseError(f"the DLR loss needs 3 or more classes, got {logits_BxK.shape[-1]}; use attack.loss='ce'")
  z_sorted = jnp.sort(logits_BxK, axis=-1)
  z_y = jnp.take_along_axis(logits_BxK, y_B[:, None], axis=-1)[:, 0]
  other = jnp.max(jnp.where(jax.nn.one_hot(y_B, logits_BxK.shape[-1], dtype=bool), -jnp.inf, logits_BxK), axis=-1)
  return -(z_y - other) / (z_sorted[:, -1] - z_sorted[:, -3] + 1e-12)


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


def loss_grad(logits_fn: LogitsFn, x_BxHxWxC: jnp.ndarray, y_B: jnp.ndarray, loss: str = "ce") -> jnp.ndarray:
  """∇ₓ of the summed loss (cross-entropy with the true labels by default), per image.

  Summed (not mean): tiny per-example gradients do not underflow; the sign is
  the same either way, and images do not interact.
  """
  return loss_and_grad(logits_fn, x_BxHxWxC, y_B, loss)[1]


def fgsm_sign(logits_fn: LogitsFn, x_BxHxWxC: jnp.ndarray, y_B: jnp.ndarray) -> jnp.ndarray:
  return jnp.sign(loss_grad(logits_fn, x_BxHxWxC, y_B))


def _eps_like(eps_E, x):
  return jnp.asarray(eps_E, x.dtype).reshape((-1,) + (1,) * x.ndim)


def fgsm(logits_fn: LogitsFn, x_BxHxWxC: jnp.ndarray, y_B: jnp.ndarray, eps_E: jnp.ndarray) -> jnp.ndarray:
  """x_adv = clip(x + ε·sign ∇ₓ, 0, 1) for every ε at once: (E, B, H, W, C).

  The sign does not depend on ε, so one gradient serves the whole ε vector by
  broadcasting. ε is in pixel units (the paper's tables label ε ×10).
  """
  sign = fgsm_sign(logits_fn, x_BxHxWxC, y_B)
  return jnp.clip(x_BxHxWxC[None] + _eps_like(eps_E, x_BxHxWxC) * sign[None], 0.0, 1.0)


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


def _start(x: jnp.ndarray, eps: jnp.ndarray, random_start: bool, key: jax.Array | None,
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
  eps = _eps_like(eps_E, x)                                         # (E, 1, 1, 1, 1)
  x_ExB = _start(x, eps, random_start, key, index_B)
  y_EB = jnp.tile(y_B, eps.shape[0])
  flat = lambda a: a.reshape((-1,) + x.shape[1:])

  def step(x_adv, _):
    g = loss_grad(logits_fn, flat(x_adv), y_EB, loss).reshape(x_adv.shape)
    x_adv = x_adv + step_size * eps * jnp.sign(g)
    return jnp.clip(jnp.clip(x_adv, x[None] - eps, x[None] + eps), 0.0, 1.0), None

  return jax.lax.scan(step, x_ExB, None, length=steps)[0]


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


def apgd(logits_fn: LogitsFn, x_BxHxWxC: jnp.ndarray, y_B: jnp.ndarray, eps_E: jnp.ndarray, *, steps: int,
         random_start: bool = True, key: jax.Array | None = None, index_B: jnp.ndarray | None = None,
         loss: str = "ce", trace: bool = False):
  """Croce & Hein's APGD (L∞) for every ε at once: the best point found, (E, B, H, W, C).

  x⁽¹⁾ = P(x⁽⁰⁾ + η sign ∇f(x⁽⁰⁾)) with η = 2ε; then z = P(x⁽ᵏ⁾ + η sign ∇f(x⁽ᵏ⁾)) and
  x⁽ᵏ⁺¹⁾ = P(x⁽ᵏ⁾ + α(z − x⁽ᵏ⁾) + (1 − α)(x⁽ᵏ⁾ − x⁽ᵏ⁻¹⁾)), α = 0.75. At each checkpoint w_j (per image),
  if fewer than ρ = 0.75 of the steps since w_{j−1} raised the loss, or neither η nor the best loss changed
  since w_{j−1}, η is halved and the next step starts from the best point. `steps` (at least 2) gradient
  evaluations.
  With `trace`, also returns {'best_loss', 'eta'}: (steps, E·B) per step, for tests.
  """
  x = x_BxHxWxC
  eps = _eps_like(eps_E, x)
  e, shape = eps.shape[0], x.shape[1:]
  flat = lambda a: a.reshape((-1,) + shape)
  x0 = flat(x[None] * jnp.ones_like(eps))                            # clean images, (E·B, ...)
  eps_N = jnp.broadcast_to(eps.reshape(e, 1), (e, x.shape[0])).reshape(-1)
  per = lambda v: v.reshape((-1,) + (1,) * len(shape))
  y_N = jnp.tile(y_B, e)
  proj = lambda v: jnp.clip(jnp.clip(v, x0 - per(eps_N), x0 + per(eps_N)), 0.0, 1.0)
  f_and_g = lambda v: loss_and_grad(logits_fn, v, y_N, loss)

  x_start = flat(_start(x, eps, random_start, key, index_B))
  f_start, g_start = f_and_g(x_start)
  eta = 2.0 * eps_N
  x_1 = proj(x_start + per(eta) * jnp.sign(g_start))
  f_1, g_1 = f_and_g(x_1)
  better = f_1 > f_start
  best_f, best_x = jnp.maximum(f_1, f_start), jnp.where(per(better), x_1, x_start)
  best_g = jnp.where(per(better), g_1, g_start)       # the gradient there: a restart from the best point needs it
  checkpoints = apgd_checkpoints(steps)
  is_ckpt = jnp.asarray([k in checkpoints for k in range(steps)], bool)
  since = jnp.asarray([k - max([c for c in checkpoints if c < k], default=0) for k in range(steps)], jnp.float32)

  def step(carry, xs):
    x_prev, x_k, f_k, g_k, eta, best_f, best_x, best_g, gains, eta_ckpt, best_ckpt = carry
    k_is_ckpt, k_since = xs
    z = proj(x_k + per(eta) * jnp.sign(g_k))
    x_next = proj(x_k + APGD_MOMENTUM * (z - x_k) + (1.0 - APGD_MOMENTUM) * (x_k - x_prev))
    f_next, g_next = f_and_g(x_next)
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
    carry = (x_k, x_next, f_next, g_next, eta_new, best_f, best_x, best_g, gains, eta_ckpt, best_ckpt)
    return carry, (best_f, eta_new) if trace else None

  init = (x_start, x_1, f_1, g_1, eta, best_f, best_x, best_g, jnp.zeros_like(eta), eta, best_f)
  carry, history = jax.lax.scan(step, init, (is_ckpt[1:steps - 1], since[1:steps - 1]))
  out = carry[6].reshape((e,) + x.shape)
  if not trace:
    return out
  best_hist = jnp.concatenate([jnp.stack([f_start, best_f]), history[0]])
  eta_hist = jnp.concatenate([jnp.stack([2.0 * eps_N, 2.0 * eps_N]), history[1]])
  return out, dict(best_loss=best_hist, eta=eta_hist)


def run(attack: Attack, logits_fn: LogitsFn, x_BxHxWxC: jnp.ndarray, y_B: jnp.ndarray, eps_E: jnp.ndarray, *,
        purify: ImagesFn | None = None, key: jax.Array | None = None,
        index_B: jnp.ndarray | None = None) -> jnp.ndarray:
  """x_adv (E, B, H, W, C) of `attack` against logits_fn (white-box ones: against logits_fn ∘ purify); one
  start (the grid runs `attack.restarts`, each with its own key)."""
  f = target_fn(attack, logits_fn, purify)
  if attack.method == "fgsm":
    return fgsm(f, x_BxHxWxC, y_B, eps_E)
  if attack.method == "apgd":
    return apgd(f, x_BxHxWxC, y_B, eps_E, steps=max(attack.steps, 2), random_start=attack.random_start, key=key,
                index_B=index_B, loss=attack.loss)
  return pgd(f, x_BxHxWxC, y_B, eps_E, steps=attack.steps, step_size=attack.step_size,
             random_start=attack.random_start, key=key, index_B=index_B, loss=attack.loss)


def describe(attack: Attack) -> str:
  """One line for tables and logs: threat model, what is differentiated, steps."""
  what = {"classifier": "the attacker differentiates the classifier only, not the purifier",
          "bpda": "BPDA: forward through the purifier, backward as if it were the identity",
          "ste": "the true gradient through the purifier (quantiser: straight-through estimator)"}[attack.gradient]
  start = "random start" if attack.random_start else "no random start"
  how = {"fgsm": "one FGSM step",
         "pgd": f"PGD, {attack.steps} steps of {attack.step_size:g}·ε, {start}",
         "apgd": f"APGD, {max(attack.steps, 2)} steps, step 2ε halved at checkpoints, momentum 0.75, {start}"}[
             attack.method]
  if attack.iterative:
    how += f", {attack.loss.upper()} loss, {attack.restarts} restart{'s' if attack.restarts > 1 else ''}"
    if attack.restarts > 1:
      how += (": an image counts as robust only if it survives every restart" + (
          " (judged on the defended prediction, so the restart is picked with the purifier's output)"
          if attack.restart_pick == "defended" and not attack.white_box else
          " (the restart picked by the classifier's own loss)" if attack.restart_pick == "classifier"
          and not attack.white_box else ""))
  return f"{attack.threat_model} {attack.name} ({how}): {what}"


@dataclasses.dataclass(frozen=True)
class AttackSpec:
  """The `attack` config section, checked: the attacks of the grid's attack axis, the ε vector, and the step
  counts of the convergence check."""
  attacks: tuple[Attack, ...]
  epsilons: tuple[float, ...]
  convergence_steps: tuple[int, ...] = ()

  @classmethod
  def from_config(cls, section) -> "AttackSpec":
    names, eps = tuple(section.names), tuple(section.epsilons)
    if not eps or any(not isinstance(e, (int, float)) or not 0.0 <= float(e) <= 1.0 for e in eps):
      raise VQDefenseError(f"attack.epsilons must be a non-empty list of values in [0, 1], got {eps}")
    if not names or any(n not in ATTACKS for n in names) or len(set(names)) != len(names):
      raise VQDefenseError(f"attack.names must be distinct names from {', '.join(ATTACKS)}, got {names}")
    if not 1 <= section.pgd_steps <= 10_000 or not 0 < section.pgd_step_size <= 1:
      raise VQDefenseError(f"attack.pgd_steps must be in 1..10000 and attack.pgd_step_size in (0, 1], got "
                           f"{section.pgd_steps} and {section.pgd_step_size}")
    steps = tuple(section.convergence_steps)
    if (any(isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 10_000 for k in steps)
        or len(set(steps)) != len(steps)):
      raise VQDefenseError(f"attack.convergence_steps must be distinct step counts in 1..10000, got {steps}")
    if steps and not any(Attack(n).iterative for n in names):
      raise VQDefenseError("attack.convergence_steps needs an iterative attack (pgd, apgd, ...) in attack.names")
    restarts = lambda n: section.restarts if Attack(n).iterative and section.pgd_random_start else 1
    attacks = tuple(Attack(n, section.pgd_steps, section.pgd_step_size, section.pgd_random_start, section.loss,
                           restarts(n), section.restart_pick) for n in names)
    return cls(attacks, tuple(float(e) for e in eps), steps)
