"""Attacks over flat items: one item is one (test image, ε) pair.

The grid hands an attack B images and an ε vector (E,); the query and minimum-norm attacks (Square, APGD-T,
FAB-T, AutoAttack's suite) work on the E·B items as one flat batch, each item with its own ε and its own PRNG
key, folded from the attack's key, the image's index in the test set and the ε's position in the ε vector. So
an item's result depends on nothing else in its batch: not on chunking, on the device mesh, or on which other
items are still being attacked.

`compact` is what lets an attack (or a suite member) run only on the items still to attack: it moves them to
the front and runs them in batches of `batch` items, the last one padded only to the next of a few sizes
(`sizes`), in a while loop; the others keep their value. AutoAttack's reference code compacts the same way (it
attacks the still-robust images only), so its cost falls as images are fooled.
"""

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp


def flatten(x_BxHxWxC: jnp.ndarray, y_B: jnp.ndarray, eps_E: jnp.ndarray, index_B: jnp.ndarray | None):
  """(x_N, y_N, eps_N, index_N, eps_position_N) with N = E·B, ε-major (item e·B + b is image b at ε e)."""
  e, b = eps_E.shape[0], x_BxHxWxC.shape[0]
  index_B = jnp.arange(b) if index_B is None else index_B
  x_N = jnp.broadcast_to(x_BxHxWxC[None], (e,) + x_BxHxWxC.shape).reshape((e * b,) + x_BxHxWxC.shape[1:])
  tile = lambda v_B: jnp.tile(v_B, e)
  eps_N = jnp.repeat(jnp.asarray(eps_E, x_BxHxWxC.dtype), b)
  return x_N, tile(y_B), eps_N, tile(index_B), jnp.repeat(jnp.arange(e), b)


def item_keys(key: jax.Array, index_N: jnp.ndarray, eps_position_N: jnp.ndarray) -> jax.Array:
  """Each item's key: fold_in(fold_in(key, image index), ε position)."""
  return jax.vmap(lambda i, e: jax.random.fold_in(jax.random.fold_in(key, i), e))(index_N, eps_position_N)


def per_item(v_N: jnp.ndarray, like: jnp.ndarray) -> jnp.ndarray:
  """A per-item scalar broadcast against items of `like`'s shape."""
  return v_N.reshape((-1,) + (1,) * (like.ndim - 1))


def project(x_N: jnp.ndarray, x0_N: jnp.ndarray, eps_N: jnp.ndarray) -> jnp.ndarray:
  """Onto each item's ε-ball around x0 and the unit box."""
  e = per_item(eps_N, x_N)
  return jnp.clip(jnp.clip(x_N, x0_N - e, x0_N + e), 0.0, 1.0)


MAX_PAD = 8    # rows a padded batch may waste, where the ladder may grow to MAX_SIZES sizes
MAX_SIZES = 8


def ladder_steps(batch: int) -> int:
  """How many sizes the ladder of `batch` has: 4, or more (up to MAX_SIZES) so that a step is at most MAX_PAD
  rows. The model is compiled once per size: on the 2-core CPU, 33 items left of 50 ran at 38 rows with four
  sizes, at 36 with seven (benchmarks/README.md)."""
  return min(MAX_SIZES, max(4, -(-batch // MAX_PAD)))


def sizes(batch: int, steps: int | None = None) -> tuple[int, ...]:
  """The batch sizes the item attacks run at: ⌈batch·k/steps⌉ for k = 1..steps, ascending, distinct (steps:
  `ladder_steps(batch)` unless given). Each is traced once; a batch of items runs at the smallest size that
  holds it, so it wastes at most batch/steps places, as the reference code, which runs exactly the items left,
  wastes none."""
  steps = ladder_steps(batch) if steps is None else steps
  return tuple(sorted({max(1, -(-batch * k // steps)) for k in range(1, steps + 1)}))


def at_size(ladder: tuple[int, ...], count, fn: Callable[[int, Any], Any], state: Any) -> Any:
  """fn(size, state) at the smallest size of `ladder` that holds `count` items (the largest where count
  exceeds them all); fn is traced once per size."""
  if len(ladder) == 1:
    return fn(ladder[0], state)
  branch = jnp.minimum(jnp.searchsorted(jnp.asarray(ladder), count), len(ladder) - 1)
  return jax.lax.switch(branch, [functools.partial(fn, size) for size in ladder], state)


def compact(fn: Callable[[Any], Any], active_N: jnp.ndarray, args: Any, init: Any, batch: int,
            steps: int | None = None) -> Any:
  """fn over the active items only, `batch` at a time; inactive items keep their value in `init`.

  fn maps a pytree of (batch, ...) arrays (the items' `args`) to a pytree shaped like `init`'s leaves with a
  leading batch axis. It takes `batch` items at a time while that many are left, then the last ones at the
  smallest of sizes(batch, steps) that holds them (fn is traced once per size), padded with item 0, whose
  results are dropped. fn must treat items independently (everything here does). A one-pass attack (APGD-CE,
  Square's first query) pads only its last batch: `steps=1` traces it once, at `batch`; the attacks that
  compact again and again (one pass per target) save more from a finer ladder than its compilation costs.
  """
  n = active_N.shape[0]
  batch = max(1, min(batch, n))
  ladder = sizes(batch, steps)
  order_N = jnp.argsort(~active_N, stable=True)                    # active items first, in order
  count = jnp.sum(active_N, dtype=jnp.int32)
  order_P = jnp.concatenate([order_N, jnp.zeros(batch, order_N.dtype)])

  def run(size, state):
    done, out = state
    idx = jax.lax.dynamic_slice(order_P, (done,), (size,))
    valid = done + jnp.arange(size) < count
    res = fn(jax.tree.map(lambda a: a[idx], args))
    where = jnp.where(valid, idx, n)                                 # n: out of range, dropped
    return done + size, jax.tree.map(lambda o, r: o.at[where].set(r, mode="drop"), out, res)

  body = lambda state: at_size(ladder, count - state[0], run, state)
  return jax.lax.while_loop(lambda state: state[0] < count, body, (jnp.int32(0), init))[1]
