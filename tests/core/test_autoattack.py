"""Square, APGD-T, FAB-T and AutoAttack's suite: their defining properties, on small linear models."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linprog

from vqdefense_jax.core import attacks
from vqdefense_jax.core.attacks import autoattack, autopgd, fab, items, square
from vqdefense_jax.core.errors import VQDefenseError


def _linear(num_classes: int = 10, n: int = 12, side: int = 6, seed: int = 0):
  """A linear classifier on side×side×1 images, images in [0.3, 0.7] (the box never binds at small ε), and
  labels = its own predictions (every image is attacked)."""
  w = jax.random.normal(jax.random.key(seed), (side * side, num_classes))
  f = lambda x: x.reshape(x.shape[0], -1) @ w
  x = jax.random.uniform(jax.random.key(seed + 1), (n, side, side, 1), minval=0.3, maxval=0.7)
  return f, w, x, jnp.argmax(f(x), -1)


def _masked(f, how: str):
  """f forward; backward a zero or a random gradient: a model whose gradient is masked."""

  @jax.custom_vjp
  def g(x):
    return f(x)

  def fwd(x):
    return f(x), x

  def bwd(x, ct):
    del ct
    if how == "zero":
      return (jnp.zeros_like(x),)
    return (jax.random.normal(jax.random.key(7), x.shape),)

  g.defvjp(fwd, bwd)
  return g


def _items(x, eps: float, seed: int = 3):
  n = x.shape[0]
  return jnp.full((n,), eps), items.item_keys(jax.random.key(seed), jnp.arange(n), jnp.zeros(n, jnp.int32))


def _accuracy(f, x_adv, y) -> float:
  return float(jnp.mean(jnp.argmax(f(x_adv), -1) == y))


# --- Square --------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_square_stays_in_the_ball_and_the_box_and_its_margin_never_increases():
  f, _, x, y = _linear()
  x = x.at[0].set(jnp.clip(x[0] * 3 - 1, 0, 1))             # some pixels at the box's edges
  eps_N, key_N = _items(x, 0.1)
  x_adv, m, history = jax.jit(lambda x: square.square(f, x, y, eps_N, key_N, queries=150, trace=True))(x)
  chex.assert_shape(history, (150, x.shape[0]))
  assert float(jnp.abs(x_adv - x).max()) <= 0.1 + 1e-6
  assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
  assert bool(jnp.all(jnp.diff(history, axis=0) <= 0)), "a margin went up"
  np.testing.assert_array_equal(history[-1], m)
  np.testing.assert_allclose(m, attacks.margin(f(x_adv), y), rtol=1e-5, atol=1e-5)   # the margin of x_adv itself
  assert float((history[0] - history[-1]).max()) > 0          # it searched


@pytest.mark.slow
def test_square_breaks_an_undefended_linear_model():
  f, _, x, y = _linear()
  eps_N, key_N = _items(x, 0.2)
  x_adv, m = square.square(f, x, y, eps_N, key_N, queries=300)
  assert _accuracy(f, x_adv, y) == 0.0 and bool(jnp.all(m <= 0))


@pytest.mark.slow
def test_square_needs_no_gradient_where_pgd_is_stopped_by_a_masked_one():
  f, _, x, y = _linear()
  eps = jnp.array([0.1])
  plain, zero, noise = f, _masked(f, "zero"), _masked(f, "random")
  sq = attacks.Attack("square", queries=200)
  run = lambda g, atk: attacks.run(atk, g, x, y, eps, key=jax.random.key(0))[0]
  acc_square = [_accuracy(f, run(g, sq), y) for g in (plain, zero, noise)]
  assert acc_square[0] == acc_square[1] == acc_square[2] < 0.5   # the same: it never asks for a gradient
  pgd = attacks.Attack("pgd", steps=20, step_size=0.1)
  acc_pgd = [_accuracy(f, run(g, pgd), y) for g in (plain, zero, noise)]
  assert acc_pgd[0] <= acc_square[0]                          # PGD breaks the plain model too ...
  assert acc_pgd[1] == 1.0 and acc_pgd[2] > acc_square[0] + 0.3   # ... and fails where its gradient is masked


def test_square_schedule_and_window_follow_the_paper():
  p = lambda i, q=10_000: float(square.p_at(jnp.asarray(i), q, 0.8)) / 0.8   # as a fraction of p_init
  assert [p(i) for i in (0, 10, 11, 50, 51, 200, 201, 8000, 8001)] == pytest.approx(
      [1, 1, 1 / 2, 1 / 2, 1 / 4, 1 / 4, 1 / 8, 1 / 256, 1 / 512])
  assert [p(5, q=5000), p(6, q=5000)] == pytest.approx([1, 1 / 2])   # the schedule rescaled to 5,000 queries
  side = lambda i: int(square.side_at(jnp.asarray(i), 10_000, 0.8, 24))
  assert side(0) == round((0.8 * 24 * 24) ** 0.5) == 21 and side(9999) == 1


@pytest.mark.slow
def test_square_depends_on_the_item_not_on_the_rest_of_its_batch():
  f, _, x, y = _linear()
  eps_N, key_N = _items(x, 0.05)
  run = lambda sel: square.square(f, x[sel], y[sel], eps_N[sel], key_N[sel], queries=100)[0]
  whole, part = run(np.arange(12)), run(np.array([7, 2, 9]))
  np.testing.assert_allclose(part, whole[np.array([7, 2, 9])], atol=1e-6)


@pytest.mark.slow
def test_square_items_queries_only_live_items_padded_to_the_next_size():
  """Each query runs on the live items only (the first `batch` of them), padded to the smallest of
  items.sizes(batch) that holds them; the result does not depend on the batch."""
  f, _, x, y = _linear(n=12)
  eps_N, key_N = _items(x, 0.05)
  active = jnp.arange(12) % 4 != 1                              # 9 of 12 items asked for
  assert items.sizes(8) == (2, 4, 6, 8) and items.sizes(3) == (1, 2, 3) and items.sizes(1) == (1,)
  runs = []

  def counted(v):
    jax.debug.callback(lambda a: runs.append(a.shape[0]), v[:, 0, 0, 0])
    return f(v)

  out = {b: square.square_items(counted if b == 8 else f, x, y, eps_N, key_N, active, queries=40, p_init=0.8,
                                batch=b) for b in (8, 3, 12)}
  first, queries = runs[:2], runs[2:]                           # the start: 9 items, in two batches of 8
  assert first == [8, 8] and queries and set(queries) <= {2, 4, 6, 8}
  assert queries == sorted(queries, reverse=True)               # live items only get fewer
  for b in (3, 12):
    np.testing.assert_array_equal(out[b][1], out[8][1])
    np.testing.assert_allclose(out[b][0], out[8][0], atol=1e-6)
  fooled = np.asarray(out[8][1])
  assert not fooled[~np.asarray(active)].any() and 0 < fooled.sum() < 9
  np.testing.assert_array_equal(np.asarray(out[8][0])[~fooled], np.asarray(x)[~fooled])


@pytest.mark.slow
def test_square_runs_at_its_own_batch_not_the_gradient_attacks():
  """attacks.run: Square's queries take `query_batch` items at a time, not the gradient attacks' `batch`;
  attack.batch, when set, overrides both."""
  f, _, x, y = _linear(n=6)
  seen = []

  def counted(v):
    jax.debug.callback(lambda a: seen.append(a.shape[0]), v[:, 0, 0, 0])
    return f(v)

  for atk, expected_max in ((attacks.Attack("square", queries=20), 6),
                            (attacks.Attack("square", queries=20, batch=3), 3)):
    seen.clear()
    attacks.run(atk, counted, x, y, jnp.array([0.05]), key=jax.random.key(0), batch=2, query_batch=6)
    assert max(seen[1:]) == expected_max, (atk.batch, seen)   # seen[0]: the clean pass over all 6


# --- APGD-T ----------------------------------------------------------------------------------------------------

def test_targeted_dlr_is_the_formula_and_targets_come_in_rank_order():
  z = jnp.array([[3.0, 1.0, 2.5, -1.0, 0.5]])
  want = -(3.0 - 2.5) / (3.0 - 0.5 * (1.0 + 0.5) + 1e-12)       # π1 = 3, π3 = 1, π4 = 0.5
  np.testing.assert_allclose(attacks.dlr_targeted(z, jnp.array([0]), jnp.array([2])), [want], rtol=1e-6)
  assert [int(autopgd.target_of_rank(z, r)[0]) for r in (2, 3, 4, 5)] == [2, 1, 4, 3]
  with pytest.raises(VQDefenseError, match="4 or more classes"):
    attacks.dlr_targeted(z[:, :3], jnp.array([0]), jnp.array([1]))


@pytest.mark.slow
def test_apgd_t_fools_a_linear_model_within_the_ball():
  f, _, x, y = _linear()
  eps_N, key_N = _items(x, 0.1)
  active = jnp.ones(x.shape[0], bool)
  x_adv, fooled = autopgd.apgd_targeted(f, x, y, eps_N, key_N, f(x), active, steps=20, targets=3, batch=5)
  assert float(jnp.abs(x_adv - x).max()) <= 0.1 + 1e-6
  np.testing.assert_array_equal(fooled, jnp.argmax(f(x_adv), -1) != y)
  assert float(fooled.mean()) > 0.5
  with pytest.raises(VQDefenseError, match="targets"):
    autopgd.apgd_targeted(f, x, y, eps_N, key_N, f(x), active, steps=5, targets=10, batch=5)


# --- FAB-T -----------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_projection_linf_is_the_smallest_linf_step_onto_the_hyperplane_in_the_box():
  rng = np.random.default_rng(0)
  for d in (1, 2, 5, 8):
    t, w = rng.uniform(0, 1, (15, d)), rng.normal(size=(15, d))
    w[::4, rng.integers(0, d)] = 0.0
    b = np.sum(w * rng.uniform(0, 1, (15, d)), axis=1)        # each hyperplane meets the box
    steps = np.asarray(fab.projection_linf(*(jnp.asarray(v, jnp.float32) for v in (t, w, b))))
    for t_i, w_i, b_i, step in zip(t, w, b, steps):
      # The same problem as a linear programme: min τ s.t. |d_i| ≤ τ, w·(t + d) = b, 0 ≤ t + d ≤ 1.
      lp = linprog(np.r_[np.zeros(d), 1.0], np.r_[np.c_[np.eye(d), -np.ones(d)], np.c_[-np.eye(d), -np.ones(d)]],
                   np.zeros(2 * d), np.r_[w_i, 0.0][None], [b_i - w_i @ t_i],
                   bounds=[(-v, 1 - v) for v in t_i] + [(0, None)])
      assert abs(np.abs(step).max() - lp.fun) < 1e-4, (d, step, lp.x)
      assert abs(w_i @ (t_i + step) - b_i) < 1e-4 and (t_i + step).min() > -1e-6 and (t_i + step).max() < 1 + 1e-6


@pytest.mark.slow
def test_fab_finds_the_smallest_perturbation_of_a_linear_model():
  f, w, x, y = _linear(num_classes=2)
  dist_true = jnp.abs(f(x) @ jnp.array([1.0, -1.0])) / jnp.abs(w[:, 0] - w[:, 1]).sum()   # |g(x)| / ‖∇g‖₁
  adv, dist = fab.fab_run(f, x, y, 1 - y, steps=30)
  assert bool(jnp.all(jnp.argmax(f(adv), -1) != y))
  np.testing.assert_allclose(dist, jnp.abs(adv - x).reshape(x.shape[0], -1).max(-1), rtol=1e-6)
  assert bool(jnp.all(dist >= dist_true * (1 - 1e-4))), "below the minimum: impossible"
  assert bool(jnp.all(dist <= dist_true * 1.05)), (dist / dist_true)     # within FAB's 5% overshoot


@pytest.mark.slow
def test_fab_t_counts_only_what_it_found_within_eps():
  f, w, x, y = _linear(num_classes=2)
  dist_true = jnp.abs(f(x) @ jnp.array([1.0, -1.0])) / jnp.abs(w[:, 0] - w[:, 1]).sum()
  eps_N = jnp.where(jnp.arange(x.shape[0]) % 2 == 0, dist_true * 0.8, dist_true * 1.2)   # below / above the minimum
  x_adv, fooled = fab.fab_targeted(f, x, y, eps_N, f(x), jnp.ones(x.shape[0], bool), steps=30, targets=1, batch=4)
  np.testing.assert_array_equal(fooled, jnp.arange(x.shape[0]) % 2 == 1)
  np.testing.assert_array_equal(x_adv[::2], x[::2])                   # not found within ε: the clean image
  assert bool(jnp.all(jnp.abs(x_adv - x).reshape(x.shape[0], -1).max(-1) <= eps_N + 1e-7))


# --- the suite -------------------------------------------------------------------------------------------------

def _suite(f, forward, x, y, eps: float, batch: int = 0, queries: int = 200):
  eps_N, key_N = _items(x, eps)
  return autoattack.autoattack(f, forward, x, y, eps_N, key_N, forward(x), jnp.ones(x.shape[0], bool), steps=10,
                               targets=3, queries=queries, batch=batch)


@pytest.mark.slow
def test_the_suite_stops_at_the_first_member_that_fools():
  f, _, x, y = _linear()
  x_adv, by = _suite(f, f, x, y, 0.3)
  assert set(np.asarray(by).tolist()) == {attacks.OUTCOMES.index("apgd_ce")}   # APGD-CE fools all: no one else runs
  np.testing.assert_array_equal(jnp.argmax(f(x_adv), -1) != y, True)
  counts = autoattack.outcome_counts(by, jnp.ones_like(y))
  assert int(counts.sum()) == x.shape[0]


@pytest.mark.slow
def test_on_a_masked_gradient_square_fools_what_the_gradient_members_missed():
  f, _, x, y = _linear()
  y = y.at[0].set((y[0] + 1) % 10)                              # one image wrong before any attack
  names = lambda by: [attacks.OUTCOMES[i] for i in np.asarray(by)]
  _, by_plain = _suite(f, f, x, y, 0.08, queries=300)
  x_adv, by = _suite(_masked(f, "zero"), f, x, y, 0.08, queries=300)
  assert names(by)[0] == names(by_plain)[0] == "clean"
  # With a zero gradient the gradient members fool only by their random starts; Square finds the rest.
  assert "square" in names(by) and "square" not in names(by_plain)
  gradient = lambda by: sum(n in ("apgd_ce", "apgd_t", "fab_t") for n in names(by))
  assert gradient(by) < gradient(by_plain)
  untouched = np.isin(names(by), ["robust", "clean"])
  np.testing.assert_array_equal(np.asarray(x_adv)[untouched], np.asarray(x)[untouched])
  assert bool(jnp.all((jnp.argmax(f(x_adv), -1) != y)[~untouched]))


@pytest.mark.slow
def test_the_suite_does_not_depend_on_how_items_are_batched():
  f, _, x, y = _linear()
  whole, by_whole = _suite(f, f, x, y, 0.05)
  part, by_part = _suite(f, f, x, y, 0.05, batch=5)
  np.testing.assert_array_equal(by_whole, by_part)
  np.testing.assert_allclose(whole, part, atol=1e-6)


@pytest.mark.slow
def test_compact_runs_only_on_active_items_and_keeps_the_rest():
  calls = []
  fn = lambda a: (calls.append(a["v"].shape) or a["v"] * 10.0)
  active = jnp.array([False, True, False, True, True, False, False, True, True, True, True])
  out = items.compact(fn, active, dict(v=jnp.arange(11.0)), jnp.full(11, -1.0), batch=4)
  np.testing.assert_array_equal(out, [-1, 10, -1, 30, 40, -1, -1, 70, 80, 90, 100])
  assert calls == [(1,), (2,), (3,), (4,)]        # traced once per size of items.sizes(4)
  assert items.sizes(4) == (1, 2, 3, 4) and items.sizes(20) == (5, 10, 15, 20) and items.sizes(2) == (1, 2)
  # Larger batches get up to MAX_SIZES sizes, so a padded batch wastes at most MAX_PAD rows where it can.
  assert items.sizes(50) == (8, 15, 22, 29, 36, 43, 50) and items.sizes(64) == tuple(range(8, 65, 8))
  for b in range(1, 300):
    ladder = items.sizes(b)
    assert ladder[-1] == b and len(ladder) <= items.MAX_SIZES
    assert max(np.diff((0,) + ladder)) <= max(items.MAX_PAD, -(-b // items.MAX_SIZES))
  none = items.compact(fn, jnp.zeros(11, bool), dict(v=jnp.arange(11.0)), jnp.zeros(11), batch=4)
  np.testing.assert_array_equal(none, 0.0)
  # How fn runs: full batches of 4 while 4 are left, then the rest at the next size that holds them.
  runs = []
  count = lambda a: (jax.debug.callback(lambda v: runs.append(v.shape[0]), a["v"]), a["v"])[1]
  for extra, expected in (([], [4, 3]), ([0, 2], [4, 4, 1]), ([0], [4, 4])):
    runs.clear()
    items.compact(count, active.at[jnp.array(extra, int)].set(True), dict(v=jnp.arange(11.0)), jnp.zeros(11), batch=4)
    assert runs == expected, (extra, runs)


@pytest.mark.slow
def test_run_gives_each_item_attack_and_the_suite_outcomes_on_the_eps_vector():
  f, _, x, y = _linear(n=4)
  eps = jnp.array([0.0, 0.05, 0.3])
  atk = attacks.Attack("autoattack", steps=5, targets=2, queries=50)
  x_adv, by = attacks.run(atk, f, x, y, eps, key=jax.random.key(0), outcomes=True)
  chex.assert_shape(x_adv, (3, 4, 6, 6, 1))
  chex.assert_shape(by, (3, 4))
  np.testing.assert_array_equal(x_adv[0], x)                    # ε = 0: nothing fools
  assert set(np.asarray(by[0]).tolist()) == {attacks.OUTCOMES.index("robust")}
  for name in ("apgdt", "fabt", "square"):
    with pytest.raises(VQDefenseError, match="PRNG key"):
      attacks.run(attacks.Attack(name), f, x, y, eps)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["square", "autoattack"])
def test_images_left_out_of_attack_b_come_back_unchanged_and_the_rest_as_if_alone(name):
  """The grid leaves a chunk's padding out (attack_B): it costs nothing, and the real images' results do not
  depend on it (each item is keyed by its own image index)."""
  f, _, x, y = _linear(n=6)
  eps = jnp.array([0.05, 0.3])
  atk = attacks.Attack(name, steps=3, targets=2, queries=30)
  run = lambda x, y, idx, mask: attacks.run(atk, f, x, y, eps, key=jax.random.key(0), index_B=idx, attack_B=mask)
  mask = jnp.array([True, False, True, True, False, True])
  x_adv = run(x, y, jnp.arange(6), mask)
  np.testing.assert_array_equal(x_adv[:, ~np.asarray(mask)], jnp.broadcast_to(x[~mask], x_adv[:, ~mask].shape))
  keep = np.flatnonzero(np.asarray(mask))
  alone = run(x[keep], y[keep], jnp.asarray(keep), None)
  np.testing.assert_allclose(x_adv[:, keep], alone, atol=1e-6)
  assert bool(jnp.any(x_adv[1, keep] != x[keep]))                 # ε = 0.3: the real images were attacked
