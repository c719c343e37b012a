"""RGB images through the detection system's models: ALAE, DCGAN and the detector init for (H, W, 3), take a
finite training step on a tiny batch and make (n, H, W, 3) samples in [0, 1] or one score per image; and RGB
faces from TFDS (celeb_a under `tfds.testing.mock_data`) feed them as they come out of `data.load_dataset`."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vqdefense_jax.core import data, training
from vqdefense_jax.detect import alae, dcgan, detector

SHAPES = [(16, 16, 3), (24, 24, 3)]
ALAE = alae.ALAEStep(latent=4, mapping_layers=2, hidden=16, seed=0)
DCGAN = dcgan.DCGANStep(latent=8, width=8, seed=0)
MODEL = detector.Detector((8, 16))


def _images(n, shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).uniform(0, 1, (n,) + shape), jnp.float32)


def _check_step(step, shape, images, metrics):
  """One step of a generator on `images`: finite scalar losses, every network changed, samples in range."""
  state = step.init(shape)
  new, m = training.compiled_step(step, state, np.arange(4), images, np.zeros(len(images), np.int32), None)
  assert set(metrics) <= set(m)
  chex.assert_tree_all_finite(m)
  chex.assert_rank(list(m.values()), 0)
  assert int(new.step) == 1
  for before, after in zip(jax.tree.leaves(state.params), jax.tree.leaves(new.params)):
    chex.assert_equal_shape([before, after])
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(new.params)))
  return new.params


def _check_samples(fakes, n, shape):
  chex.assert_shape(fakes, (n,) + shape)
  assert fakes.dtype == jnp.float32 and float(fakes.min()) >= 0 and float(fakes.max()) <= 1
  chex.assert_tree_all_finite(fakes)


@pytest.mark.slow
@pytest.mark.parametrize("shape", SHAPES)
def test_alae_trains_and_samples_rgb(shape):
  params = _check_step(ALAE, shape, _images(8, shape), {"loss", "d_loss", "g_loss", "latent_loss", "r1"})
  _check_samples(alae.sample(params, jax.random.key(0), 5, shape), 5, shape)
  _check_samples(alae.reconstruct(params, _images(3, shape, 1)), 3, shape)


@pytest.mark.slow
@pytest.mark.parametrize("shape", SHAPES)
def test_dcgan_trains_and_samples_rgb(shape):
  params = _check_step(DCGAN, shape, _images(8, shape), {"loss", "d_loss", "g_loss"})
  _check_samples(dcgan.sample(params, jax.random.key(0), 5, shape), 5, shape)


@pytest.mark.slow
@pytest.mark.parametrize("shape", SHAPES)
def test_detector_trains_and_scores_rgb(shape):
  step = detector.DetectorStep(MODEL, training.OptimizerSpec("adam", 3e-3))
  ts = step.init(detector.init_params(MODEL, 0, shape))
  x, y = np.asarray(_images(8, shape)), np.array([0, 1] * 4, np.int32)
  new, m = jax.jit(step.__call__)(ts, (x, y))
  chex.assert_tree_all_finite(m)
  assert int(new.step) == 1 and 0 <= float(m["accuracy"]) <= 1
  p = detector.scores(MODEL, new.params, x, batch=3)             # three batches, the last one short
  chex.assert_shape(p, (8,))
  assert p.dtype == np.float32 and np.all((p >= 0) & (p <= 1))


@pytest.mark.slow
def test_rgb_faces_from_tfds_feed_the_generators_and_the_detector():
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=8):
    ds = data.load_dataset(data.DataSpec(source="tfds", auto_fetch=False, image_size=16, test_subset=4,
                                         dataset="celeb_a"))
  shape = ds.train_images.shape[1:]
  assert shape == (16, 16, 3) and ds.num_classes == 0
  faces = jnp.asarray(ds.train_images)
  a = _check_step(ALAE, shape, faces, {"loss"})
  d = _check_step(DCGAN, shape, faces, {"loss"})
  fakes = np.concatenate([np.asarray(alae.sample(a, jax.random.key(1), 2, shape)),
                          np.asarray(dcgan.sample(d, jax.random.key(2), 2, shape))])
  images = np.concatenate([ds.test_images, fakes])
  p = detector.scores(MODEL, detector.init_params(MODEL, 0, shape), images)
  chex.assert_shape(p, (8,))
  assert np.all(np.isfinite(p))
