"""core/layers.py: Flax's convolutions with an input gradient XLA:CPU keeps canonical inside loops."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vqdefense_jax.core import layers

CASES = [  # (flax module, ours, input shape)
    (nn.Conv, layers.Conv, dict(features=8, kernel_size=(4, 4), strides=(2, 2), padding=((1, 1), (1, 1))),
     (3, 12, 12, 5)),
    # the 4-Split encoder's second convolution: its gradient map (3×3) is smaller than the kernel (4×4)
    (nn.Conv, layers.Conv, dict(features=8, kernel_size=(4, 4), strides=(2, 2), padding=((1, 1), (1, 1))),
     (3, 6, 6, 5)),
    (nn.Conv, layers.Conv, dict(features=8, kernel_size=(3, 3), padding="VALID"), (3, 10, 10, 5)),
    (nn.Conv, layers.Conv, dict(features=8, kernel_size=(5, 5), strides=(3, 2), padding="SAME"), (2, 7, 6, 3)),
    (nn.Conv, layers.Conv, dict(features=8, kernel_size=(3, 3), strides=2, padding=1, kernel_dilation=2),
     (2, 9, 9, 3)),
    (nn.ConvTranspose, layers.ConvTranspose, dict(features=8, kernel_size=(2, 2), strides=(2, 2),
                                                  padding="VALID"), (3, 6, 6, 5)),
    (nn.ConvTranspose, layers.ConvTranspose, dict(features=4, kernel_size=(3, 3), strides=(2, 2), padding="SAME"),
     (3, 5, 5, 5)),
    (nn.ConvTranspose, layers.ConvTranspose, dict(features=4, kernel_size=(4, 4), strides=2, padding=1),
     (3, 5, 5, 5)),
]


@pytest.mark.slow
@pytest.mark.parametrize("flax_cls,ours_cls,kwargs,shape", CASES)
def test_same_parameters_values_and_gradients_as_flax(flax_cls, ours_cls, kwargs, shape):
  ref, ours = flax_cls(**kwargs), ours_cls(**kwargs)
  x = jax.random.normal(jax.random.key(0), shape)
  params = ref.init(jax.random.key(1), x)
  mine = ours.init(jax.random.key(1), x)
  assert jax.tree.structure(mine) == jax.tree.structure(params)
  for a, b in zip(jax.tree.leaves(mine), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(ours.apply(params, x), ref.apply(params, x))
  loss = lambda m: lambda p, x: jnp.sum(jnp.sin(m.apply(p, x)))
  got, want = jax.grad(loss(ours), (0, 1))(params, x), jax.grad(loss(ref), (0, 1))(params, x)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


def _conv_dim_labels(fn, *args) -> list[str]:
  hlo = jax.jit(fn).lower(*args).compile().as_text()
  return re.findall(r"convolution\(.*?dim_labels=(\S+?),", hlo)


@pytest.mark.slow
@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU's convolution canonicalisation")
def test_input_gradients_inside_a_scan_are_canonical_convolutions():
  """In a loop body XLA:CPU runs only NHWC/HWIO/NHWC convolutions on its fast kernels; Flax's own layers give
  the input gradient a kernel in 'HWOI' order there (the check that this test can fail), ours do not."""
  x = jax.random.normal(jax.random.key(0), (4, 6, 6, 3))

  def steps(module):
    params = module.init(jax.random.key(1), x)
    grad = jax.grad(lambda v: jnp.sum(module.apply(params, v) ** 2))
    return lambda x: jax.lax.scan(lambda v, _: (v - 0.1 * grad(v), None), x, None, length=3)[0]

  for ours, ref in ((layers.Conv(8, (4, 4), strides=2, padding=1), nn.Conv(8, (4, 4), strides=2, padding=1)),
                    (layers.ConvTranspose(8, (2, 2), strides=2), nn.ConvTranspose(8, (2, 2), strides=2))):
    assert any(lab != "b01f_01io->b01f" for lab in _conv_dim_labels(steps(ref), x))
    assert set(_conv_dim_labels(steps(ours), x)) == {"b01f_01io->b01f"}


def test_unsupported_transpose_settings_are_one_clear_error():
  with pytest.raises(ValueError, match="flax.linen.ConvTranspose"):
    layers.ConvTranspose(4, (2, 2), transpose_kernel=True).init(jax.random.key(0), jnp.zeros((1, 4, 4, 2)))


@pytest.mark.slow
@pytest.mark.parametrize("stride,padding,shape", [(1, ((1, 1), (1, 1)), (2, 7, 7, 3)),
                                                  (2, ((1, 1), (1, 1)), (2, 6, 6, 3)),
                                                  ((3, 2), ((0, 2), (1, 0)), (2, 8, 7, 3)),
                                                  (2, "SAME", (2, 9, 8, 3)),
                                                  (1, "VALID", (2, 5, 5, 3))])
def test_col2im_input_gradient_is_the_transposed_convolutions(stride, padding, shape):
  """The matmul + shifted-adds input gradient equals lax's, for strides, asymmetric and string paddings."""
  op = layers._Op(False, stride if isinstance(stride, tuple) else (stride, stride), padding, None, None,
                  layers.NHWC, None)
  x = jax.random.normal(jax.random.key(0), shape)
  w = jax.random.normal(jax.random.key(1), (3, 3, shape[-1], 4))
  y, vjp = jax.vjp(lambda x_: op(x_, w), x)
  g = jax.random.normal(jax.random.key(2), y.shape)
  assert layers._col2im_applies(op, x)
  np.testing.assert_allclose(layers.col2im_input_gradient(op, x.shape, w, g), vjp(g)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_max_pool_2x2_has_flax_values_and_gradient_with_ties_and_odd_sizes():
  """Same values as nn.max_pool, and the gradient goes to the first maximum of each window, like Flax's: MNIST's
  flat background makes ties the common case, and another rule changes FGSM's signs."""
  x = jnp.round(jax.random.uniform(jax.random.key(0), (3, 9, 7, 4)) * 2) / 2   # 3 values: many tied windows
  x = x.at[0, :4, :4].set(0.0)                                                   # all-equal windows
  ref = lambda v: nn.max_pool(v, (2, 2), strides=(2, 2))
  np.testing.assert_array_equal(layers.max_pool_2x2(x), ref(x))
  g = jax.random.normal(jax.random.key(1), ref(x).shape)
  got = jax.vjp(layers.max_pool_2x2, x)[1](g)[0]
  want = jax.vjp(ref, x)[1](g)[0]
  assert int(jnp.sum(got != 0)) == g.size                                        # one position per window
  np.testing.assert_array_equal(got, want)
