"""Grad-CAM: equal to the hand-computed map of a small linear model, reading the very activations Flax records,
for the restorer's CBAM layers and the classifier; and the concentration ratio on hand-made maps."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vqdefense_jax.core import classifier
from vqdefense_jax.core import layers
from vqdefense_jax.restore import gan, gradcam


class Linear(nn.Module):
  """A 1×1 convolution ('features': A = x·W + b, K = 3 channels), then a dense layer to one score."""

  @nn.compact
  def __call__(self, x):
    a = layers.Conv(3, (1, 1), name="features")(x)
    return nn.Dense(1)(a.reshape(a.shape[0], -1))[:, 0]


@pytest.mark.slow
def test_gradcam_of_a_small_linear_model_equals_the_hand_computed_map():
  model = Linear()
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, 5, 2)), jnp.float32)
  params = model.init(jax.random.key(1), x)["params"]
  w, b = np.asarray(params["features"]["kernel"][0, 0]), np.asarray(params["features"]["bias"])
  v = np.asarray(params["Dense_0"]["kernel"][:, 0]).reshape(4, 5, 3)
  a = np.einsum("bhwc,ck->bhwk", np.asarray(x), w) + b      # A, by hand
  alpha = v.mean(axis=(0, 1))                                 # ∂s/∂A_ijk = v_ijk, averaged over positions
  expected = np.maximum(np.einsum("bhwk,k->bhw", a, alpha), 0)
  assert expected.max() > 0 and expected.min() == 0           # the ReLU matters on this input
  apply_fn = lambda x: model.apply({"params": params}, x)
  acts, grads, score = gradcam.layer_gradients(apply_fn, ("features",), x, lambda s: s)
  np.testing.assert_allclose(acts["features"], a, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(grads["features"], np.broadcast_to(v, a.shape), rtol=1e-6)
  np.testing.assert_allclose(score, apply_fn(x), rtol=1e-6)
  np.testing.assert_allclose(gradcam.cam(acts["features"], grads["features"]), expected, rtol=1e-5, atol=1e-6)
  maps, _ = gradcam.gradcam(apply_fn, ("features",), x, lambda s: s)
  chex.assert_shape(maps, (2, 1, 4, 5))                     # already at the input's size: resizing is identity
  np.testing.assert_allclose(maps[:, 0], expected, rtol=1e-5, atol=1e-6)


def test_concentration_on_hand_made_maps():
  mask = np.zeros((4, 4, 4), np.float32)
  mask[:, :2, :2] = 1                                         # the box: a quarter of the image
  maps = np.stack([np.ones((4, 4)),                           # uniform: as dense inside as outside -> 1
                   mask[0],                                   # all inside -> 1 / (1/4) = 4
                   1 - mask[0],                               # all outside -> 0
                   np.zeros((4, 4))]).astype(np.float32)      # no mass: undefined
  maps[2, 0, 0] = 3.0                                         # ... except 3 units inside out of 15 -> (3/15) / (1/4)
  c = np.asarray(gradcam.concentration(jnp.asarray(maps), jnp.asarray(mask)))
  np.testing.assert_allclose(c[:3], [1.0, 4.0, 0.8], rtol=1e-6)
  assert np.isnan(c[3])


@pytest.mark.slow
def test_restorer_gradcam_reads_the_cbam_layers_and_scores_d_of_g():
  step = gan.RestorerStep(width=4, blocks=1, d_width=4, d_layers=1, seed=0)  # the other tests' nets: compiled once
  params = step.init((16, 16, 1)).params
  x = jnp.asarray(np.random.default_rng(0).uniform(0, 1, (3, 16, 16, 1)), jnp.float32)
  maps, score = gradcam.restorer_gradcam(params, x)
  chex.assert_shape([maps, score], [(3, 1, 16, 16), (3,)])
  assert float(maps.min()) >= 0 and float(maps.max()) > 0
  np.testing.assert_allclose(score, gan.critic(params, gan.generate(params, x)).mean(axis=(1, 2)), rtol=1e-5)
  # The activations are the blocks' outputs (after CBAM), as Flax records them.
  g = params.nets.generator
  apply_fn = lambda x: g.apply({"params": params.generator}, x)
  acts, _, _ = gradcam.layer_gradients(apply_fn, g.layer_names, x, lambda y: y.mean(axis=(1, 2, 3)))
  _, rec = g.apply({"params": params.generator}, x, capture_intermediates=True, mutable=["intermediates"])
  for name in g.layer_names:
    np.testing.assert_allclose(acts[name], rec["intermediates"][name]["__call__"][0], rtol=1e-6)
  # Per example (the score summed over the batch): an image's map does not depend on the rest of its batch.
  others = x.at[0].set(1 - x[0]).at[2].set(x[2] ** 2)
  again, _ = gradcam.restorer_gradcam(params, others)
  np.testing.assert_allclose(again[1], maps[1], rtol=1e-4, atol=1e-7)
  assert not np.allclose(again[0], maps[0])


@pytest.mark.slow
def test_classifier_gradcam_at_its_last_convolution_for_a_class():
  model = classifier.Classifier()
  params = classifier.init_params(0, 16, model)
  x = jnp.asarray(np.random.default_rng(0).uniform(0, 1, (2, 16, 16, 1)), jnp.float32)
  target = jnp.asarray([3, 7])
  maps, logit = gradcam.classifier_gradcam(model, params, x, target)
  chex.assert_shape(maps, (2, 16, 16))
  assert float(maps.min()) >= 0
  np.testing.assert_allclose(logit, model.apply({"params": params}, x)[jnp.arange(2), target], rtol=1e-5)
