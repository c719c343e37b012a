"""The Square attack (Andriushchenko, Croce, Flammarion & Hein, ECCV 2020), L∞: a random search that needs only
the model's scores, no gradient. The last attack of AutoAttack's suite, and the check that a defence's
robustness is not a gradient artefact (Athalye et al. 2018).

It starts from vertical stripes, x + ε·s with one random sign s per column and channel, and minimises the margin
z_y − max_{i≠y} z_i. Each query sets one random square window of side h·√p to a random vertex of the ε-ball (one
sign per channel) and keeps the change if it lowers the margin; p follows the paper's schedule, halving from
p_init at queries 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 of 10,000, rescaled to `queries` (the paper's
code) or not (`rescale=False`: AutoAttack's standard suite). An item stops once its margin is ≤ 0 (fooled); a
batch stops when all its items have.

As in the paper's code, each image draws its own window and signs, keyed by (seed, restart, image, ε) and the
query number (AutoAttack's PyTorch port draws one window for the whole batch), and a window whose new values
would equal the current ones is redrawn. `queries` counts every model evaluation, the initial one included.
"""

import jax
import jax.numpy as jnp

from vqdefense_jax.core.attacks import items
from vqdefense_jax.core.attacks.losses import LogitsFn, margin

P_SCHEDULE = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)  # of 10,000 queries: p halves after each
REDRAWS = 8  # draws of a window's signs until it changes the image (with one channel the second always does)


def p_at(query, queries: int, p_init: float, rescale: bool = True):
  """p for the query with 0-based iteration index `query` (traced): p_init / 2^(number of schedule points
  passed), the iteration first rescaled to 10,000 queries when `rescale`."""
  it = jnp.floor(query * (10_000.0 / queries)) if rescale else query
  halvings = jnp.sum(jnp.asarray(P_SCHEDULE) < it)
  return p_init / 2.0 ** halvings


def side_at(query, queries: int, p_init: float, h: int, rescale: bool = True) -> jnp.ndarray:
  """The window side: round(√(p·h·w)) (h = w: the paper's images are square), between 1 and h − 1."""
  s = jnp.round(jnp.sqrt(p_at(query, queries, p_init, rescale) * h * h)).astype(jnp.int32)
  return jnp.clip(s, 1, max(h - 1, 1))


def _window(key, side, h: int, w: int):
  """A (H, W) mask of a side×side window at a uniform position (top-left in [0, h − side) × [0, w − side))."""
  kh, kw = jax.random.split(key)
  top = jax.random.randint(kh, (), 0, jnp.maximum(h - side, 1))
  left = jax.random.randint(kw, (), 0, jnp.maximum(w - side, 1))
  rows, cols = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
  return (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)


def _signs(key, shape, dtype):
  return jnp.where(jax.random.bernoulli(key, 0.5, shape), 1.0, -1.0).astype(dtype)


def _propose(k, x0, x_cur, e, side):
  """One item's candidate: its current point with one random side×side window set to x0 ± ε (one sign per
  channel, clipped to the box), redrawn while it would change nothing."""
  h, w, c = x0.shape
  k_win, k_sign = jax.random.split(k)
  window = _window(k_win, side, h, w)[:, :, None]

  def draw(r):
    return jnp.where(window, jnp.clip(x0 + e * _signs(jax.random.fold_in(k_sign, r), (1, 1, c), x0.dtype), 0.0, 1.0),
                     x_cur)

  def unchanged(cand):
    return jnp.all(jnp.where(window, jnp.abs(cand - x_cur) < 1e-7, True))

  def redraw(state):
    r, _ = state
    return r + 1, draw(r + 1)

  return jax.lax.while_loop(lambda s: (s[0] < REDRAWS) & unchanged(s[1]), redraw, (0, draw(0)))[1]


def start(logits_fn: LogitsFn, x0_N, y_N, eps_N, key_N):
  """The first query: vertical stripes x0 + ε·s, one sign per column and channel. Returns (x_N, margin_N)."""
  n, h, w, c = x0_N.shape
  stripes = jax.vmap(lambda k: _signs(jax.random.fold_in(k, 0), (1, w, c), x0_N.dtype))(key_N)   # (N, 1, W, C)
  x = jnp.clip(x0_N + items.per_item(eps_N, x0_N) * stripes, 0.0, 1.0)
  return x, margin(logits_fn(x), y_N)


def step(logits_fn: LogitsFn, x0_N, y_N, eps_N, key_N, x_best, m_best, q_N, on_N, *, queries: int, p_init: float,
         rescale: bool = True):
  """One query of every item where on_N: its next candidate (query number q_N, keyed fold_in(key, q_N), the
  window side of iteration q_N − 1 of the schedule), kept if it lowers the margin. Returns (x_best, m_best, q_N)
  with q_N advanced where on_N; items not on are evaluated but keep their state."""
  h = x0_N.shape[1]
  side_N = jax.vmap(lambda q: side_at(q - 1, queries, p_init, h, rescale))(q_N)
  keys = jax.vmap(jax.random.fold_in)(key_N, q_N)
  cand = jax.vmap(_propose)(keys, x0_N, x_best, eps_N[:, None, None, None], side_N)
  m_cand = margin(logits_fn(cand), y_N)
  better = on_N & (m_cand < m_best)
  return (jnp.where(items.per_item(better, x0_N), cand, x_best), jnp.where(better, m_cand, m_best),
          q_N + on_N.astype(q_N.dtype))


def search(logits_fn: LogitsFn, x0_N, y_N, eps_N, key_N, x_best, m_best, q_N, q_stop_N, *, queries: int,
           p_init: float, rescale: bool = True, trace_length: int = 0):
  """Queries from each item's count q_N (queries made so far) until it has made q_stop_N or is fooled (margin
  ≤ 0). Query number q of an item uses the key fold_in(its key, q) and the window side of iteration q − 1 of the
  schedule, so an item's path does not depend on when or beside what it runs. Returns (x_best, m_best, q_N) and,
  with `trace_length`, the best margins after every step of this call (trace_length, N)."""
  live = lambda m, q: (m > 0) & (q < q_stop_N)

  def query(state):
    t, x_best, m_best, q_N, history = state
    x_best, m_best, q_N = step(logits_fn, x0_N, y_N, eps_N, key_N, x_best, m_best, q_N, live(m_best, q_N),
                               queries=queries, p_init=p_init, rescale=rescale)
    if trace_length:
      history = history.at[t].set(m_best)
    return t + 1, x_best, m_best, q_N, history

  history = jnp.zeros((trace_length, x0_N.shape[0]), m_best.dtype) if trace_length else None
  go_on = lambda state: jnp.any(live(state[2], state[3]))
  t, x_best, m_best, q_N, history = jax.lax.while_loop(go_on, query, (0, x_best, m_best, q_N, history))
  if trace_length:  # after the batch stopped, every margin stays where it ended
    return x_best, m_best, q_N, jnp.where(jnp.arange(trace_length)[:, None] < t, history, m_best[None])
  return x_best, m_best, q_N


def square(logits_fn: LogitsFn, x0_N: jnp.ndarray, y_N: jnp.ndarray, eps_N: jnp.ndarray, key_N: jax.Array, *,
           queries: int = 5000, p_init: float = 0.8, rescale: bool = True, trace: bool = False):
  """Square on one batch of items. Returns (x_adv_N, margin_N): the best point found (the first fooling one, if
  any) and its margin; with `trace`, also the best margin after every query (queries, N), constant once an
  item stops."""
  x_best, m_best = start(logits_fn, x0_N, y_N, eps_N, key_N)
  ones = jnp.ones_like(y_N, jnp.int32)
  out = search(logits_fn, x0_N, y_N, eps_N, key_N, x_best, m_best, ones, ones * queries, queries=queries,
               p_init=p_init, rescale=rescale, trace_length=queries - 1 if trace else 0)
  if trace:
    return out[0], out[1], jnp.concatenate([m_best[None], out[3]])
  return out[0], out[1]


def square_items(logits_fn: LogitsFn, x0_N, y_N, eps_N, key_N, active_N, *, queries: int, p_init: float,
                 batch: int, rescale: bool = True):
  """Square on the active items only: (x_adv_N, fooled_N), x_adv = x0 where not fooled (an inactive item is
  neither attacked nor fooled).

  Like the reference code, which queries only the images still to fool, every query runs on the live items
  only (an item stays live until it is fooled or has made `queries` queries): the first `batch` of them, moved
  to the front and padded to the smallest of `items.sizes(batch)` that holds them (the model is traced once
  per size), so a query costs at most batch/4 rows more than the live items need. An item fooled frees its place
  for the next one at the following query.
  """
  n = x0_N.shape[0]
  batch = max(1, min(batch, n))
  args = dict(x0=x0_N, y=y_N, eps=eps_N, key=key_N)
  first = lambda a: start(logits_fn, a["x0"], a["y"], a["eps"], a["key"])
  x_best, m_best = items.compact(first, active_N, args, (x0_N, jnp.ones_like(eps_N)), batch, steps=1)
  q_N = jnp.where(active_N, 1, queries).astype(jnp.int32)
  live = lambda m, q: (m > 0) & (q < queries)
  ladder = items.sizes(batch)

  def query(size: int, state):
    x_best, m_best, q_N = state
    live_N = live(m_best, q_N)
    idx = jnp.argsort(~live_N, stable=True)[:size]             # the first live items, in order
    on = live_N[idx]
    take = lambda v: v[idx]
    xb, mb, qb = step(logits_fn, take(x0_N), take(y_N), take(eps_N), take(key_N), take(x_best), take(m_best),
                      take(q_N), on, queries=queries, p_init=p_init, rescale=rescale)
    at = jnp.where(on, idx, n)                                  # n: out of range, dropped
    return (x_best.at[at].set(xb, mode="drop"), m_best.at[at].set(mb, mode="drop"), q_N.at[at].set(qb, mode="drop"))

  body = lambda state: items.at_size(ladder, jnp.sum(live(state[1], state[2])), query, state)

  x_best, m_best, q_N = jax.lax.while_loop(lambda s: jnp.any(live(s[1], s[2])), body, (x_best, m_best, q_N))
  fooled = active_N & (m_best <= 0)
  return jnp.where(items.per_item(fooled, x0_N), x_best, x0_N), fooled
