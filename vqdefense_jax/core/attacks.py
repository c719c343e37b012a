"""L∞ attacks over a whole ε vector: grey-box (the paper's) and white-box (they see the purifier).

Every attack returns x_adv of shape (E, B, H, W, C) for the ε vector (E,),
with ‖x_adv − x‖∞ ≤ ε and x_adv ∈ [0, 1]. What the attacker differentiates:

  fgsm, pgd            grey-box: the classifier f only (the paper's threat model)
  bpda_fgsm, bpda_pgd  white-box BPDA (Athalye et al. 2018): f(p(x)) forward, the purifier p
                       taken as the identity backward, i.e. ∇ₓ = ∇f evaluated at p(x)
  ste_fgsm, ste_pgd    white-box: the true gradient of f(p(x)), through encoder, decoder
                       and the quantiser's straight-through estimator

`*_fgsm` is one signed-gradient step of size ε (one gradient serves every ε);
`*_pgd` is Madry et al.'s PGD: `steps` steps of size `step_size`·ε, projected
to the ε-ball and [0, 1], from a uniform random start in the ball when
`random_start` (drawn per image from `key` and the image's index, so results do
not depend on how the test set is chunked).
"""

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from vqdefense_jax.core.errors import VQDefenseError

LogitsFn = Callable[[jnp.ndarray], jnp.ndarray]
ImagesFn = Callable[[jnp.ndarray], jnp.ndarray]
ATTACKS = ("fgsm", "pgd", "bpda_fgsm", "bpda_pgd", "ste_fgsm", "ste_pgd")


@dataclasses.dataclass(frozen=True)
class Attack:
  """Hashable (a static argument of the jitted grid)."""
  name: str = "fgsm"
  steps: int = 10              # PGD iterations
  step_size: float = 0.25      # PGD step, as a fraction of ε
  random_start: bool = True    # PGD starts uniformly in the ε-ball

  def __post_init__(self):
    if self.name not in ATTACKS:
      raise VQDefenseError(f"unknown attack {self.name!r}; expected one of {', '.join(ATTACKS)}")
    if self.iterative and (self.steps < 1 or self.step_size <= 0):
      raise VQDefenseError(f"attack {self.name}: steps must be >= 1 and step_size > 0")

  @property
  def gradient(self) -> str:
    """'classifier' (grey-box), 'bpda' or 'ste'."""
    return self.name.split("_")[0] if "_" in self.name else "classifier"

  @property
  def white_box(self) -> bool:
    return self.gradient != "classifier"

  @property
  def iterative(self) -> bool:
    return self.name.endswith("pgd")

  @property
  def threat_model(self) -> str:
    return "white-box" if self.white_box else "grey-box"

  def grey_box(self) -> "Attack":
    """The same attack against the classifier alone (what it is against an undefended classifier)."""
    return dataclasses.replace(self, name="pgd" if self.iterative else "fgsm")


def target_fn(attack: Attack, logits_fn: LogitsFn, purify: ImagesFn | None) -> LogitsFn:
  """The function whose loss gradient the attack follows."""
  if purify is None or not attack.white_box:
    return logits_fn
  if attack.gradient == "bpda":
    return lambda x: logits_fn(x + jax.lax.stop_gradient(purify(x) - x))
  return lambda x: logits_fn(purify(x))


def loss_grad(logits_fn: LogitsFn, x_BxHxWxC: jnp.ndarray, y_B: jnp.ndarray) -> jnp.ndarray:
  """∇ₓ of the summed cross-entropy with the true labels, per image.

  Summed (not mean): tiny per-example gradients do not underflow; the sign is
  the same either way, and images do not interact.
  """
  loss = lambda x: optax.softmax_cross_entropy_with_integer_labels(logits_fn(x), y_B).sum()
  return jax.grad(loss)(x_BxHxWxC)


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
  sign = fgsm_sign(logits_fn, x_BxHxWxC, y_B)
  return jnp.clip(x_BxHxWxC + eps_B.reshape((-1,) + (1,) * (x_BxHxWxC.ndim - 1)) * sign, 0.0, 1.0), eps_B


def pgd(logits_fn: LogitsFn, x_BxHxWxC: jnp.ndarray, y_B: jnp.ndarray, eps_E: jnp.ndarray, *, steps: int,
        step_size: float, random_start: bool, key: jax.Array | None = None,
        index_B: jnp.ndarray | None = None) -> jnp.ndarray:
  """L∞ PGD for every ε at once: (E, B, H, W, C); all E·B images advance in one batch per step.

  `key` and `index_B` (each image's index in the test set) draw the random
  start; without `index_B` the position in the batch is used.
  """
  x = x_BxHxWxC
  eps = _eps_like(eps_E, x)                                         # (E, 1, 1, 1, 1)
  x_ExB = jnp.broadcast_to(x[None], (eps.shape[0],) + x.shape)
  if random_start:
    if key is None:
      raise VQDefenseError("PGD with a random start needs a PRNG key")
    index_B = jnp.arange(x.shape[0]) if index_B is None else index_B
    noise = jax.vmap(lambda i: jax.random.uniform(jax.random.fold_in(key, i), x_ExB.shape[:1] + x.shape[1:],
                                                  x.dtype, -1.0, 1.0))(index_B)   # (B, E, H, W, C)
    x_ExB = jnp.clip(x_ExB + eps * jnp.swapaxes(noise, 0, 1), 0.0, 1.0)
  y_EB = jnp.tile(y_B, eps.shape[0])
  flat = lambda a: a.reshape((-1,) + x.shape[1:])

  def step(x_adv, _):
    g = loss_grad(logits_fn, flat(x_adv), y_EB).reshape(x_adv.shape)
    x_adv = x_adv + step_size * eps * jnp.sign(g)
    return jnp.clip(jnp.clip(x_adv, x[None] - eps, x[None] + eps), 0.0, 1.0), None

  return jax.lax.scan(step, x_ExB, None, length=steps)[0]


def run(attack: Attack, logits_fn: LogitsFn, x_BxHxWxC: jnp.ndarray, y_B: jnp.ndarray, eps_E: jnp.ndarray, *,
        purify: ImagesFn | None = None, key: jax.Array | None = None,
        index_B: jnp.ndarray | None = None) -> jnp.ndarray:
  """x_adv (E, B, H, W, C) of `attack` against logits_fn (white-box ones: against logits_fn ∘ purify)."""
  f = target_fn(attack, logits_fn, purify)
  if not attack.iterative:
    return fgsm(f, x_BxHxWxC, y_B, eps_E)
  return pgd(f, x_BxHxWxC, y_B, eps_E, steps=attack.steps, step_size=attack.step_size,
             random_start=attack.random_start, key=key, index_B=index_B)


def describe(attack: Attack) -> str:
  """One line for tables and logs: threat model, what is differentiated, steps."""
  what = {"classifier": "the attacker differentiates the classifier only, not the purifier",
          "bpda": "BPDA: forward through the purifier, backward as if it were the identity",
          "ste": "the true gradient through the purifier (quantiser: straight-through estimator)"}[attack.gradient]
  how = (f"PGD, {attack.steps} steps of {attack.step_size:g}·ε, "
         f"{'random start' if attack.random_start else 'no random start'}" if attack.iterative
         else "one FGSM step")
  return f"{attack.threat_model} {attack.name} ({how}): {what}"


@dataclasses.dataclass(frozen=True)
class AttackSpec:
  """The `attack` config section, checked: the attacks of the grid's attack axis and the ε vector."""
  attacks: tuple[Attack, ...]
  epsilons: tuple[float, ...]

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
    attacks = tuple(Attack(n, section.pgd_steps, section.pgd_step_size, section.pgd_random_start) for n in names)
    return cls(attacks, tuple(float(e) for e in eps))
