"""Adversarial Latent Autoencoder (ALAE, Pidhorskyi et al., CVPR 2020) in its MNIST MLP form: the fake-image source.

Four networks share one latent space w (ALAE's `configs/mnist_fc.yaml`, `net.py`):
  F  mapping       z -> w      pixel norm, then `mapping_layers` dense layers, each with LeakyReLU 0.2
  G  generator     w -> x      dense hidden → LReLU → dense hidden → LReLU → dense H·W·C (linear), reshaped
  E  encoder       x -> w      dense hidden → LReLU → dense hidden → LReLU → dense latent → LReLU
  D  discriminator w -> logit  `d_layers` dense layers of width `latent` to one logit, no activations
One training step is three updates in turn, each seeing the parameters the previous one changed
(ALAE's `train_alae.py`, lines 295-313), with z ~ N(0, I) drawn afresh for each:
  (a) E, D:  softplus(D(E(G(F(z))))) + softplus(-D(E(x))) + γ/2 · ||∇_x D(E(x))||²   (logistic loss + R1 on reals)
  (b) F, G:  softplus(-D(E(G(F(z)))))                                             (non-saturating)
  (c) E, G:  ||F(z) - E(G(F(z)))||², mean over batch and latent                   (latent regression)
Each update differentiates only its own parameter groups, so it cannot change the others.

Pixels: the project's images are float32 in [0, 1]; ALAE trains on x/127.5 - 1 (train_alae.py:280) with a linear
generator output (GeneratorFC) and shows (x + 1)/2. So the networks work in ALAE's [-1, 1] convention
(`to_alae`); G stays linear and unclipped while training, as in ALAE, and only the public functions (`sample`,
`reconstruct`, `interpolate`) map back to [0, 1] and clip. The R1 gradient is taken w.r.t. the [-1, 1] input, as
ALAE's (it is half the gradient w.r.t. [0, 1] pixels).

Dense layers use ALAE's equalized learning rate (`lreq.Linear` with `LREQAdam`): weights ~ N(0, 1/lrmul), scaled
at run time by gain/sqrt(fan_in)·lrmul, biases by lrmul. With Adam, whose step size ignores the gradient's
scale, this is the same as ALAE's per-parameter step scaling, and it is what makes ALAE's learning rate of 0.002
right; F and D learn 10× slower (lrmul 0.1), as in ALAE.

Optimisers, as ALAE's: two Adam states (b1 = 0, b2 = 0.99), one over (E, D) and one over (F, G); (a) and (c) step
the first, (b) and (c) the second, so update (c) is normalised by the same second moments as the adversarial
updates. Giving (c) an Adam state of its own (`separate_adam=True`) makes its steps as large as the adversarial
ones however small its gradient. On a toy set (256 8×8 images, latent 8, hidden 128, batch 32, 800 steps), the
mean sample image came within 1.5 (squared L2 distance, ~10 at init) of the data's for 8 of 8 seeds with shared
states and for 0 of 8 with separate ones. In (c) the idle groups (D; F) get zero gradients and are not written
back: their parameters stay exactly as they are (ALAE's zeroed gradients leave D unchanged too).

D is linear, as ALAE's MappingD: its author calls the missing activations an error kept for reproducibility
(ALAE issue #44). Kept here too: with LeakyReLU 0.2 between D's layers the toy run above succeeded for 5 of 8
seeds instead of 8 of 8 (E supplies the nonlinearity). One deliberate difference from ALAE's code: (c) does not
update F (ALAE's code also steps F through G's input; the paper's Algorithm 1 updates only E and G).

`frechet_distance` is an MNIST-specific FID: computed on the project classifier's penultimate features
(`core.classifier.features`), not on Inception features, so its values are not comparable with published FIDs.
"""

import dataclasses
import functools
import math
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vqdefense_jax.core import experiment as skeleton
from vqdefense_jax.core.config import require
from vqdefense_jax.core.errors import VQDefenseError

SLOPE = 0.2          # LeakyReLU slope everywhere (ALAE)
GAIN = math.sqrt(2)  # lreq.Linear's default gain (He init for (Leaky)ReLU)
SLOW = 0.1           # lrmul of F and D (ALAE's MappingF and MappingD)


class EqualizedDense(nn.Module):
  """ALAE's `lreq.Linear`: unit-scale parameters, scaled at run time (equalized learning rate)."""
  features: int
  lrmul: float = 1.0

  @nn.compact
  def __call__(self, x_BxI: jnp.ndarray) -> jnp.ndarray:
    fan_in = x_BxI.shape[-1]
    kernel_IxO = self.param("kernel", nn.initializers.normal(1.0 / self.lrmul), (fan_in, self.features))
    bias_O = self.param("bias", nn.initializers.zeros, (self.features,))
    return x_BxI @ (kernel_IxO * (GAIN / math.sqrt(fan_in) * self.lrmul)) + bias_O[None, :] * self.lrmul


def _lrelu(x):
  return nn.leaky_relu(x, SLOPE)


class Mapping(nn.Module):
  """F: z -> w."""
  latent: int
  layers: int = 6

  @nn.compact
  def __call__(self, z_BxL: jnp.ndarray) -> jnp.ndarray:
    x = z_BxL * jax.lax.rsqrt(jnp.mean(jnp.square(z_BxL), axis=1, keepdims=True) + 1e-8)  # pixel norm
    for _ in range(self.layers):
      x = _lrelu(EqualizedDense(self.latent, lrmul=SLOW)(x))
    return x


class Generator(nn.Module):
  """G: w -> image in ALAE's [-1, 1] convention, linear output (ALAE's GeneratorFC has no output nonlinearity)."""
  image_shape: tuple[int, int, int]
  hidden: int = 1024

  @nn.compact
  def __call__(self, w_BxL: jnp.ndarray) -> jnp.ndarray:
    x = _lrelu(EqualizedDense(self.hidden)(w_BxL))
    x = _lrelu(EqualizedDense(self.hidden)(x))
    x = EqualizedDense(math.prod(self.image_shape))(x)
    return x.reshape((x.shape[0],) + tuple(self.image_shape))


class Encoder(nn.Module):
  """E: image in ALAE's [-1, 1] convention -> w (ALAE's EncoderFC, LeakyReLU on its output too, like F's)."""
  latent: int
  hidden: int = 1024

  @nn.compact
  def __call__(self, x_BxHxWxC: jnp.ndarray) -> jnp.ndarray:
    x = x_BxHxWxC.reshape(x_BxHxWxC.shape[0], -1)
    x = _lrelu(EqualizedDense(self.hidden)(x))
    x = _lrelu(EqualizedDense(self.hidden)(x))
    return _lrelu(EqualizedDense(self.latent)(x))


class Discriminator(nn.Module):
  """D: w -> one logit per example; hidden width = w's; no activations (ALAE's MappingD, see the module doc)."""
  layers: int = 3

  @nn.compact
  def __call__(self, w_BxL: jnp.ndarray) -> jnp.ndarray:
    x = w_BxL
    for _ in range(self.layers - 1):
      x = EqualizedDense(w_BxL.shape[-1], lrmul=SLOW)(x)
    return EqualizedDense(1, lrmul=SLOW)(x)[:, 0]


@dataclasses.dataclass(frozen=True)
class Nets:
  """The four modules; static (hashable) metadata of `ALAEParams`, so params alone describe the model."""
  mapping: Mapping
  generator: Generator
  encoder: Encoder
  discriminator: Discriminator


@flax.struct.dataclass
class ALAEParams:
  """The four networks' parameters; `nets` (static, in the pytree's structure) says what they are, so `sample`,
  `reconstruct` and `interpolate` need nothing else, and a checkpoint restores to the model that made it."""
  mapping: Any        # F
  generator: Any      # G
  encoder: Any        # E
  discriminator: Any  # D
  nets: Nets = flax.struct.field(pytree_node=False)


@flax.struct.dataclass
class ALAEState:
  """`step` (what `core.training.fit` counts), the four networks, and their Adam states."""
  step: jax.Array
  params: ALAEParams
  opt_d: Any   # (E, D): updates (a) and, unless separate_adam, (c)
  opt_g: Any   # (F, G): updates (b) and, unless separate_adam, (c)
  opt_ae: Any  # (E, G): update (c) with separate_adam; () otherwise


D_GROUP = ("encoder", "discriminator")
G_GROUP = ("mapping", "generator")
AE_GROUP = ("encoder", "generator")


def to_alae(x01):
  """[0, 1] pixels -> ALAE's [-1, 1] (x/127.5 - 1 of uint8)."""
  return 2.0 * x01 - 1.0


def from_alae(x_pm):
  """ALAE's [-1, 1] -> [0, 1] pixels, clipped: G's linear output may overshoot."""
  return jnp.clip((x_pm + 1.0) / 2.0, 0.0, 1.0)


def _map(p: ALAEParams, z_BxL):
  return p.nets.mapping.apply({"params": p.mapping}, z_BxL)


def _generate(p: ALAEParams, w_BxL):
  return p.nets.generator.apply({"params": p.generator}, w_BxL)


def _encode(p: ALAEParams, x_pm):
  return p.nets.encoder.apply({"params": p.encoder}, x_pm)


def _critic(p: ALAEParams, x_pm):
  """D(E(x)): (B,) logits of 'real'."""
  return p.nets.discriminator.apply({"params": p.discriminator}, _encode(p, x_pm))


def _check_image_shape(p: ALAEParams, image_shape) -> tuple[int, int, int]:
  shape = tuple(int(s) for s in image_shape)
  if shape != tuple(p.nets.generator.image_shape):
    raise VQDefenseError(f"this ALAE makes images of shape {tuple(p.nets.generator.image_shape)}, not {shape}")
  return shape


def r1_penalty(critic, x_BxHxWxC: jax.Array) -> jax.Array:
  """||∇_x critic(x)||² per example (B,). The gradient of the batch sum is each example's own gradient, since
  the critic treats examples independently (no batch statistics)."""
  grad = jax.grad(lambda x: jnp.sum(critic(x)))(x_BxHxWxC)
  return jnp.sum(jnp.square(grad), axis=tuple(range(1, grad.ndim)))


@dataclasses.dataclass(frozen=True)
class ALAEStep:
  """The ALAE train step for `core.training.fit`: `step(state, idx_B, images, labels, extra)`, images in [0, 1].

  Frozen and hashable, so equal steps share one compiled function. The noise key of step s is
  fold_in(key(seed), s), split three ways for the three updates: a resumed run continues bit-identically.
  Defaults are ALAE's MNIST MLP (configs/mnist_fc.yaml, defaults.py).
  """
  latent: int = 50
  mapping_layers: int = 6
  hidden: int = 1024
  d_layers: int = 3
  r1_gamma: float = 10.0
  learning_rate: float = 0.002
  adam_b1: float = 0.0
  adam_b2: float = 0.99
  separate_adam: bool = False  # True: update (c) gets an Adam state of its own (not ALAE's; see the module doc)
  seed: int = 0

  def __post_init__(self):
    if min(self.latent, self.mapping_layers, self.hidden, self.d_layers) < 1:
      raise VQDefenseError(f"ALAE sizes must be >= 1: latent={self.latent}, mapping_layers={self.mapping_layers}, "
                           f"hidden={self.hidden}, d_layers={self.d_layers}")
    if not (self.r1_gamma >= 0 and self.learning_rate > 0 and 0 <= self.adam_b1 < 1 and 0 <= self.adam_b2 < 1):
      raise VQDefenseError(f"ALAE needs r1_gamma >= 0, learning_rate > 0 and Adam betas in [0, 1), got "
                           f"{self.r1_gamma}, {self.learning_rate}, ({self.adam_b1}, {self.adam_b2})")

  def nets(self, image_shape: tuple[int, int, int]) -> Nets:
    return Nets(Mapping(self.latent, self.mapping_layers), Generator(tuple(image_shape), self.hidden),
                Encoder(self.latent, self.hidden), Discriminator(self.d_layers))

  def optimizer(self) -> optax.GradientTransformation:
    return optax.adam(self.learning_rate, b1=self.adam_b1, b2=self.adam_b2)

  def init(self, image_shape) -> ALAEState:
    """Fresh networks and optimiser states for images of `image_shape` (H, W, C), from `seed` alone."""
    shape = tuple(int(s) for s in image_shape)
    if len(shape) != 3 or min(shape) < 1:
      raise VQDefenseError(f"ALAE image_shape must be (H, W, C) with positive sizes, got {tuple(image_shape)}")
    nets = self.nets(shape)
    kf, kg, ke, kd = jax.random.split(jax.random.key(self.seed), 4)
    w = jnp.zeros((1, self.latent), jnp.float32)
    params = ALAEParams(mapping=nets.mapping.init(kf, w)["params"], generator=nets.generator.init(kg, w)["params"],
                        encoder=nets.encoder.init(ke, jnp.zeros((1,) + shape, jnp.float32))["params"],
                        discriminator=nets.discriminator.init(kd, w)["params"], nets=nets)
    opt = self.optimizer()
    opt_ae = opt.init(_group(params, AE_GROUP)) if self.separate_adam else ()
    return ALAEState(step=jnp.zeros((), jnp.int32), params=params, opt_d=opt.init(_group(params, D_GROUP)),
                     opt_g=opt.init(_group(params, G_GROUP)), opt_ae=opt_ae)

  def _adam(self, grads: dict, opt_state, params: ALAEParams, trained: tuple[str, ...]):
    """One Adam step of the groups in `grads` (one optimiser's groups); only those in `trained` are written back,
    so a group with zero gradient stays exactly as it is whatever Adam's momentum."""
    sub = _group(params, tuple(grads))
    updates, opt_state = self.optimizer().update(grads, opt_state, sub)
    new = optax.apply_updates(sub, updates)
    return params.replace(**{name: new[name] for name in trained}), opt_state

  def _update(self, loss_fn, group: tuple[str, ...], params: ALAEParams, opt_state, *args):
    """One Adam step of `loss_fn(sub, params, *args) -> (loss, aux)` on the parameter groups `group` only."""
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(_group(params, group), params, *args)
    params, opt_state = self._adam(grads, opt_state, params, group)
    return params, opt_state, loss, aux

  def d_update(self, state: ALAEState, x_BxHxWxC: jax.Array, key: jax.Array) -> tuple[ALAEState, dict]:
    """(a): E and D learn to tell E(x) of reals from E(G(F(z))), with R1 on reals."""
    def loss_fn(sub, p, x_pm, z_BxL):
      fake_pm = jax.lax.stop_gradient(_generate(p, _map(p, z_BxL)))
      critic = functools.partial(_critic, p.replace(**sub))
      r1_B = r1_penalty(critic, x_pm)
      loss_B = jax.nn.softplus(critic(fake_pm)) + jax.nn.softplus(-critic(x_pm)) + 0.5 * self.r1_gamma * r1_B
      return jnp.mean(loss_B), jnp.mean(r1_B)

    z = jax.random.normal(key, (x_BxHxWxC.shape[0], self.latent), jnp.float32)
    params, opt_d, loss, r1 = self._update(loss_fn, D_GROUP, state.params, state.opt_d, to_alae(x_BxHxWxC), z)
    return state.replace(params=params, opt_d=opt_d), dict(d_loss=loss, r1=r1)

  def g_update(self, state: ALAEState, n: int, key: jax.Array) -> tuple[ALAEState, dict]:
    """(b): F and G learn to make D(E(G(F(z)))) say 'real'."""
    def loss_fn(sub, p, z_BxL):
      q = p.replace(**sub)
      return jnp.mean(jax.nn.softplus(-_critic(q, _generate(q, _map(q, z_BxL))))), None

    z = jax.random.normal(key, (n, self.latent), jnp.float32)
    params, opt_g, loss, _ = self._update(loss_fn, G_GROUP, state.params, state.opt_g, z)
    return state.replace(params=params, opt_g=opt_g), dict(g_loss=loss)

  def ae_update(self, state: ALAEState, n: int, key: jax.Array) -> tuple[ALAEState, dict]:
    """(c): E and G learn to invert each other in w: E(G(w)) = w for w = F(z) (F is the fixed target here)."""
    def loss_fn(sub, p, z_BxL):
      q = p.replace(**sub)
      w = _map(p, z_BxL)
      return jnp.mean(jnp.square(w - _encode(q, _generate(q, w)))), None

    z = jax.random.normal(key, (n, self.latent), jnp.float32)
    if self.separate_adam:
      params, opt_ae, loss, _ = self._update(loss_fn, AE_GROUP, state.params, state.opt_ae, z)
      return state.replace(params=params, opt_ae=opt_ae), dict(latent_loss=loss)
    (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(_group(state.params, AE_GROUP), state.params, z)
    zeros = lambda name: jax.tree.map(jnp.zeros_like, getattr(state.params, name))
    params, opt_d = self._adam(dict(encoder=grads["encoder"], discriminator=zeros("discriminator")), state.opt_d,
                               state.params, ("encoder",))
    params, opt_g = self._adam(dict(mapping=zeros("mapping"), generator=grads["generator"]), state.opt_g, params,
                               ("generator",))
    return state.replace(params=params, opt_d=opt_d, opt_g=opt_g), dict(latent_loss=loss)

  def __call__(self, state: ALAEState, idx_B, images, labels, extra=None) -> tuple[ALAEState, dict[str, jax.Array]]:
    del labels, extra  # unconditional
    _check_image_shape(state.params, images.shape[1:])
    x = images[idx_B]
    k_d, k_g, k_ae = jax.random.split(jax.random.fold_in(jax.random.key(self.seed), state.step), 3)
    state, m_d = self.d_update(state, x, k_d)
    state, m_g = self.g_update(state, x.shape[0], k_g)
    state, m_ae = self.ae_update(state, x.shape[0], k_ae)
    metrics = dict(**m_d, **m_g, **m_ae)
    metrics["loss"] = metrics["d_loss"] + metrics["g_loss"] + metrics["latent_loss"]
    return state.replace(step=state.step + 1), metrics


def _group(params: ALAEParams, names: tuple[str, ...]) -> dict[str, Any]:
  return {name: getattr(params, name) for name in names}


# --- pure functions of trained params; images in [0, 1] ---------------------------------------------------

@functools.partial(jax.jit, static_argnames=("n", "image_shape"))
def sample(params: ALAEParams, key: jax.Array, n: int, image_shape: tuple[int, int, int]) -> jax.Array:
  """n images G(F(z)), z ~ N(0, I) from `key`: (n, H, W, C) in [0, 1]."""
  _check_image_shape(params, image_shape)
  z = jax.random.normal(key, (n, params.nets.mapping.latent), jnp.float32)
  return from_alae(_generate(params, _map(params, z)))


@jax.jit
def reconstruct(params: ALAEParams, x_BxHxWxC: jax.Array) -> jax.Array:
  """G(E(x)) in [0, 1]: the image ALAE makes of a real one."""
  _check_image_shape(params, x_BxHxWxC.shape[1:])
  return from_alae(_generate(params, _encode(params, to_alae(x_BxHxWxC))))


@functools.partial(jax.jit, static_argnames=("num",))
def interpolate(params: ALAEParams, x_a_BxHxWxC: jax.Array, x_b_BxHxWxC: jax.Array, num: int) -> jax.Array:
  """G of `num` evenly spaced points from E(x_a) to E(x_b) in w (ends included): (B, num, H, W, C) in [0, 1]."""
  shape = _check_image_shape(params, x_a_BxHxWxC.shape[1:])
  _check_image_shape(params, x_b_BxHxWxC.shape[1:])
  w_a_BxL, w_b_BxL = _encode(params, to_alae(x_a_BxHxWxC)), _encode(params, to_alae(x_b_BxHxWxC))
  t_1xTx1 = jnp.linspace(0.0, 1.0, num, dtype=jnp.float32)[None, :, None]
  w_BxTxL = w_a_BxL[:, None, :] * (1.0 - t_1xTx1) + w_b_BxL[:, None, :] * t_1xTx1
  x = _generate(params, w_BxTxL.reshape(-1, w_BxTxL.shape[-1]))
  return from_alae(x).reshape((w_BxTxL.shape[0], num) + shape)


# --- evaluation -------------------------------------------------------------------------------------------

def frechet_distance(feats_a_NxD, feats_b_MxD) -> float:
  """||μ_a - μ_b||² + Tr(Σ_a + Σ_b - 2 (Σ_a Σ_b)^½) between Gaussians fitted to two feature sets.

  An MNIST-specific FID when the features are the project classifier's penultimate activations
  (`core.classifier.features`); not Inception FID, so not comparable with published numbers.
  Tr((Σ_a Σ_b)^½) is the sum of the square roots of the eigenvalues of Σ_a^½ Σ_b Σ_a^½, a symmetric matrix
  similar to Σ_a Σ_b: real by construction, where `scipy.linalg.sqrtm(Σ_a @ Σ_b)` can come back with imaginary
  parts or inaccurate for the singular covariances of fewer samples than features. Eigenvalues below zero by
  rounding are taken as zero.
  """
  a, b = np.asarray(feats_a_NxD, np.float64), np.asarray(feats_b_MxD, np.float64)
  if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or len(a) < 2 or len(b) < 2:
    raise VQDefenseError(f"frechet_distance needs two (N, D) feature sets with the same D and N >= 2, got "
                         f"{a.shape} and {b.shape}")
  mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
  cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
  lam_a, vec_a = np.linalg.eigh(cov_a)
  sqrt_a = (vec_a * np.sqrt(np.clip(lam_a, 0, None))[None, :]) @ vec_a.T
  lam = np.linalg.eigvalsh(sqrt_a @ cov_b @ sqrt_a)
  diff = mu_a - mu_b
  return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.sum(np.sqrt(np.clip(lam, 0, None))))


@dataclasses.dataclass(frozen=True)
class ALAESpec:
  """The `alae` config section, checked."""
  latent: int
  mapping_layers: int
  hidden: int
  r1_gamma: float
  learning_rate: float
  separate_adam: bool
  batch_size: int
  steps: int

  @classmethod
  def from_config(cls, s) -> "ALAESpec":
    spec = cls(s.latent, s.mapping_layers, s.hidden, float(s.r1_gamma), float(s.learning_rate), s.separate_adam,
               s.batch_size, s.steps)
    require(1 <= spec.latent <= 4096 and 1 <= spec.mapping_layers <= 64 and 1 <= spec.hidden <= 16384,
            f"alae.latent (1..4096), alae.mapping_layers (1..64) and alae.hidden (1..16384) out of range: "
            f"{spec.latent}, {spec.mapping_layers}, {spec.hidden}")
    require(spec.r1_gamma >= 0 and spec.learning_rate > 0, "alae.r1_gamma must be >= 0 and alae.learning_rate > 0")
    skeleton.check_schedule("alae", spec.batch_size, spec.steps)
    return spec

  def step(self, seed: int) -> ALAEStep:
    return ALAEStep(latent=self.latent, mapping_layers=self.mapping_layers, hidden=self.hidden,
                    r1_gamma=self.r1_gamma, learning_rate=self.learning_rate, separate_adam=self.separate_adam,
                    seed=seed)
