"""ALAE: shapes for any (H, W, C), the three updates each touching only their own networks, R1 against known
gradients, one compilation, bit-identical resume, a short run that learns, and the Fréchet distance's closed form."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from resume_check import resumes_bit_identically
from vqdefense_jax.core import classifier, training
from vqdefense_jax.core.errors import VQDefenseError
from vqdefense_jax.detect import alae

TINY = alae.ALAEStep(latent=4, mapping_layers=2, hidden=16, seed=0)
SHAPE = (8, 8, 1)
GROUPS = ("mapping", "generator", "encoder", "discriminator")
LABELS = np.zeros(32, np.int32)  # unused by ALAE; the same in every test, so they share one compiled step


def _images(n=32, shape=SHAPE, seed=0):
  return jnp.asarray(np.random.default_rng(seed).uniform(0, 1, (n,) + shape), jnp.float32)


@functools.lru_cache(maxsize=None)
def _updates(step: alae.ALAEStep):
  """The three updates, compiled once per (equal) step for the whole file."""
  return jax.jit(step.d_update), jax.jit(step.g_update, static_argnums=1), jax.jit(step.ae_update, static_argnums=1)


def _changed(before: alae.ALAEParams, after: alae.ALAEParams) -> set[str]:
  """The groups with any parameter not bit-identical."""
  differs = lambda a, b: any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  return {g for g in GROUPS if differs(getattr(before, g), getattr(after, g))}


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(24, 24, 1), (16, 16, 3)])
def test_output_shapes_and_pixel_range_for_any_image_shape(shape):
  step = alae.ALAEStep(latent=8, hidden=32, seed=1)
  params = step.init(shape).params
  x_a, x_b = _images(3, shape, 1), _images(3, shape, 2)
  fakes = alae.sample(params, jax.random.key(0), 5, shape)
  rec = alae.reconstruct(params, x_a)
  path = alae.interpolate(params, x_a, x_b, 4)
  chex.assert_shape(fakes, (5,) + shape)
  chex.assert_shape(rec, (3,) + shape)
  chex.assert_shape(path, (3, 4) + shape)
  for out in (fakes, rec, path):
    assert out.dtype == jnp.float32 and float(out.min()) >= 0 and float(out.max()) <= 1
  # The path starts and ends at the reconstructions of its ends (w = E(x_a), E(x_b)).
  np.testing.assert_allclose(path[:, 0], rec, atol=1e-6)
  np.testing.assert_allclose(path[:, -1], alae.reconstruct(params, x_b), atol=1e-6)
  # ALAE's MNIST MLPs: hidden-hidden, output H·W·C.
  assert params.generator["EqualizedDense_2"]["kernel"].shape == (32, int(np.prod(shape)))
  assert params.encoder["EqualizedDense_0"]["kernel"].shape == (int(np.prod(shape)), 32)
  assert len(params.mapping) == 6 and len(params.discriminator) == 3


@pytest.mark.slow
def test_one_step_has_finite_losses_and_loss_is_their_sum():
  state = TINY.init(SHAPE)
  new, m = training.compiled_step(TINY, state, np.arange(8), _images(), LABELS, None)
  assert set(m) == {"loss", "d_loss", "g_loss", "latent_loss", "r1"}
  chex.assert_tree_all_finite(m)
  chex.assert_rank(list(m.values()), 0)
  np.testing.assert_allclose(m["loss"], m["d_loss"] + m["g_loss"] + m["latent_loss"], rtol=1e-6)
  assert int(new.step) == 1 and _changed(state.params, new.params) == set(GROUPS)


@pytest.mark.slow
def test_init_is_a_function_of_the_seed_and_bad_shapes_are_clear_errors():
  chex.assert_trees_all_equal(TINY.init(SHAPE), TINY.init(SHAPE))
  same = alae.ALAEStep(latent=4, mapping_layers=2, hidden=16, seed=0)
  assert same == TINY and hash(same) == hash(TINY)  # so `fit`'s compiled step is shared by equal steps
  other = alae.ALAEStep(latent=4, mapping_layers=2, hidden=16, seed=1).init(SHAPE)
  assert _changed(TINY.init(SHAPE).params, other.params) == set(GROUPS)
  with pytest.raises(VQDefenseError, match=r"\(H, W, C\)"):
    TINY.init((8, 8))
  with pytest.raises(VQDefenseError, match="sizes must be >= 1"):
    alae.ALAEStep(latent=0)
  params = TINY.init(SHAPE).params
  with pytest.raises(VQDefenseError, match=r"makes images of shape \(8, 8, 1\), not \(8, 8, 3\)"):
    alae.sample(params, jax.random.key(0), 2, (8, 8, 3))
  with pytest.raises(VQDefenseError, match="not"):
    TINY(TINY.init(SHAPE), np.arange(4), _images(8, (9, 9, 1)), None)


@pytest.mark.slow
def test_r1_penalty_of_critics_with_known_gradients():
  x = _images(4, (5, 5, 2))
  a = jnp.asarray(np.random.default_rng(3).normal(size=(5, 5, 2)), jnp.float32)
  linear = lambda x: jnp.sum(x * a[None], axis=(1, 2, 3))          # ∇ = a for every example
  quadratic = lambda x: jnp.sum(jnp.square(x), axis=(1, 2, 3))     # ∇ = 2x
  np.testing.assert_allclose(alae.r1_penalty(linear, x), np.full(4, float(jnp.sum(a * a))), rtol=1e-5)
  np.testing.assert_allclose(alae.r1_penalty(quadratic, x), 4 * jnp.sum(x * x, axis=(1, 2, 3)), rtol=1e-5)


@pytest.mark.slow
def test_r1_of_the_network_is_per_example_and_enters_the_d_loss_with_gamma_over_two():
  state = TINY.init(SHAPE)
  x_pm = alae.to_alae(_images(6))
  critic = jax.jit(functools.partial(alae._critic, state.params))
  r1 = jax.jit(alae.r1_penalty, static_argnums=0)
  # The batch-sum trick gives each example its own gradient: the same as one example at a time.
  alone = jnp.concatenate([r1(critic, x_pm[i:i + 1]) for i in range(6)])
  np.testing.assert_allclose(r1(critic, x_pm), alone, rtol=1e-5)
  # The gradient is D∘E's: a central difference along a random direction agrees with it.
  v = jnp.asarray(np.random.default_rng(4).normal(size=x_pm.shape), jnp.float32)
  grad = jax.grad(lambda x: jnp.sum(critic(x)))(x_pm)
  h = 1e-2
  fd = (critic(x_pm + h * v) - critic(x_pm - h * v)) / (2 * h)
  np.testing.assert_allclose(fd, jnp.sum(grad * v, axis=(1, 2, 3)), rtol=2e-2, atol=1e-3)
  np.testing.assert_allclose(r1(critic, x_pm), jnp.sum(grad * grad, axis=(1, 2, 3)), rtol=1e-5)
  # d_loss(γ) - d_loss(0) = γ/2 · mean R1, for the same state and noise.
  key, no_r1 = jax.random.key(7), alae.ALAEStep(latent=4, mapping_layers=2, hidden=16, r1_gamma=0.0, seed=0)
  x = _images(8)
  _, m10 = _updates(TINY)[0](state, x, key)
  _, m0 = _updates(no_r1)[0](state, x, key)
  np.testing.assert_allclose(m10["d_loss"] - m0["d_loss"], 5.0 * m10["r1"], rtol=1e-4)
  np.testing.assert_allclose(m10["r1"], jnp.mean(r1(critic, alae.to_alae(x))), rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("separate_adam", [False, True])
def test_each_update_changes_only_its_own_networks(separate_adam):
  step = alae.ALAEStep(latent=4, mapping_layers=2, hidden=16, separate_adam=separate_adam, seed=0)
  state = step.init(SHAPE)
  key = jax.random.key(1)
  d_update, g_update, ae_update = _updates(step)
  d, _ = d_update(state, _images(8), key)
  g, _ = g_update(state, 8, key)
  ae, _ = ae_update(state, 8, key)
  assert _changed(state.params, d.params) == {"encoder", "discriminator"}
  assert _changed(state.params, g.params) == {"mapping", "generator"}
  assert _changed(state.params, ae.params) == {"encoder", "generator"}
  # Each update advances only its optimiser states: (c) steps ALAE's two optimisers unless separate_adam.
  opt_changed = lambda s: {name for name in ("opt_d", "opt_g", "opt_ae")
                           if not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(getattr(state, name)),
                                                                          jax.tree.leaves(getattr(s, name))))}
  assert opt_changed(d) == {"opt_d"} and opt_changed(g) == {"opt_g"}
  assert opt_changed(ae) == ({"opt_ae"} if separate_adam else {"opt_d", "opt_g"})


@pytest.mark.slow
def test_a_step_is_the_three_updates_in_turn_each_on_the_last_ones_params():
  state, x = TINY.init(SHAPE), _images()
  idx = np.arange(8, 16)
  new, m = training.compiled_step(TINY, state, idx, x, LABELS, None)
  k_d, k_g, k_ae = jax.random.split(jax.random.fold_in(jax.random.key(TINY.seed), 0), 3)
  d_update, g_update, ae_update = _updates(TINY)
  s, m_d = d_update(state, x[idx], k_d)
  s, m_g = g_update(s, 8, k_g)
  s, m_ae = ae_update(s, 8, k_ae)
  chex.assert_trees_all_close(new, s.replace(step=s.step + 1), rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(m, dict(**m_d, **m_g, **m_ae, loss=m["loss"]), rtol=1e-5)
  # (b) saw the D that (a) had just updated: on the initial params its loss differs.
  assert abs(float(g_update(state, 8, k_g)[1]["g_loss"]) - float(m["g_loss"])) > 1e-6


def _fit(tmp_path, tag, stop_at=None):
  return training.fit(TINY, lambda: TINY.init(SHAPE), training.IndexBatches(2, 32, 8), num_steps=6,
                      ckpt_dir=str(tmp_path / tag), name="alae", consts=(_images(), LABELS, None), checkpoint_every=3,
                      log_every=3, stop_at=stop_at)


@pytest.mark.slow
def test_fit_trains_it_and_a_resumed_run_is_bit_identical(tmp_path):
  full = resumes_bit_identically(lambda tag, stop_at=None: _fit(tmp_path, tag, stop_at))
  assert _changed(TINY.init(SHAPE).params, full.params) == set(GROUPS)


def _blocks(n=256, seed=0):
  """A learnable toy set: a bright 3×3 block in one of four places on a dark, noisy 8×8 image."""
  rng = np.random.default_rng(seed)
  x = rng.uniform(0, 0.1, (n, 8, 8, 1)).astype(np.float32)
  for i, c in enumerate(rng.integers(0, 4, n)):
    r, col = divmod(int(c), 2)
    x[i, 1 + 4 * r:4 + 4 * r, 1 + 4 * col:4 + 4 * col] = 0.9
  return x


@pytest.mark.slow
def test_a_short_run_compiles_once_learns_the_latent_regression_and_moves_samples_toward_the_data():
  """800 steps (a few seconds), traced once. For seeds 0-7 the pixel-space Fréchet distance of samples to the
  data fell 3× or more and the latent loss 5× or more; the test asks for 2× at seed 0."""
  x = _blocks()
  step = alae.ALAEStep(latent=8, hidden=128, seed=0)
  state = step.init((8, 8, 1))
  pixel_fd = lambda p: alae.frechet_distance(np.asarray(alae.sample(p, jax.random.key(1), 512, (8, 8, 1))).reshape(
      512, -1), x.reshape(len(x), -1))
  fd_init = pixel_fd(state.params)
  x_dev = jnp.asarray(x)
  traced = jax.jit(chex.assert_max_traces(n=1)(lambda state, idx: step(state, idx, x_dev, None)))
  batches, latent = training.IndexBatches(0, len(x), 32), []
  for i in range(800):
    state, m = traced(state, batches(i))
    latent.append(m["latent_loss"])
  latent = np.asarray(jax.device_get(latent))
  assert latent[-50:].mean() < 0.5 * latent[:10].mean()
  assert pixel_fd(state.params) < 0.5 * fd_init


def _whitened(n, d, seed):
  """n samples whose sample mean is exactly 0 and sample covariance exactly I."""
  z = np.random.default_rng(seed).normal(size=(n, d))
  z -= z.mean(axis=0)
  return z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T


def test_frechet_distance_is_zero_for_identical_sets_and_the_closed_form_for_gaussians():
  a = np.random.default_rng(0).normal(size=(400, 6))
  assert abs(alae.frechet_distance(a, a)) < 1e-8
  mu_a, mu_b = np.array([0.0, 1.0, -2.0, 0.5]), np.array([1.0, 1.0, 0.0, 0.0])
  sd_a, sd_b = np.array([1.0, 2.0, 0.5, 1.0]), np.array([2.0, 1.0, 0.5, 3.0])
  feats_a, feats_b = mu_a + _whitened(300, 4, 1) * sd_a, mu_b + _whitened(500, 4, 2) * sd_b
  expected = np.sum((mu_a - mu_b) ** 2) + np.sum((sd_a - sd_b) ** 2)  # diagonal covariances: Tr(...) in closed form
  np.testing.assert_allclose(alae.frechet_distance(feats_a, feats_b), expected, rtol=1e-8)
  # Full covariances: the textbook formula with scipy's sqrtm of the product.
  rng = np.random.default_rng(5)
  feats_a, feats_b = rng.normal(size=(300, 5)) @ rng.normal(size=(5, 5)), rng.normal(size=(200, 5)) + 1.0
  cov_a, cov_b = np.cov(feats_a, rowvar=False), np.cov(feats_b, rowvar=False)
  textbook = (np.sum((feats_a.mean(0) - feats_b.mean(0)) ** 2) + np.trace(cov_a + cov_b)
              - 2 * np.trace(scipy.linalg.sqrtm(cov_a @ cov_b).real))
  np.testing.assert_allclose(alae.frechet_distance(feats_a, feats_b), textbook, rtol=1e-8)


def test_frechet_distance_survives_singular_covariances_and_rejects_bad_input():
  # A constant feature makes both covariances singular (where sqrtm of their product goes complex or inexact).
  feats_a = np.concatenate([_whitened(50, 3, 3), np.full((50, 1), 2.0)], axis=1)
  feats_b = np.concatenate([_whitened(80, 3, 4) * 2.0, np.full((80, 1), -1.0)], axis=1)
  got = alae.frechet_distance(feats_a, feats_b)
  assert isinstance(got, float) and np.isfinite(got)
  np.testing.assert_allclose(got, 9.0 + 3 * (2.0 - 1.0) ** 2, atol=1e-4)
  with pytest.raises(VQDefenseError, match="same D"):
    alae.frechet_distance(feats_a, feats_b[:, :3])
  with pytest.raises(VQDefenseError, match="N >= 2"):
    alae.frechet_distance(feats_a[:1], feats_b)


@pytest.mark.slow
def test_classifier_features_are_the_penultimate_activations_and_leave_the_logits_unchanged():
  params = classifier.init_params(0, 24)
  x = _images(5, (24, 24, 1))
  feats = classifier.features(params, x)
  chex.assert_shape(feats, (5, 128))
  assert float(feats.min()) >= 0  # after the ReLU
  assert set(params) == {"Conv_0", "Conv_1", "Dense_0", "Dense_1"}
  logits = classifier.logits_fn(params)(x)
  head = params["Dense_1"]
  np.testing.assert_allclose(logits, feats @ head["kernel"] + head["bias"][None, :], rtol=1e-5, atol=1e-5)
  # The MNIST FID of a set with itself is 0 in this feature space, up to the rounding of 124 zero eigenvalues
  # (5 samples of 128 features).
  np.testing.assert_allclose(alae.frechet_distance(np.asarray(feats), np.asarray(feats)), 0.0, atol=1e-4)
