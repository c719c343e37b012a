"""The restorer's networks: CycleGAN's ResNet generator with CBAM after every residual block, and its PatchGAN.

Generator G (CycleGAN's `ResnetGenerator`, Zhu et al. ICCV 2017, norm='instance', no dropout), for images
(H, W, C) with H and W divisible by 4, width w:
  reflect-pad 3 → conv 7×7 (w) → IN → ReLU
  conv 3×3/2 (2w) → IN → ReLU → conv 3×3/2 (4w) → IN → ReLU                         two downsamplings
  `blocks` × [ x + (reflect-pad 1 → conv 3×3 → IN → ReLU → reflect-pad 1 → conv 3×3 → IN)(x)  → CBAM ]
  convT 3×3/2 (2w) → IN → ReLU → convT 3×3/2 (w) → IN → ReLU                        two upsamplings
  reflect-pad 3 → conv 7×7 (C) → tanh
CycleGAN's 256×256 model has w = 64 and 9 blocks; here the sizes are config fields, so the same network scales
to 24×24 digits or 64×64 faces. The block outputs (`block_<i>`, after CBAM when it is on) are where Grad-CAM
looks (restore/gradcam.py): with CBAM off they are the same places without the attention.

CBAM (Woo et al., ECCV 2018), channel attention then spatial attention, on F of shape (B, h, w, K):
  M_c = σ(MLP(avgpool(F)) + MLP(maxpool(F)))        MLP: dense K/r → ReLU → dense K, shared; r = 16
  F'  = M_c ⊗ F
  M_s = σ(conv 7×7([mean_c(F'); max_c(F')]))      2 channels → 1
  F'' = M_s ⊗ F'
Both maps lie in [0, 1] (sigmoids); they are sown as intermediates 'channel_map' (B, K) and 'spatial_map'
(B, h, w). The hidden width is max(1, K // r), so narrow test networks keep a bottleneck.

Discriminator D (CycleGAN's `NLayerDiscriminator`, the 70×70 PatchGAN at n = 3), width w:
  conv 4×4/2 (w) → LReLU 0.2;  for k = 1..n-1: conv 4×4/2 (w·min(2^k, 8)) → IN → LReLU 0.2
  conv 4×4/1 (w·min(2^n, 8)) → IN → LReLU 0.2 → conv 4×4/1 (1)                  one logit per patch
All convolutions pad 1 with zeros, as CycleGAN's. `patch_layers(image_size)` picks n for an image size: the
deepest n ≤ 3 whose receptive field (16, 34, 70 pixels for n = 1, 2, 3) fits in the image, so a 24×24 digit
gets 16×16 patches and a 256×256 image CycleGAN's 70×70 ones.

Pixels: the networks work in CycleGAN's [-1, 1]; G takes and returns [0, 1] images ((tanh + 1)/2) and D takes
[0, 1] images, each mapping to [-1, 1] itself.

Deliberate differences: no BatchNorm in CBAM's spatial branch (CBAM's code has one), so every network is a
function of its parameters and one example alone (instance norm is per example); Flax's default initialisers
(CycleGAN uses N(0, 0.02)); transposed convolutions through `lax.conv_transpose` with padding (1, 2), which
gives PyTorch's ConvTranspose2d(3, stride 2, padding 1, output_padding 1) geometry (kernel flipped: the same
family of functions).
"""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from vqdefense_jax.core import layers
from vqdefense_jax.core.config import require
from vqdefense_jax.core.errors import VQDefenseError

SLOPE = 0.2                   # D's LeakyReLU slope (CycleGAN)
REDUCTION = 16                # CBAM's channel reduction r
SPATIAL_KERNEL = 7            # CBAM's spatial convolution
MAX_PATCH_LAYERS = 3          # CycleGAN's default PatchGAN
PAD1 = ((1, 1), (1, 1))


def _norm(x):
  """Instance norm without affine parameters (CycleGAN's `InstanceNorm2d(affine=False)`)."""
  return nn.InstanceNorm(use_bias=False, use_scale=False, epsilon=1e-5)(x)


def _reflect(x, p: int):
  return jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode="reflect")


class ChannelAttention(nn.Module):
  reduction: int = REDUCTION

  @nn.compact
  def __call__(self, f_BxHxWxK):
    k = f_BxHxWxK.shape[-1]
    hidden, out = nn.Dense(max(1, k // self.reduction)), nn.Dense(k)
    mlp = lambda v: out(nn.relu(hidden(v)))
    return nn.sigmoid(mlp(f_BxHxWxK.mean(axis=(1, 2))) + mlp(f_BxHxWxK.max(axis=(1, 2))))  # (B, K)


class SpatialAttention(nn.Module):
  kernel: int = SPATIAL_KERNEL

  @nn.compact
  def __call__(self, f_BxHxWxK):
    pooled = jnp.stack([f_BxHxWxK.mean(axis=-1), f_BxHxWxK.max(axis=-1)], axis=-1)
    conv = layers.Conv(1, (self.kernel, self.kernel), padding="SAME", use_bias=False)
    return nn.sigmoid(conv(pooled))[..., 0]  # (B, H, W)


class CBAM(nn.Module):
  """Channel attention, then spatial attention (Woo et al. 2018); the two maps are sown as intermediates."""
  reduction: int = REDUCTION
  kernel: int = SPATIAL_KERNEL

  @nn.compact
  def __call__(self, f_BxHxWxK):
    m_c = ChannelAttention(self.reduction, name="channel")(f_BxHxWxK)
    self.sow("intermediates", "channel_map", m_c)
    f = f_BxHxWxK * m_c[:, None, None, :]
    m_s = SpatialAttention(self.kernel, name="spatial")(f)
    self.sow("intermediates", "spatial_map", m_s)
    return f * m_s[..., None]


class ResnetBlock(nn.Module):
  """x + (pad → conv 3×3 → IN → ReLU → pad → conv 3×3 → IN)(x), then CBAM when `cbam`."""
  cbam: bool = True
  reduction: int = REDUCTION
  kernel: int = SPATIAL_KERNEL

  @nn.compact
  def __call__(self, x):
    k = x.shape[-1]
    y = nn.relu(_norm(layers.Conv(k, (3, 3), padding="VALID")(_reflect(x, 1))))
    y = _norm(layers.Conv(k, (3, 3), padding="VALID")(_reflect(y, 1)))
    x = x + y
    return CBAM(self.reduction, self.kernel, name="cbam")(x) if self.cbam else x


class Generator(nn.Module):
  """G: a [0, 1] image -> its restoration in [0, 1], same shape."""
  width: int = 64
  blocks: int = 9
  cbam: bool = True
  reduction: int = REDUCTION
  kernel: int = SPATIAL_KERNEL

  @nn.compact
  def __call__(self, x_BxHxWxC):
    c = x_BxHxWxC.shape[-1]
    w = self.width
    x = 2.0 * x_BxHxWxC - 1.0
    x = nn.relu(_norm(layers.Conv(w, (7, 7), padding="VALID")(_reflect(x, 3))))
    for mult in (2, 4):
      x = nn.relu(_norm(layers.Conv(mult * w, (3, 3), strides=(2, 2), padding=PAD1)(x)))
    for i in range(self.blocks):
      x = ResnetBlock(self.cbam, self.reduction, self.kernel, name=f"block_{i}")(x)
    for mult in (2, 1):
      x = nn.relu(_norm(layers.ConvTranspose(mult * w, (3, 3), strides=(2, 2), padding=((1, 2), (1, 2)))(x)))
    x = layers.Conv(c, (7, 7), padding="VALID")(_reflect(x, 3))
    return 0.5 * (jnp.tanh(x) + 1.0)

  @property
  def layer_names(self) -> tuple[str, ...]:
    """The modules whose outputs Grad-CAM reads: every residual block's (after its CBAM when on)."""
    return tuple(f"block_{i}" for i in range(self.blocks))


class PatchDiscriminator(nn.Module):
  """D: a [0, 1] image -> (B, h, w) logits of 'real', one per patch."""
  width: int = 64
  layers: int = MAX_PATCH_LAYERS

  @nn.compact
  def __call__(self, x_BxHxWxC):
    x = 2.0 * x_BxHxWxC - 1.0
    x = nn.leaky_relu(layers.Conv(self.width, (4, 4), strides=(2, 2), padding=PAD1)(x), SLOPE)
    for k in range(1, self.layers + 1):
      stride = (2, 2) if k < self.layers else (1, 1)
      x = layers.Conv(self.width * min(2 ** k, 8), (4, 4), strides=stride, padding=PAD1)(x)
      x = nn.leaky_relu(_norm(x), SLOPE)
    return layers.Conv(1, (4, 4), padding=PAD1)(x)[..., 0]


def receptive_field(n: int) -> int:
  """The receptive field in pixels of one output of an n-layer PatchGAN (n stride-2 and two stride-1 4×4
  convolutions): 16, 34, 70 for n = 1, 2, 3 (CycleGAN's "70×70 PatchGAN")."""
  strides = [2] * n + [1, 1]
  rf = 1
  for s in reversed(strides):
    rf = (rf - 1) * s + 4
  return rf


def patch_size(size: int, n: int) -> int:
  """Side of D's output map (patches) for an image side of `size` and n layers."""
  for _ in range(n):
    size = (size + 2 - 4) // 2 + 1
  return size - 2  # two stride-1 4×4 convolutions with padding 1 each take one pixel off


def patch_layers(size: int) -> int:
  """The deepest PatchGAN (n ≤ 3, CycleGAN's) whose receptive field fits in an image side of `size` (at least 1)."""
  return max([1] + [n for n in range(1, MAX_PATCH_LAYERS + 1) if receptive_field(n) <= size])


def check_shapes(image_shape, blocks: int, d_layers: int) -> tuple[int, int, int]:
  """(H, W, C) as ints, or a one-line error when G or D cannot take images of this shape."""
  shape = tuple(int(s) for s in image_shape)
  if len(shape) != 3 or min(shape) < 1:
    raise VQDefenseError(f"the restorer needs images (H, W, C), got shape {tuple(image_shape)}")
  h, w, _ = shape
  if h % 4 or w % 4 or min(h, w) < 8:
    raise VQDefenseError(f"the restorer's generator needs H and W divisible by 4 and at least 8 (two stride-2 "
                         f"downsamplings, reflection padding), got image shape {shape}")
  if blocks < 0:
    raise VQDefenseError(f"generator.blocks must be >= 0, got {blocks}")
  if min(patch_size(h, d_layers), patch_size(w, d_layers)) < 1:
    raise VQDefenseError(f"a {d_layers}-layer PatchGAN leaves no patch of a {h}×{w} image; lower "
                         f"discriminator.layers (0 picks {patch_layers(min(h, w))} for this size)")
  return shape


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def init_params(generator: Generator, discriminator: PatchDiscriminator, shape: tuple[int, int, int],
                key: jax.Array):
  """Both networks' initial parameters, compiled (op-by-op initialisation of a ResNet takes seconds on a CPU)."""
  kg, kd = jax.random.split(key)
  x = jnp.zeros((1,) + shape, jnp.float32)
  return generator.init(kg, x)["params"], discriminator.init(kd, x)["params"]


@dataclasses.dataclass(frozen=True)
class NetSpec:
  """The `generator` and `discriminator` sections, with D's depth resolved for the image size."""
  width: int
  blocks: int
  d_width: int
  d_layers: int

  @classmethod
  def from_config(cls, g, d, image_size: int) -> "NetSpec":
    require(1 <= g.width <= 1024 and 0 <= g.blocks <= 64, f"generator.width (1..1024) and generator.blocks (0..64) "
            f"out of range: {g.width}, {g.blocks}")
    require(1 <= d.width <= 1024 and 0 <= d.layers <= 8, f"discriminator.width (1..1024) and discriminator.layers "
            f"(0..8; 0: by image size) out of range: {d.width}, {d.layers}")
    spec = cls(g.width, g.blocks, d.width, d.layers or patch_layers(image_size))
    check_shapes((image_size, image_size, 1), spec.blocks, spec.d_layers)
    return spec
