"""Convolution layers whose input gradient stays on XLA:CPU's fast path inside loops.

The gradient of a convolution with respect to its input is another convolution. JAX writes it with the kernel's
input and output axes swapped in the dimension numbers ('HWOI'). XLA:CPU rewrites such a convolution into the
canonical NHWC/HWIO form its fast kernels need, but only in the entry computation
(`xla::cpu::ConvCanonicalization` visits nothing else): inside a while loop, which is what `lax.scan` and
`lax.map` compile to, it runs an unoptimised elemental kernel. Every white-box attack step and every scanned
grid chunk is inside one, and that made multi-step attacks about twice as slow on CPU
(benchmarks/attack_speed.py). Here the input gradient is taken through the same convolution written with the
kernel's O and I axes physically swapped, so JAX's transpose rule hands XLA a canonical 'HWIO' convolution.
The kernel gradient and the forward pass are JAX's own; values are the same convolutions, up to floating-point
summation order. `Conv` and `ConvTranspose` are Flax's, with identical parameter names and shapes.
"""

import dataclasses
import functools
from typing import Any

import flax.linen as nn
from flax.linen import linear
import jax
import jax.numpy as jnp
from jax import lax


@dataclasses.dataclass(frozen=True)
class _Op:
  """One convolution's static settings (hashable: a custom_vjp's non-differentiable argument)."""
  transpose: bool                   # lax.conv_transpose (else lax.conv_general_dilated)
  strides: tuple[int, ...]
  padding: Any                      # a string or a tuple of (low, high) pairs
  lhs_dilation: tuple[int, ...] | None
  rhs_dilation: tuple[int, ...] | None
  dimension_numbers: lax.ConvDimensionNumbers
  precision: Any

  def __call__(self, x: jax.Array, w: jax.Array) -> jax.Array:
    if self.transpose:
      return lax.conv_transpose(x, w, self.strides, self.padding, rhs_dilation=self.rhs_dilation,
                                dimension_numbers=self.dimension_numbers, precision=self.precision)
    return lax.conv_general_dilated(x, w, self.strides, self.padding, lhs_dilation=self.lhs_dilation,
                                    rhs_dilation=self.rhs_dilation, dimension_numbers=self.dimension_numbers,
                                    precision=self.precision)

  def for_input_gradient(self, x: jax.Array, w: jax.Array) -> jax.Array:
    """The same convolution, written so that its transpose (JAX's rule) is canonical for XLA:CPU: the kernel's
    O and I axes swapped in memory and in the dimension numbers; a strided convolution as the stride-1 one,
    subsampled (its transpose then pads the gradient with zeros instead of dilating it, which XLA would
    otherwise turn into a non-canonical convolution when the gradient map is smaller than the kernel)."""
    dn = self.dimension_numbers
    spatial = lambda shape, spec: [shape[d] for d in spec[2:]]
    kernel, out = spatial(w.shape, dn.rhs_spec), spatial(jax.eval_shape(self, x, w).shape, dn.out_spec)
    o, i = dn.rhs_spec[:2]
    swapped = dataclasses.replace(self, dimension_numbers=lax.ConvDimensionNumbers(
        dn.lhs_spec, (i, o) + tuple(dn.rhs_spec[2:]), dn.out_spec))
    w = jnp.swapaxes(w, o, i)
    if (self.transpose or any(d != 1 for d in self.lhs_dilation or ())
        or all(n >= k for n, k in zip(out, kernel))):
      return swapped(x, w)
    window = [(k - 1) * r + 1 for k, r in zip(kernel, self.rhs_dilation or (1,) * len(kernel))]
    padding = self.padding if not isinstance(self.padding, str) else tuple(
        lax.padtype_to_pads(spatial(x.shape, dn.lhs_spec), window, self.strides, self.padding))
    y = dataclasses.replace(swapped, strides=(1,) * len(kernel), padding=padding)(x, w)
    index = [slice(None)] * y.ndim
    for d, s in zip(dn.out_spec[2:], self.strides):
      index[d] = slice(None, None, s)
    return y[tuple(index)]


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _conv(op: _Op, x: jax.Array, w: jax.Array) -> jax.Array:
  return op(x, w)


def _conv_fwd(op: _Op, x: jax.Array, w: jax.Array):
  return op(x, w), (x, w)


NHWC = lax.ConvDimensionNumbers((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))  # NHWC inputs, HWIO kernels


def _col2im_applies(op: _Op, x: jax.Array) -> bool:
  plain = lambda d: d is None or all(v == 1 for v in d)
  pads = op.padding if not isinstance(op.padding, str) else ((0, 0),)
  return (not op.transpose and x.ndim == 4 and op.dimension_numbers == NHWC and plain(op.lhs_dilation)
          and plain(op.rhs_dilation) and all(lo >= 0 and hi >= 0 for lo, hi in pads))


def col2im_input_gradient(op: _Op, x_shape: tuple[int, ...], w_HxWxIxO: jax.Array, g: jax.Array) -> jax.Array:
  """∇ₓ of a plain 2-D convolution (NHWC, HWIO, no dilation) for the cotangent g: one matrix product of g with
  the kernel, giving each output position's contribution to every input pixel under the kernel, then kh·kw
  shifted (strided) adds of those contributions. On XLA:CPU this ran 2 to 4 times faster inside loops than the
  transposed convolution (benchmarks/README.md); the values are the same sums in another order."""
  kh, kw, ci, co = w_HxWxIxO.shape
  b, ho, wo, _ = g.shape
  (sh, sw), (h, w) = op.strides, x_shape[1:3]
  pads = op.padding if not isinstance(op.padding, str) else lax.padtype_to_pads((h, w), (kh, kw), op.strides,
                                                                                  op.padding)
  (top, bottom), (left, right) = pads
  hp, wp = h + top + bottom, w + left + right
  cols = jnp.matmul(g.reshape(-1, co), w_HxWxIxO.reshape(-1, co).T, precision=op.precision)
  cols = cols.reshape(b, ho, wo, kh, kw, ci)
  zero = jnp.zeros((), g.dtype)
  dx = jnp.zeros((b, hp, wp, ci), g.dtype)
  for i in range(kh):
    for j in range(kw):
      dx = dx + lax.pad(cols[:, :, :, i, j], zero, ((0, 0, 0), (i, hp - i - (sh * (ho - 1) + 1), sh - 1),
                                                   (j, wp - j - (sw * (wo - 1) + 1), sw - 1), (0, 0, 0)))
  return dx[:, top:top + h, left:left + w]


def _conv_bwd(op: _Op, residuals, g: jax.Array):
  x, w = residuals
  if _col2im_applies(op, x):
    dx = col2im_input_gradient(op, x.shape, w, g)
  else:
    dx = jax.vjp(lambda x_: op.for_input_gradient(x_, w), x)[1](g)[0]
  dw = jax.vjp(lambda w_: op(x, w_), w)[1](g)[0]   # unused results (an attack's dw) are removed by XLA
  return dx, dw


_conv.defvjp(_conv_fwd, _conv_bwd)


def _tuple(v):
  return None if v is None else tuple(v)


def _padding(padding):
  return padding if isinstance(padding, str) else tuple(tuple(p) for p in padding)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1, precision=None,
                         preferred_element_type=None):
  """`lax.conv_general_dilated` (the signature Flax's `Conv` calls) with the fast input gradient; grouped
  convolutions and other element types go to lax unchanged."""
  if feature_group_count != 1 or batch_group_count != 1 or preferred_element_type is not None:
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                    dimension_numbers, feature_group_count, batch_group_count, precision,
                                    preferred_element_type)
  dn = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
  op = _Op(False, tuple(window_strides), _padding(padding), _tuple(lhs_dilation), _tuple(rhs_dilation), dn,
           precision)
  return _conv(op, lhs, rhs)


def conv_transpose(lhs, rhs, strides, padding, rhs_dilation=None, dimension_numbers=None, precision=None):
  """`lax.conv_transpose` (transpose_kernel=False) with the fast input gradient."""
  dn = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
  op = _Op(True, tuple(strides), _padding(padding), None, _tuple(rhs_dilation), dn, precision)
  return _conv(op, lhs, rhs)


Conv = functools.partial(nn.Conv, conv_general_dilated=conv_general_dilated)


class ConvTranspose(nn.ConvTranspose):
  """Flax's `ConvTranspose` (same parameters, same values) through `conv_transpose`; 2-D, no circular padding,
  no kernel transposition, no mask."""

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    kernel_size = tuple(self.kernel_size)
    if (len(kernel_size) != 2 or inputs.ndim != 4 or self.padding == "CIRCULAR" or self.transpose_kernel
        or self.mask is not None):
      raise ValueError("layers.ConvTranspose supports 2-D NHWC inputs without circular padding, "
                       "transpose_kernel or mask; use flax.linen.ConvTranspose for those")
    strides = (self.strides,) * 2 if isinstance(self.strides, int) else tuple(self.strides or (1, 1))
    padding = _padding(linear.canonicalize_padding(self.padding, 2))
    kernel = self.param("kernel", self.kernel_init, kernel_size + (inputs.shape[-1], self.features),
                        self.param_dtype)
    bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
    inputs, kernel, bias = self.promote_dtype(inputs, kernel, bias, dtype=self.dtype)
    y = conv_transpose(inputs, kernel, strides, padding, rhs_dilation=self.kernel_dilation,
                       dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=self.precision)
    return y if bias is None else y + bias.reshape((1,) * (y.ndim - 1) + bias.shape)


def _quarters(x_BxHxWxC: jax.Array) -> tuple[jax.Array, ...]:
  """Each 2×2 window's four values, row-major ((0, 0), (0, 1), (1, 0), (1, 1)), as four (B, H/2, W/2, C) arrays
  (an odd last row or column dropped)."""
  b, h, w, c = x_BxHxWxC.shape
  x = x_BxHxWxC[:, :h - h % 2, :w - w % 2].reshape(b, h // 2, 2, w // 2, 2, c)
  return x[:, :, 0, :, 0], x[:, :, 0, :, 1], x[:, :, 1, :, 0], x[:, :, 1, :, 1]


@jax.custom_vjp
def max_pool_2x2(x_BxHxWxC: jax.Array) -> jax.Array:
  """2×2 max pooling with stride 2 ('VALID': an odd last row or column is dropped): Flax's `nn.max_pool` with the
  same values and the same gradient, which goes to the first maximum of each window in row-major order (MNIST's
  flat background makes tied maxima common, so which one gets it changes FGSM's signs).

  The forward pass is Flax's (`reduce_window`); the gradient is written with reshapes and masks, because
  XLA:CPU runs `reduce_window`'s own (a select-and-scatter) several times slower, and it was the largest part
  of the classifier's backward pass in every white-box attack step (benchmarks/README.md).
  """
  return nn.max_pool(x_BxHxWxC, (2, 2), strides=(2, 2))


def _max_pool_fwd(x):
  return max_pool_2x2(x), x


def _max_pool_bwd(x, g):
  a, b, c, d = _quarters(x)
  m = jnp.maximum(jnp.maximum(a, b), jnp.maximum(c, d))
  at_a, at_b, at_c = a == m, b == m, c == m
  zero = jnp.zeros_like(g)
  ga = jnp.where(at_a, g, zero)
  gb = jnp.where(at_b & ~at_a, g, zero)
  gc = jnp.where(at_c & ~at_a & ~at_b, g, zero)
  gd = jnp.where(~at_a & ~at_b & ~at_c, g, zero)            # d is the maximum when none before it is
  n, h, w, ch = x.shape
  dx = jnp.stack([jnp.stack([ga, gb], axis=3), jnp.stack([gc, gd], axis=3)], axis=2).reshape(
      n, 2 * (h // 2), 2 * (w // 2), ch)
  return (jnp.pad(dx, ((0, 0), (0, h % 2), (0, w % 2), (0, 0))),)


max_pool_2x2.defvjp(_max_pool_fwd, _max_pool_bwd)
