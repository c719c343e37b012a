import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vqdefense_jax.purify import quantizer


def _codebook(emb, size):
  emb = jnp.asarray(emb, jnp.float32)
  return dict(embedding=emb, ema_w=emb * 2.0, ema_count=jnp.arange(emb.shape[0], dtype=jnp.float32) + 1.0,
              size=jnp.int32(size))


@pytest.mark.slow
def test_init_codebook_is_uniform_within_one_over_k_and_zero_when_padded():
  cb = quantizer.init_codebook(jax.random.key(0), 50, 80, 16)
  chex.assert_shape(cb["embedding"], (80, 16))
  assert float(jnp.abs(cb["embedding"][:50]).max()) <= 1 / 50
  assert float(jnp.abs(cb["embedding"][:50]).max()) > 0.5 / 50
  np.testing.assert_array_equal(cb["embedding"][50:], 0.0)
  assert int(cb["size"]) == 50


@pytest.mark.slow
def test_nearest_code_is_the_nearest_valid_one_and_never_a_padded_one():
  rng = np.random.default_rng(0)
  emb = rng.normal(size=(12, 5)).astype(np.float32)
  x = rng.normal(size=(200, 5)).astype(np.float32)
  x[:10] = emb[9]  # exact copies of a padded code: the nearest overall, but masked
  idx = np.asarray(quantizer.nearest_code(_codebook(emb, 7), jnp.asarray(x)))
  dist = ((x[:, None] - emb[None, :7]) ** 2).sum(-1)
  np.testing.assert_array_equal(idx, dist.argmin(-1))
  assert idx.max() < 7


@pytest.mark.slow
def test_codebook_size_is_data_so_one_compilation_serves_every_size():
  @jax.jit
  @chex.assert_max_traces(n=1)
  def pick(cb, x):
    return quantizer.nearest_code(cb, x)

  emb = jax.random.normal(jax.random.key(1), (16, 4))
  x = jax.random.normal(jax.random.key(2), (64, 4))
  for size in (1, 5, 16):
    assert int(pick(_codebook(emb, size), x).max()) < size
  chex.clear_trace_counter()


def test_straight_through_has_value_q_and_identity_gradient():
  x = jnp.array([0.3, -1.2, 2.0])
  q = jnp.array([1.0, 0.0, -5.0])
  w = jnp.array([2.0, -3.0, 0.5])
  np.testing.assert_array_equal(quantizer.straight_through(x, q), q)
  np.testing.assert_allclose(jax.grad(lambda v: jnp.sum(w * quantizer.straight_through(v, q)))(x), w)


@pytest.mark.slow
def test_ema_update_matches_a_hand_computation_and_leaves_padding_alone():
  emb = np.array([[0., 0.], [1., 1.], [5., 5.], [9., 9.]], np.float32)  # row 3 is padding (size 3)
  cb = _codebook(emb, 3)
  x = np.array([[0., 1.], [2., 0.], [1., 3.]], np.float32)
  idx = np.array([0, 0, 1])
  d, eps = 0.9, 1e-5
  new = quantizer.ema_update(cb, jnp.asarray(x), jnp.asarray(idx), d, eps)
  # By hand: counts (2, 1, 0); EMA counts d·(1, 2, 3) + (1-d)·(2, 1, 0).
  count = d * np.array([1., 2., 3.]) + (1 - d) * np.array([2., 1., 0.])
  n = count.sum()
  count = (count + eps) / (n + 3 * eps) * n
  dw = np.array([[2., 1.], [1., 3.], [0., 0.]])
  ema_w = d * 2 * emb[:3] + (1 - d) * dw
  np.testing.assert_allclose(new["ema_count"][:3], count, rtol=1e-6)
  np.testing.assert_allclose(new["ema_w"][:3], ema_w, rtol=1e-6)
  np.testing.assert_allclose(new["embedding"][:3], ema_w / count[:, None], rtol=1e-6)
  for key in ("embedding", "ema_w", "ema_count"):
    np.testing.assert_array_equal(new[key][3], cb[key][3])


@pytest.mark.slow
@pytest.mark.parametrize("layout,dim", [("nchw_chunks", 8), ("nchw_chunks", 6), ("per_position", 4)])
def test_vector_layouts_invert_and_nchw_chunks_is_the_authors_reshape(layout, dim):
  z = jax.random.normal(jax.random.key(0), (2, 3, 3, 4 if layout == "per_position" else 8))
  v = quantizer.to_vectors(z, layout, dim)
  np.testing.assert_array_equal(quantizer.from_vectors(v, z.shape, layout), z)
  if layout == "nchw_chunks":  # PyTorch: inputs (B, C, H, W) -> inputs.view(-1, D)
    torch_like = np.asarray(z).transpose(0, 3, 1, 2).reshape(-1, dim)
    np.testing.assert_array_equal(np.asarray(v).reshape(-1, dim), torch_like)
    assert not np.array_equal(torch_like, np.asarray(z).reshape(-1, dim))  # it is not per-position
  else:
    np.testing.assert_array_equal(v[0, 4], z[0, 1, 1])


@pytest.mark.slow
def test_usage_counts_valid_codes_only():
  cb = _codebook(np.zeros((10, 2)), 4)
  u = quantizer.usage(cb, jnp.array([0, 0, 1, 1]))
  np.testing.assert_allclose(u["perplexity"], 2.0, rtol=1e-6)
  np.testing.assert_allclose(u["dead_code_share"], 0.5)
