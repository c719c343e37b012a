"""AutoAttack's standard L∞ suite (Croce & Hein, ICML 2020) on flat items: APGD-CE, APGD-T, FAB-T, Square.

In AutoAttack's order, each member attacks only the items that the defended model classifies right and that every
earlier member left right (`items.compact`), and an item's result is the first member's adversarial point that
fooled the model. Settings are AutoAttack's standard version: APGD-CE with one start, APGD-T and FAB-T over the 9
largest other logits, 100 iterations each, Square with 5,000 queries, p_init = 0.8 and its p-schedule not
rescaled to the query budget (`Attack.steps`, `targets`, `queries` and `p_init` change them). The gradient
members differentiate `logits_fn` (straight-through or BPDA through a purifier); whether a member fooled an item,
and Square's queries, use `forward`, the defended model itself, so they agree with how the grid counts.

`OUTCOMES[by[n]]` says what happened to item n: robust (survived every member), clean (wrong before any
attack), or the member that fooled it.
"""

import jax
import jax.numpy as jnp

from vqdefense_jax.core.attacks import items
from vqdefense_jax.core.attacks.autopgd import apgd_ce, apgd_targeted
from vqdefense_jax.core.attacks.fab import fab_targeted
from vqdefense_jax.core.attacks.losses import LogitsFn
from vqdefense_jax.core.attacks.spec import SUITE
from vqdefense_jax.core.attacks.square import square_items

OUTCOMES = ("robust", "clean") + SUITE


def autoattack(logits_fn: LogitsFn, forward: LogitsFn, x0_N: jnp.ndarray, y_N: jnp.ndarray, eps_N: jnp.ndarray,
               key_N: jax.Array, clean_logits_N: jnp.ndarray, active_N: jnp.ndarray, *, steps: int = 100,
               targets: int = 9, queries: int = 5000, p_init: float = 0.8,
               batch: int = 0, query_batch: int = 0) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(x_adv_N, by_N): each item's adversarial point (x0 where it stayed robust or was wrong clean) and its
  outcome, an index into OUTCOMES (int8). `clean_logits_N` = forward(x0_N). `active_N`: the items a caller
  wants attacked (all, or all but a grid chunk's padding); of those, only the ones the defended model classifies
  right are attacked. The others cost nothing and come back as x0, with the outcome 'robust' where they are
  right. `batch`: items per compacted batch of the gradient members, `query_batch` of Square (0: all at once)."""
  n = x0_N.shape[0]
  batch = batch or n
  wrong = lambda v: jnp.argmax(forward(v), -1) != y_N
  right = jnp.argmax(clean_logits_N, -1) == y_N
  active = right & active_N
  by = jnp.where(right, 0, OUTCOMES.index("clean")).astype(jnp.int8)
  x_adv = x0_N
  member_key = lambda i: jax.vmap(jax.random.fold_in, (0, None))(key_N, i)

  def keep(name, state, result):
    """Take a member's result where it fooled the defended model (checked with `forward`)."""
    x_adv, by, active = state
    x_new, fooled = result
    fooled = fooled & active & wrong(x_new)
    return (jnp.where(items.per_item(fooled, x_adv), x_new, x_adv),
            jnp.where(fooled, OUTCOMES.index(name), by).astype(jnp.int8), active & ~fooled)

  state = (x_adv, by, active)
  ce = lambda a: apgd_ce(logits_fn, a["x0"], a["y"], a["eps"], a["key"], steps=steps)
  args = dict(x0=x0_N, y=y_N, eps=eps_N, key=member_key(1))
  state = keep("apgd_ce", state, items.compact(ce, state[2], args, (x0_N, jnp.zeros_like(active)), batch, steps=1))
  state = keep("apgd_t", state, apgd_targeted(logits_fn, x0_N, y_N, eps_N, member_key(2), clean_logits_N, state[2],
                                              steps=steps, targets=targets, batch=batch))
  state = keep("fab_t", state, fab_targeted(logits_fn, x0_N, y_N, eps_N, clean_logits_N, state[2], steps=steps,
                                            targets=targets, batch=batch))
  state = keep("square", state, square_items(forward, x0_N, y_N, eps_N, member_key(4), state[2], queries=queries,
                                             p_init=p_init, batch=query_batch or n, rescale=False))
  return state[0], state[1]


def outcome_counts(by_N: jnp.ndarray, weight_N: jnp.ndarray) -> jnp.ndarray:
  """(len(OUTCOMES),) weighted number of items per outcome."""
  return jnp.sum(jax.nn.one_hot(by_N, len(OUTCOMES), dtype=jnp.int32) * weight_N[:, None].astype(jnp.int32), axis=0)
