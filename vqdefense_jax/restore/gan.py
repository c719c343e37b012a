"""The restorer's training: G against D on (de-identified x, clean y) pairs, adversarial loss plus λ·L1.

The document's objective (eqs. 1-4), with D's output σ(logit) per patch (restore/models.py):
  L_adv  = E_y[log D(y)] + E_x[log(1 - D(G(x)))]                                     (1)
  L_dist = E_(x,y)[|G(x) - y|]                                                        (2)
  L      = L_adv + λ·L_dist,   G*, D* = argmin_G max_D L                             (3, 4)
The document has λ = 1; pix2pix (Isola et al. 2017) used 100. One training step is two updates in turn, as in
pix2pix's and CycleGAN's code (one D step per G step, the second seeing the D the first changed):
  (a) D:  ½ · [softplus(-D(y)) + softplus(D(G(x)))]            mean over patches and batch: max_D L_adv
  (b) G:  softplus(-D(G(x))) + λ·|G(x) - y|                      non-saturating form of min_G L_adv, plus L1
The ½ is pix2pix's (it slows D relative to G). L1 is taken in the networks' [-1, 1] pixel space, as pix2pix's
and CycleGAN's code take it, so λ means what it means there (it is twice the L1 of [0, 1] pixels). Each update
differentiates only its own network and has its own Adam (lr 2e-4, β1 = 0.5, β2 = 0.999: pix2pix's and
CycleGAN's), so neither can change the other network.

With `adversarial=False` (the L1-only ablation) G's loss is λ·L1 alone; D still trains against G's outputs, so
that Grad-CAM's score D(G(x)) is defined for every variant and means the same thing.

Nothing in a step is random: the pairs are fixed data (restore/mosaic.py, from (seed, index)) and the batch
indices come from (seed, step) (`core.training.IndexBatches`), so a resumed run continues bit-identically.
CycleGAN's linear learning-rate decay over its second 100 epochs is left out (a constant rate, as DCGAN's).
"""

import dataclasses
import math
import re
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from vqdefense_jax.core import experiment as skeleton
from vqdefense_jax.core import training
from vqdefense_jax.core.config import require
from vqdefense_jax.core.errors import VQDefenseError
from vqdefense_jax.restore import models

ADAM_B1, ADAM_B2 = 0.5, 0.999  # pix2pix / CycleGAN


@dataclasses.dataclass(frozen=True)
class Nets:
  """The two modules: static (hashable) metadata of `RestorerParams`, so params alone describe the model."""
  generator: models.Generator
  discriminator: models.PatchDiscriminator


@flax.struct.dataclass
class RestorerParams:
  generator: Any      # G
  discriminator: Any  # D
  nets: Nets = flax.struct.field(pytree_node=False)


def generate(p: RestorerParams, x_BxHxWxC: jax.Array) -> jax.Array:
  """G(x): the restored images in [0, 1]."""
  return p.nets.generator.apply({"params": p.generator}, x_BxHxWxC)


def critic(p: RestorerParams, x_BxHxWxC: jax.Array) -> jax.Array:
  """D(x): (B, h, w) logits of 'real', one per patch."""
  return p.nets.discriminator.apply({"params": p.discriminator}, x_BxHxWxC)


@dataclasses.dataclass(frozen=True)
class RestorerStep:
  """The restorer's train step for `core.training.fit`: `step(state, idx_B, inputs, targets)`, images in [0, 1].

  Frozen and hashable, so equal steps share one compiled function.
  """
  width: int = 64             # G's first width (CycleGAN's ngf)
  blocks: int = 9             # residual blocks (CycleGAN: 9 at 256×256, 6 at 128×128)
  cbam: bool = True           # CBAM after each residual block (False: the ablation)
  d_width: int = 64           # D's first width (ndf)
  d_layers: int = 3           # PatchGAN stride-2 layers (models.patch_layers picks one for an image size)
  adversarial: bool = True    # False: G's loss is L1 alone
  l1_weight: float = 1.0      # λ
  learning_rate: float = 2e-4
  seed: int = 0               # initialisation

  def __post_init__(self):
    if min(self.width, self.d_width, self.d_layers) < 1 or self.blocks < 0:
      raise VQDefenseError(f"restorer sizes out of range: width={self.width}, blocks={self.blocks}, "
                           f"d_width={self.d_width}, d_layers={self.d_layers}")
    if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
      raise VQDefenseError(f"the restorer needs a finite learning_rate > 0, got {self.learning_rate}")
    if not (self.l1_weight >= 0 and math.isfinite(self.l1_weight)) or not (self.adversarial or self.l1_weight > 0):
      raise VQDefenseError(f"λ (l1_weight) must be finite and >= 0, and > 0 without the adversarial loss; got "
                           f"{self.l1_weight}")

  def nets(self) -> Nets:
    return Nets(models.Generator(self.width, self.blocks, self.cbam), models.PatchDiscriminator(self.d_width,
                                                                                                self.d_layers))

  def optimizer(self) -> optax.GradientTransformation:
    return optax.adam(self.learning_rate, b1=ADAM_B1, b2=ADAM_B2)

  def init(self, image_shape) -> training.GANState:
    """Fresh networks and Adam states for images of `image_shape` (H, W, C), from `seed` alone."""
    shape = models.check_shapes(image_shape, self.blocks, self.d_layers)
    nets = self.nets()
    g, d = models.init_params(nets.generator, nets.discriminator, shape, jax.random.key(self.seed))
    return training.GANState.create(RestorerParams(g, d, nets), self.optimizer())

  def d_update(self, state: training.GANState, x_BxHxWxC, y_BxHxWxC) -> tuple[training.GANState, dict]:
    """(a): D learns to tell clean images from G's restorations; G is a constant here."""
    p = state.params
    fake = generate(p, x_BxHxWxC)

    def loss_fn(d_params):
      q = p.replace(discriminator=d_params)
      return 0.5 * (jnp.mean(jax.nn.softplus(-critic(q, y_BxHxWxC))) + jnp.mean(jax.nn.softplus(critic(q, fake))))

    loss, grads = jax.value_and_grad(loss_fn)(p.discriminator)
    d_params, opt_d = training.apply_optimizer(self.optimizer(), grads, state.opt_d, p.discriminator)
    return state.replace(params=p.replace(discriminator=d_params), opt_d=opt_d), dict(d_loss=loss)

  def g_update(self, state: training.GANState, x_BxHxWxC, y_BxHxWxC) -> tuple[training.GANState, dict]:
    """(b): G learns to restore y (L1) and, when adversarial, to make D say 'real'; D is a constant here."""
    p = state.params

    def loss_fn(g_params):
      q = p.replace(generator=g_params)
      fake = generate(q, x_BxHxWxC)
      l1 = 2.0 * jnp.mean(jnp.abs(fake - y_BxHxWxC))  # in [-1, 1] pixels
      adv = jnp.mean(jax.nn.softplus(-critic(q, fake))) if self.adversarial else jnp.zeros(())
      return adv + self.l1_weight * l1, (adv, l1)

    (loss, (adv, l1)), grads = jax.value_and_grad(loss_fn, has_aux=True)(p.generator)
    g_params, opt_g = training.apply_optimizer(self.optimizer(), grads, state.opt_g, p.generator)
    return state.replace(params=p.replace(generator=g_params), opt_g=opt_g), dict(g_loss=loss, g_adv=adv, l1=l1)

  def __call__(self, state: training.GANState, idx_B, inputs,
               targets) -> tuple[training.GANState, dict[str, jax.Array]]:
    x, y = inputs[idx_B], targets[idx_B]
    state, m_d = self.d_update(state, x, y)
    state, m_g = self.g_update(state, x, y)
    metrics = dict(**m_d, **m_g)
    metrics["loss"] = metrics["d_loss"] + metrics["g_loss"]
    return state.replace(step=state.step + 1), metrics


# --- pure functions of trained params; images in [0, 1] ---------------------------------------------------

@jax.jit
def restore(params: RestorerParams, x_BxHxWxC: jax.Array) -> jax.Array:
  """G(x) for a batch of de-identified (or attacked) images."""
  return generate(params, x_BxHxWxC)


@jax.jit
def realness(params: RestorerParams, x_BxHxWxC: jax.Array) -> jax.Array:
  """D(G(x)) averaged over patches: (B,) logits, the score Grad-CAM explains (restore/gradcam.py)."""
  return critic(params, generate(params, x_BxHxWxC)).mean(axis=(1, 2))


# --- the `gan` config section and the variants ------------------------------------------------------------

_LAMBDA = re.compile(r"lambda(\d+(?:\.\d+)?(?:e-?\d+)?)$")


@dataclasses.dataclass(frozen=True)
class GANSpec:
  """The `gan` config section, checked."""
  l1_weight: float
  learning_rate: float
  batch_size: int
  steps: int

  @classmethod
  def from_config(cls, s) -> "GANSpec":
    spec = cls(float(s.l1_weight), float(s.learning_rate), s.batch_size, s.steps)
    require(spec.l1_weight >= 0 and spec.learning_rate > 0, "gan.l1_weight must be >= 0 and gan.learning_rate > 0")
    skeleton.check_schedule("gan", spec.batch_size, spec.steps)
    return spec


@dataclasses.dataclass(frozen=True)
class Variant:
  """One restorer of the comparison: its name (also its checkpoint's) and what it changes."""
  name: str
  cbam: bool
  adversarial: bool
  l1_weight: float

  @classmethod
  def parse(cls, name: str, l1_weight: float) -> "Variant":
    """'cbam' | 'nocbam', then optionally 'l1only' and 'lambda<λ>', joined by '_' (restore/config.py)."""
    tokens = name.split("_")
    bad = (f"variant {name!r}: expected 'cbam' or 'nocbam', then optionally '_l1only' and '_lambda<λ>' (e.g. "
           "'cbam_lambda100')")
    require(tokens[0] in ("cbam", "nocbam"), bad)
    adversarial, lam, given = True, l1_weight, False
    for t in tokens[1:]:
      if t == "l1only" and adversarial:
        adversarial = False
      elif (m := _LAMBDA.match(t)) and not given:
        lam, given = float(m.group(1)), True
      else:
        raise VQDefenseError(bad)
    require(math.isfinite(lam) and lam >= 0 and (adversarial or lam > 0),
            f"variant {name!r}: λ must be finite and >= 0 (> 0 with l1only), got {lam}")
    return cls(name, tokens[0] == "cbam", adversarial, lam)
