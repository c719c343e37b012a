import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vqdefense_jax.core.classifier import Classifier
from vqdefense_jax.purify.vqvae import VQVAE, latent_side, round_trips


@pytest.mark.slow
class ModelShapesTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_classifier_logits_shape(self):
    x = jnp.zeros((3, 24, 24, 1))
    params = Classifier().init(jax.random.key(0), x)
    logits = self.variant(lambda p, x: Classifier().apply(p, x))(params, x)
    chex.assert_shape(logits, (3, 10))
    chex.assert_tree_all_finite(logits)

  @chex.variants(with_jit=True, without_jit=True)
  def test_vqvae_reconstructs_at_input_size(self):
    for side, layout in [(24, "nchw_chunks"), (12, "nchw_chunks"), (32, "per_position"), (16, "per_position")]:
      model = VQVAE(channels=8, embedding_dim=8, k_max=10, layout=layout)
      x = jax.random.uniform(jax.random.key(side), (2, side, side, 1))
      v = model.init(jax.random.key(0), x, 6)
      x_hat = self.variant(model.reconstruct)(v, x)
      chex.assert_shape(x_hat, x.shape)
      chex.assert_tree_all_finite(x_hat)


@pytest.mark.slow
def test_table1_encoder_latent_sizes():
  model = VQVAE()
  x = jnp.zeros((1, 24, 24, 1))
  z = model.encoder.apply(model.encoder.init(jax.random.key(0), x), x)
  chex.assert_shape(z, (1, 6, 6, 128))   # 24 -> 12 -> 6: each 12x12 tile gets 3x3
  assert latent_side(12) == 3
  assert [s for s in (12, 14, 24, 28, 32) if round_trips(s)] == [12, 24, 28, 32]


@pytest.mark.slow
def test_per_position_with_d_not_equal_channels_projects():
  model = VQVAE(channels=8, embedding_dim=4, k_max=5, layout="per_position")
  x = jnp.zeros((2, 16, 16, 1))
  v = model.init(jax.random.key(0), x, 5)
  chex.assert_shape(v["codebook"]["embedding"], (5, 4))
  chex.assert_shape(model.reconstruct(v, x), x.shape)


@pytest.mark.slow
def test_vqvae_loss_gradients_reach_encoder_through_straight_through():
  model = VQVAE(channels=8, embedding_dim=8, k_max=10)
  x = jax.random.uniform(jax.random.key(1), (4, 12, 12, 1))
  v = model.init(jax.random.key(0), x, 10)
  grads, (codebook, metrics) = jax.grad(model.loss, has_aux=True)(v["params"], v["codebook"], x)
  enc_norm = sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(grads["encoder"]))
  assert enc_norm > 0
  assert not np.array_equal(codebook["embedding"], v["codebook"]["embedding"])
  assert 1.0 <= float(metrics["perplexity"]) <= 10.0


@pytest.mark.slow
def test_the_classifier_input_convention_is_a_field_not_folded_into_weights():
  x = jax.random.uniform(jax.random.key(0), (4, 24, 24, 1))
  params = Classifier().init(jax.random.key(1), x)
  raw = Classifier(mean=0.0, std=1.0)
  np.testing.assert_allclose(Classifier().apply(params, x), raw.apply(params, (x - 0.1307) / 0.3081), atol=1e-5)
  assert not np.allclose(raw.apply(params, x), Classifier().apply(params, x), atol=1e-2)
