"""One entry point for every attack: `run(attack, classifier logits, images, labels, ε vector, purifier)`."""

import jax
import jax.numpy as jnp

from vqdefense_jax.core.attacks import items
from vqdefense_jax.core.attacks.autopgd import apgd, apgd_targeted
from vqdefense_jax.core.attacks.autoattack import autoattack
from vqdefense_jax.core.attacks.fab import fab_targeted
from vqdefense_jax.core.attacks.gradient import fgsm, pgd
from vqdefense_jax.core.attacks.losses import LogitsFn
from vqdefense_jax.core.attacks.spec import Attack
from vqdefense_jax.core.attacks.square import square_items
from vqdefense_jax.core.errors import VQDefenseError

ImagesFn = LogitsFn


def target_fn(attack: Attack, logits_fn: LogitsFn, purify: ImagesFn | None) -> LogitsFn:
  """The function whose loss gradient the attack follows (Square: the one it queries)."""
  if purify is None or not attack.white_box:
    return logits_fn
  if attack.gradient == "bpda":
    return lambda x: logits_fn(x + jax.lax.stop_gradient(purify(x) - x))
  return lambda x: logits_fn(purify(x))


def run(attack: Attack, logits_fn: LogitsFn, x_BxHxWxC: jnp.ndarray, y_B: jnp.ndarray, eps_E: jnp.ndarray, *,
        purify: ImagesFn | None = None, key: jax.Array | None = None, index_B: jnp.ndarray | None = None,
        batch: int = 0, query_batch: int = 0, outcomes: bool = False, attack_B: jnp.ndarray | None = None):
  """x_adv (E, B, H, W, C) of `attack` against logits_fn (white-box and black-box ones: against
  logits_fn ∘ purify); one start (the grid runs `attack.restarts`, each with its own key).

  The item attacks (apgdt, fabt, square, autoattack) run on the E·B (image, ε) items the defended model
  classifies right, each keyed by (key, image index, ε position), `attack.batch` items at a time (0: `batch`
  for the gradient ones, `query_batch` for Square, alone or in the suite; 0: all). Square takes no gradient
  and its forward passes run faster per image in larger batches than gradient steps do, hence its own default.
  With
  `outcomes`, an autoattack also returns each item's outcome (E, B) (autoattack.OUTCOMES). `attack_B` (bool)
  limits the item attacks to those images (a grid chunk's padding is not attacked: the others come back
  unchanged); the batch-parallel attacks attack every image.
  """
  f = target_fn(attack, logits_fn, purify)
  x = x_BxHxWxC
  if attack.method == "fgsm":
    return fgsm(f, x, y_B, eps_E)
  if attack.method == "pgd":
    return pgd(f, x, y_B, eps_E, steps=attack.steps, step_size=attack.step_size,
               random_start=attack.random_start, key=key, index_B=index_B, loss=attack.loss)
  if attack.method == "apgd":
    return apgd(f, x, y_B, eps_E, steps=max(attack.steps, 2), random_start=attack.random_start, key=key,
                index_B=index_B, loss=attack.loss)
  if key is None:
    raise VQDefenseError(f"attack {attack.name} draws random numbers: it needs a PRNG key")
  forward = logits_fn if purify is None else (lambda v: logits_fn(purify(v)))
  x_N, y_N, eps_N, index_N, eps_pos_N = items.flatten(x, y_B, jnp.asarray(eps_E), index_B)
  key_N = items.item_keys(key, index_N, eps_pos_N)
  batch, query_batch = (attack.batch or b or x_N.shape[0] for b in (batch, query_batch))
  e = eps_N.shape[0] // x.shape[0]
  clean_logits = forward(x_N)
  active = jnp.argmax(clean_logits, -1) == y_N          # the items the defended model classifies right ...
  if attack_B is not None:
    active = active & jnp.tile(jnp.asarray(attack_B, bool), e)   # ... less a chunk's padding
  by = None
  if attack.suite:
    x_adv, by = autoattack(f, forward, x_N, y_N, eps_N, key_N, clean_logits, active, steps=attack.steps,
                           targets=attack.targets, queries=attack.queries, p_init=attack.p_init, batch=batch,
                           query_batch=query_batch)
  elif attack.method == "square":
    x_adv = square_items(forward, x_N, y_N, eps_N, key_N, active, queries=attack.queries, p_init=attack.p_init,
                         batch=query_batch)[0]
  elif attack.method == "apgdt":
    x_adv = apgd_targeted(f, x_N, y_N, eps_N, key_N, clean_logits, active, steps=attack.steps,
                          targets=attack.targets, batch=batch)[0]
  else:
    x_adv = fab_targeted(f, x_N, y_N, eps_N, clean_logits, active, steps=attack.steps, targets=attack.targets,
                         batch=batch)[0]
  x_adv = x_adv.reshape((e,) + x.shape)
  if outcomes and by is not None:
    return x_adv, by.reshape(x_adv.shape[:2])
  return x_adv
