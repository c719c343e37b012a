"""The restorer's networks: CBAM's shapes and its channel and spatial maps in [0, 1], CycleGAN's generator and
PatchGAN scaled to any (H, W, C), examples independent of their batch, and clear errors for shapes they cannot take."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vqdefense_jax.core.errors import VQDefenseError
from vqdefense_jax.restore import models


def _images(n, shape, seed=0, scale=1.0):
  return jnp.asarray(np.random.default_rng(seed).normal(0, scale, (n,) + shape), jnp.float32)


@pytest.mark.slow
@pytest.mark.parametrize("channels,hidden", [(64, 4), (8, 1)])  # K // 16, at least 1
def test_cbam_shapes_and_maps_in_unit_interval(channels, hidden):
  block = models.CBAM()
  f = _images(3, (6, 5, channels), scale=3.0)
  params = block.init(jax.random.key(0), f)["params"]
  assert params["channel"]["Dense_0"]["kernel"].shape == (channels, hidden)
  assert params["channel"]["Dense_1"]["kernel"].shape == (hidden, channels)
  assert params["spatial"]["Conv_0"]["kernel"].shape == (7, 7, 2, 1)
  out, inter = block.apply({"params": params}, f, mutable=["intermediates"])
  (m_c,), (m_s,) = inter["intermediates"]["channel_map"], inter["intermediates"]["spatial_map"]
  chex.assert_shape([out, m_c, m_s], [f.shape, (3, channels), (3, 6, 5)])
  for m in (m_c, m_s):
    assert float(m.min()) >= 0 and float(m.max()) <= 1
    assert float(m.max() - m.min()) > 0  # not a constant: the maps depend on the input
  # F'' = M_s ⊗ (M_c ⊗ F): channel attention first, then spatial attention on its output.
  np.testing.assert_allclose(out, f * m_c[:, None, None, :] * m_s[..., None], rtol=1e-5, atol=1e-6)
  spatial_in = f * m_c[:, None, None, :]
  m_s2 = models.SpatialAttention().apply({"params": params["spatial"]}, spatial_in)
  np.testing.assert_allclose(m_s, m_s2, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("shape,cbam", [((16, 16, 1), True), ((24, 20, 3), False)])
def test_generator_is_cyclegans_resnet_scaled_to_the_image(shape, cbam):
  g = models.Generator(width=4, blocks=1, cbam=cbam)
  x = jnp.asarray(np.random.default_rng(0).uniform(0, 1, (3,) + shape), jnp.float32)
  params, _ = models.init_params(g, models.PatchDiscriminator(4, 1), shape, jax.random.key(0))
  y = g.apply({"params": params}, x)
  chex.assert_shape(y, x.shape)
  assert float(y.min()) >= 0 and float(y.max()) <= 1
  c = shape[-1]
  assert params["Conv_0"]["kernel"].shape == (7, 7, c, 4)          # reflect-pad 3, conv 7×7
  assert params["Conv_1"]["kernel"].shape == (3, 3, 4, 8)          # two stride-2 downsamplings
  assert params["Conv_2"]["kernel"].shape == (3, 3, 8, 16)
  assert params["block_0"]["Conv_1"]["kernel"].shape == (3, 3, 16, 16)
  assert params["ConvTranspose_1"]["kernel"].shape == (3, 3, 8, 4)
  assert params["Conv_3"]["kernel"].shape == (7, 7, 4, c)
  assert ("cbam" in params["block_0"]) == cbam and g.layer_names == ("block_0",)
  # Instance norm is per example: an image's restoration does not depend on the rest of its batch.
  np.testing.assert_allclose(g.apply({"params": params}, x[1:2]), y[1:2], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("size,layers", [(16, 1), (24, 1), (40, 2), (64, 2), (128, 3), (256, 3)])
def test_patchgan_depth_follows_the_image_size_and_its_output_is_one_logit_per_patch(size, layers):
  assert models.patch_layers(size) == layers
  assert [models.receptive_field(n) for n in (1, 2, 3)] == [16, 34, 70]  # CycleGAN's 70×70 PatchGAN at n = 3
  if size <= 64:
    d = models.PatchDiscriminator(width=4, layers=layers)
    x = jnp.zeros((2, size, size, 3))
    params = d.init(jax.random.key(0), x)["params"]
    out = d.apply({"params": params}, x)
    p = models.patch_size(size, layers)
    chex.assert_shape(out, (2, p, p))
    assert params[f"Conv_{layers + 1}"]["kernel"].shape == (4, 4, 4 * min(2 ** layers, 8), 1)


def test_shapes_the_networks_cannot_take_are_clear_errors():
  with pytest.raises(VQDefenseError, match="divisible by 4"):
    models.check_shapes((18, 16, 1), 2, 1)
  with pytest.raises(VQDefenseError, match="at least 8"):
    models.check_shapes((4, 4, 1), 2, 1)
  with pytest.raises(VQDefenseError, match="no patch"):
    models.check_shapes((16, 16, 1), 2, 3)
  assert models.check_shapes((16, 16, 3), 2, 1) == (16, 16, 3)
