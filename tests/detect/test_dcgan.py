"""DCGAN: shapes and [0, 1] pixels for any (H, W, C) with H, W divisible by 4, each update touching only its own
network, one compilation, bit-identical resume through `fit`, and a short run that moves samples to the data."""

import dataclasses
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resume_check import resumes_bit_identically
from vqdefense_jax.core import training
from vqdefense_jax.core.errors import VQDefenseError
from vqdefense_jax.detect import dcgan

TINY = dcgan.DCGANStep(latent=8, width=8, seed=0)
SHAPE = (8, 8, 1)
GROUPS = ("generator", "discriminator")
LABELS = np.zeros(32, np.int32)  # unused by the DCGAN; the same in every test, so they share one compiled step


def _images(n=32, shape=SHAPE, seed=0):
  return jnp.asarray(np.random.default_rng(seed).uniform(0, 1, (n,) + shape), jnp.float32)


@functools.lru_cache(maxsize=None)
def _updates(step: dcgan.DCGANStep):
  """The two updates, compiled once per (equal) step for the whole file."""
  return jax.jit(step.d_update), jax.jit(step.g_update, static_argnums=1)


def _differs(a, b) -> bool:
  return any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _changed(before: dcgan.DCGANParams, after: dcgan.DCGANParams) -> set[str]:
  """The networks with any parameter not bit-identical."""
  return {g for g in GROUPS if _differs(getattr(before, g), getattr(after, g))}


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(24, 24, 1), (16, 16, 3)])
def test_output_shapes_and_pixel_range_for_any_image_shape(shape):
  step = dcgan.DCGANStep(latent=8, width=4, seed=1)
  params = step.init(shape).params
  fakes = dcgan.sample(params, jax.random.key(0), 5, shape)
  chex.assert_shape(fakes, (5,) + shape)
  assert fakes.dtype == jnp.float32 and float(fakes.min()) >= 0 and float(fakes.max()) <= 1
  logits = params.nets.discriminator.apply({"params": params.discriminator}, fakes)
  chex.assert_shape(logits, (5,))
  # G starts at (H/4, W/4, 2·width) and up-samples twice; D's dense layer sees (H/4, W/4, 2·width).
  h, w, c = shape
  assert params.generator["Dense_0"]["kernel"].shape == (8, h // 4 * (w // 4) * 8)
  assert params.generator["ConvTranspose_1"]["kernel"].shape == (4, 4, 4, c)
  assert params.discriminator["Dense_0"]["kernel"].shape == (h // 4 * (w // 4) * 8, 1)
  with pytest.raises(VQDefenseError, match="makes images of shape"):
    dcgan.sample(params, jax.random.key(0), 5, (h, w, c + 1))


@pytest.mark.slow
def test_init_is_a_function_of_the_seed_and_bad_shapes_are_clear_errors():
  chex.assert_trees_all_equal(TINY.init(SHAPE), TINY.init(SHAPE))
  same = dcgan.DCGANStep(latent=8, width=8, seed=0)
  assert same == TINY and hash(same) == hash(TINY)  # so `fit`'s compiled step is shared by equal steps
  other = dcgan.DCGANStep(latent=8, width=8, seed=1).init(SHAPE)
  assert _changed(TINY.init(SHAPE).params, other.params) == set(GROUPS)
  with pytest.raises(VQDefenseError, match="divisible by 4"):
    TINY.init((10, 8, 1))
  with pytest.raises(VQDefenseError, match="divisible by 4"):
    TINY.init((8, 6, 3))
  with pytest.raises(VQDefenseError, match=r"\(H, W, C\)"):
    TINY.init((8, 8))
  with pytest.raises(VQDefenseError, match="sizes must be >= 1"):
    dcgan.DCGANStep(width=0)
  with pytest.raises(VQDefenseError, match="learning_rate"):
    dcgan.DCGANStep(learning_rate=0.0)


@pytest.mark.slow
def test_each_update_changes_only_its_own_network_and_adam_state():
  state, key = TINY.init(SHAPE), jax.random.key(1)
  d_update, g_update = _updates(TINY)
  d, m_d = d_update(state, _images(8), key)
  g, m_g = g_update(state, 8, key)
  assert _changed(state.params, d.params) == {"discriminator"}
  assert _changed(state.params, g.params) == {"generator"}
  assert _differs(state.opt_d, d.opt_d) and not _differs(state.opt_g, d.opt_g)
  assert _differs(state.opt_g, g.opt_g) and not _differs(state.opt_d, g.opt_d)
  # At init D's logits are near 0, so both losses are near their chance values: 2·log 2 and log 2.
  np.testing.assert_allclose(m_d["d_loss"], 2 * np.log(2), atol=0.3)
  np.testing.assert_allclose(m_g["g_loss"], np.log(2), atol=0.3)


@pytest.mark.slow
def test_a_step_is_the_two_updates_in_turn_and_loss_is_their_sum():
  state, x = TINY.init(SHAPE), _images()
  idx = np.arange(8, 16)
  new, m = training.compiled_step(TINY, state, idx, x, LABELS, None)
  assert set(m) == {"loss", "d_loss", "g_loss"}
  chex.assert_tree_all_finite(m)
  chex.assert_rank(list(m.values()), 0)
  k_d, k_g = jax.random.split(jax.random.fold_in(jax.random.key(TINY.seed), 0))
  d_update, g_update = _updates(TINY)
  s, m_d = d_update(state, x[idx], k_d)
  s, m_g = g_update(s, 8, k_g)
  chex.assert_trees_all_close(new, s.replace(step=s.step + 1), rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(m, dict(**m_d, **m_g, loss=m_d["d_loss"] + m_g["g_loss"]), rtol=1e-5)
  # (b) saw the D that (a) had just updated: on the initial params its loss differs.
  assert abs(float(g_update(state, 8, k_g)[1]["g_loss"]) - float(m["g_loss"])) > 1e-7
  assert int(new.step) == 1 and _changed(state.params, new.params) == set(GROUPS)


def _fit(tmp_path, tag, stop_at=None):
  return training.fit(TINY, lambda: TINY.init(SHAPE), training.IndexBatches(2, 32, 8), num_steps=6,
                      ckpt_dir=str(tmp_path / tag), name="dcgan", consts=(_images(), LABELS, None),
                      checkpoint_every=3, log_every=3, stop_at=stop_at)


@pytest.mark.slow
def test_fit_trains_it_and_a_resumed_run_is_bit_identical(tmp_path):
  full = resumes_bit_identically(lambda tag, stop_at=None: _fit(tmp_path, tag, stop_at))
  assert _changed(TINY.init(SHAPE).params, full.params) == set(GROUPS)


def _squares(n=256, size=8, seed=0):
  """A toy set: a fixed bright 4×4 square in the middle of a dark, noisy 8×8 image."""
  x = np.random.default_rng(seed).uniform(0, 0.1, (n, size, size, 1)).astype(np.float32)
  x[:, size // 4:3 * size // 4, size // 4:3 * size // 4] = 0.9
  return x


@pytest.mark.slow
def test_a_short_run_compiles_once_and_moves_the_mean_sample_to_the_data_mean():
  """200 steps at lr 1e-3 (DCGAN's 2e-4 needs far more steps), traced once. For seeds 0-5 the squared distance of
  the mean of 256 samples to the data mean fell from ~12.3 to 0.05-0.43; the test asks for 10× at seed 0."""
  x = _squares()
  step = dataclasses.replace(TINY, learning_rate=1e-3)  # TINY's networks: its compiled init is reused
  state = step.init(x.shape[1:])
  mean_dist = lambda p: float(jnp.sum(jnp.square(jnp.mean(dcgan.sample(p, jax.random.key(1), 256, x.shape[1:]),
                                                          axis=0) - x.mean(axis=0))))
  dist_init = mean_dist(state.params)
  x_dev = jnp.asarray(x)
  traced = jax.jit(chex.assert_max_traces(n=1)(lambda state, idx: step(state, idx, x_dev, None)))
  batches = training.IndexBatches(0, len(x), 32)
  for i in range(200):
    state, m = traced(state, batches(i))
  chex.assert_tree_all_finite(m)
  assert int(state.step) == 200
  assert mean_dist(state.params) < 0.1 * dist_init
