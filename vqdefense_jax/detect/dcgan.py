"""A small convolutional DCGAN (Radford et al., ICLR 2016): the second source of fakes for the detector.

Why a DCGAN next to ALAE: the detector of Wang et al. (CVPR 2020) relies on the traces that CNN generators'
up-sampling leaves in their images ("CNN artifacts", e.g. the checkerboard of transposed convolutions). ALAE's
MNIST form is an MLP and leaves none; this generator up-samples with two strided transposed convolutions.

For images (H, W, C) with H and W divisible by 4 (two stride-2 stages):
  G  generator      z -> x      dense to (H/4, W/4, 2·width) → ReLU → convT 4×4/2 to width → ReLU
                                → convT 4×4/2 to C → sigmoid
  D  discriminator  x -> logit  conv 4×4/2 (width) → LReLU 0.2 → conv 4×4/2 (2·width) → LReLU 0.2 → dense 1
One training step is two updates in turn, with z ~ N(0, I) drawn afresh for each, the second seeing the D the
first changed (DCGAN's alternation, one D step per G step):
  (a) D:  softplus(D(G(z))) + softplus(-D(x))    (the logistic loss: -log(1 - σ(D(G(z)))) - log σ(D(x)))
  (b) G:  softplus(-D(G(z)))                     (non-saturating: -log σ(D(G(z))))
Each update differentiates only its own network and has its own Adam state (lr 2e-4, b1 0.5, b2 0.999:
DCGAN's), so neither can change the other network.

Deliberate differences from DCGAN:
- No BatchNorm. Batch statistics would make a sample depend on the rest of its batch and add mutable state;
  without them the model is a pure function of its parameters, which `sample`, bit-identical resume and the
  detector's fake stream rely on. No LayerNorm either: with two stages none was needed on the toy set of the
  tests (6 of 6 seeds); longer runs on MNIST have not been checked here.
- Flax's default initialisers (LeCun normal), not DCGAN's N(0, 0.02): 0.02 was paired with BatchNorm, which
  rescales every layer; without it such small weights shrink the signal layer after layer.
- Sigmoid, not tanh, so G's output is in the project's [0, 1] pixels directly (sigmoid(2a) = (tanh(a) + 1)/2:
  the same family). D maps its input to DCGAN's [-1, 1] (2x - 1) itself, so it sees zero-centred pixels.
"""

import dataclasses
import functools
import math
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from vqdefense_jax.core import experiment as skeleton
from vqdefense_jax.core import layers, training
from vqdefense_jax.core.config import require
from vqdefense_jax.core.errors import VQDefenseError

SLOPE = 0.2                    # D's LeakyReLU slope (DCGAN)
ADAM_B1, ADAM_B2 = 0.5, 0.999  # DCGAN's Adam: b1 = 0.5 damps the oscillation of the two-player updates
KERNEL, STRIDES = (4, 4), (2, 2)


class Generator(nn.Module):
  """G: z -> image in [0, 1]; two transposed-convolution stages up-sample (H/4, W/4) to (H, W)."""
  image_shape: tuple[int, int, int]
  width: int = 32

  @nn.compact
  def __call__(self, z_BxL: jnp.ndarray) -> jnp.ndarray:
    h, w, c = self.image_shape
    x = nn.Dense(h // 4 * (w // 4) * 2 * self.width)(z_BxL)
    x = nn.relu(x.reshape(z_BxL.shape[0], h // 4, w // 4, 2 * self.width))
    x = nn.relu(layers.ConvTranspose(self.width, KERNEL, STRIDES, padding="SAME")(x))
    return nn.sigmoid(layers.ConvTranspose(c, KERNEL, STRIDES, padding="SAME")(x))


class Discriminator(nn.Module):
  """D: image in [0, 1] -> one logit of 'real' per example; no normalisation, so examples stay independent."""
  width: int = 32

  @nn.compact
  def __call__(self, x_BxHxWxC: jnp.ndarray) -> jnp.ndarray:
    x = 2.0 * x_BxHxWxC - 1.0  # DCGAN's [-1, 1] input range
    x = nn.leaky_relu(layers.Conv(self.width, KERNEL, STRIDES, padding="SAME")(x), SLOPE)
    x = nn.leaky_relu(layers.Conv(2 * self.width, KERNEL, STRIDES, padding="SAME")(x), SLOPE)
    return nn.Dense(1)(x.reshape(x.shape[0], -1))[:, 0]


@dataclasses.dataclass(frozen=True)
class Nets:
  """The two modules and z's size; static (hashable) metadata of `DCGANParams`, so params alone describe the
  model."""
  generator: Generator
  discriminator: Discriminator
  latent: int


@flax.struct.dataclass
class DCGANParams:
  """Both networks' parameters; `nets` (static, in the pytree's structure) says what they are, so `sample`
  needs nothing else, and a checkpoint restores to the model that made it."""
  generator: Any      # G
  discriminator: Any  # D
  nets: Nets = flax.struct.field(pytree_node=False)


def _generate(p: DCGANParams, z_BxL):
  return p.nets.generator.apply({"params": p.generator}, z_BxL)


def _critic(p: DCGANParams, x_BxHxWxC):
  """D(x): (B,) logits of 'real'."""
  return p.nets.discriminator.apply({"params": p.discriminator}, x_BxHxWxC)


def check_image_shape(image_shape) -> tuple[int, int, int]:
  """(H, W, C) as ints; H and W must be divisible by 4, since G up-samples (H/4, W/4) twice by 2."""
  shape = tuple(int(s) for s in image_shape)
  if len(shape) != 3 or min(shape) < 1:
    raise VQDefenseError(f"DCGAN image_shape must be (H, W, C) with positive sizes, got {tuple(image_shape)}")
  if shape[0] % 4 or shape[1] % 4:
    raise VQDefenseError(f"DCGAN needs H and W divisible by 4 (two stride-2 up-samplings from H/4 × W/4), "
                         f"got image shape {shape}")
  return shape


def _check_params_shape(p: DCGANParams, image_shape) -> tuple[int, int, int]:
  shape = tuple(int(s) for s in image_shape)
  if shape != tuple(p.nets.generator.image_shape):
    raise VQDefenseError(f"this DCGAN makes images of shape {tuple(p.nets.generator.image_shape)}, not {shape}")
  return shape


@dataclasses.dataclass(frozen=True)
class DCGANStep:
  """The DCGAN train step for `core.training.fit`: `step(state, idx_B, images, labels, extra)`, images in [0, 1].

  Frozen and hashable, so equal steps share one compiled function. The noise key of step s is
  fold_in(key(seed), s), split in two for the two updates: a resumed run continues bit-identically.
  """
  latent: int = 64
  width: int = 32
  learning_rate: float = 2e-4
  seed: int = 0

  def __post_init__(self):
    if min(self.latent, self.width) < 1:
      raise VQDefenseError(f"DCGAN sizes must be >= 1: latent={self.latent}, width={self.width}")
    if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
      raise VQDefenseError(f"DCGAN needs a finite learning_rate > 0, got {self.learning_rate}")

  def nets(self, image_shape: tuple[int, int, int]) -> Nets:
    return Nets(Generator(tuple(image_shape), self.width), Discriminator(self.width), self.latent)

  def optimizer(self) -> optax.GradientTransformation:
    return optax.adam(self.learning_rate, b1=ADAM_B1, b2=ADAM_B2)

  def init(self, image_shape) -> training.GANState:
    """Fresh networks and Adam states for images of `image_shape` (H, W, C), from `seed` alone."""
    shape = check_image_shape(image_shape)
    params = _init_params(self.nets(shape), shape, jax.random.key(self.seed))
    return training.GANState.create(params, self.optimizer())

  def d_update(self, state: training.GANState, x_BxHxWxC: jax.Array,
               key: jax.Array) -> tuple[training.GANState, dict]:
    """(a): D learns to tell reals from G(z); G is a constant here (only D's parameters are differentiated)."""
    p = state.params
    fake_BxHxWxC = _generate(p, jax.random.normal(key, (x_BxHxWxC.shape[0], self.latent), jnp.float32))

    def loss_fn(d_params):
      q = p.replace(discriminator=d_params)
      return jnp.mean(jax.nn.softplus(_critic(q, fake_BxHxWxC)) + jax.nn.softplus(-_critic(q, x_BxHxWxC)))

    loss, grads = jax.value_and_grad(loss_fn)(p.discriminator)
    d_params, opt_d = training.apply_optimizer(self.optimizer(), grads, state.opt_d, p.discriminator)
    return state.replace(params=p.replace(discriminator=d_params), opt_d=opt_d), dict(d_loss=loss)

  def g_update(self, state: training.GANState, n: int, key: jax.Array) -> tuple[training.GANState, dict]:
    """(b): G learns to make D(G(z)) say 'real' (non-saturating loss); D is a constant here."""
    p = state.params
    z_BxL = jax.random.normal(key, (n, self.latent), jnp.float32)

    def loss_fn(g_params):
      q = p.replace(generator=g_params)
      return jnp.mean(jax.nn.softplus(-_critic(q, _generate(q, z_BxL))))

    loss, grads = jax.value_and_grad(loss_fn)(p.generator)
    g_params, opt_g = training.apply_optimizer(self.optimizer(), grads, state.opt_g, p.generator)
    return state.replace(params=p.replace(generator=g_params), opt_g=opt_g), dict(g_loss=loss)

  def __call__(self, state: training.GANState, idx_B, images, labels,
               extra=None) -> tuple[training.GANState, dict[str, jax.Array]]:
    del labels, extra  # unconditional
    _check_params_shape(state.params, images.shape[1:])
    x_BxHxWxC = images[idx_B]
    k_d, k_g = jax.random.split(jax.random.fold_in(jax.random.key(self.seed), state.step))
    state, m_d = self.d_update(state, x_BxHxWxC, k_d)
    state, m_g = self.g_update(state, x_BxHxWxC.shape[0], k_g)
    metrics = dict(**m_d, **m_g)
    metrics["loss"] = metrics["d_loss"] + metrics["g_loss"]
    return state.replace(step=state.step + 1), metrics


@functools.partial(jax.jit, static_argnums=(0, 1))
def _init_params(nets: Nets, shape: tuple[int, int, int], key: jax.Array) -> DCGANParams:
  """Both networks' initial parameters, compiled: run eagerly, each initialiser and convolution is compiled op by
  op (seconds on a CPU). The key is traced, so all seeds share one compilation."""
  kg, kd = jax.random.split(key)
  return DCGANParams(generator=nets.generator.init(kg, jnp.zeros((1, nets.latent), jnp.float32))["params"],
                     discriminator=nets.discriminator.init(kd, jnp.zeros((1,) + shape, jnp.float32))["params"],
                     nets=nets)


# --- pure functions of trained params; images in [0, 1] ---------------------------------------------------

@functools.partial(jax.jit, static_argnames=("n", "image_shape"))
def sample(params: DCGANParams, key: jax.Array, n: int, image_shape: tuple[int, int, int]) -> jax.Array:
  """n images G(z), z ~ N(0, I) from `key`: (n, H, W, C) in [0, 1] (G ends in a sigmoid)."""
  _check_params_shape(params, image_shape)
  return _generate(params, jax.random.normal(key, (n, params.nets.latent), jnp.float32))


@dataclasses.dataclass(frozen=True)
class DCGANSpec:
  """The `dcgan` config section, checked."""
  latent: int
  width: int
  learning_rate: float
  batch_size: int
  steps: int

  @classmethod
  def from_config(cls, s) -> "DCGANSpec":
    spec = cls(s.latent, s.width, float(s.learning_rate), s.batch_size, s.steps)
    require(1 <= spec.latent <= 4096 and 1 <= spec.width <= 1024,
            f"dcgan.latent (1..4096) and dcgan.width (1..1024) out of range: {spec.latent}, {spec.width}")
    require(spec.learning_rate > 0, "dcgan.learning_rate must be > 0")
    skeleton.check_schedule("dcgan", spec.batch_size, spec.steps)
    return spec

  def step(self, seed: int) -> DCGANStep:
    return DCGANStep(latent=self.latent, width=self.width, learning_rate=self.learning_rate, seed=seed)
