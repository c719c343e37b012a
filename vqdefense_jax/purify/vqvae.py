"""The paper's target classifier and its VQ-VAE (Table 1), as pure functions of parameters.

Linen modules hold the layers; `VQVAE` is a frozen (hashable, jit-static)
description that composes encoder, quantiser and decoder into pure functions
of a variables dict {'params': {'encoder', 'decoder'}, 'codebook': Codebook}.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vqdefense_jax.core import layers
from vqdefense_jax.purify import quantizer

Variables = dict[str, Any]


class Residual(nn.Module):
  """x + conv(x): Table 1's "Residual_Conv" (stride 1, so the skip connection fits)."""
  channels: int
  kernel: int

  @nn.compact
  def __call__(self, x):
    pad = (self.kernel - 1) // 2
    return x + layers.Conv(self.channels, (self.kernel,) * 2, padding=((pad, pad), (pad, pad)))(x)


class Encoder(nn.Module):
  """conv4×4/2 → conv4×4/2 → ReLU → residual 3×3 → ReLU → residual 1×1 (Table 1)."""
  channels: int
  embedding_dim: int
  layout: str

  @nn.compact
  def __call__(self, x):
    x = layers.Conv(self.channels, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)))(x)
    x = layers.Conv(self.channels, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)))(x)
    x = Residual(self.channels, 3)(nn.relu(x))
    x = Residual(self.channels, 1)(nn.relu(x))
    if self.layout == "per_position" and self.embedding_dim != self.channels:
      x = layers.Conv(self.embedding_dim, (1, 1), name="pre_quantize")(x)
    return x


class Decoder(nn.Module):
  """residual 1×1 → ReLU → residual 3×3 → ReLU → convT 2×2/2 (C) → convT 2×2/2 (1); no output clamp."""
  channels: int
  out_channels: int = 1

  @nn.compact
  def __call__(self, z):
    if z.shape[-1] != self.channels:
      z = layers.Conv(self.channels, (1, 1), name="post_quantize")(z)
    z = Residual(self.channels, 1)(z)
    z = Residual(self.channels, 3)(nn.relu(z))
    z = layers.ConvTranspose(self.channels, (2, 2), strides=(2, 2), padding="VALID")(nn.relu(z))
    return layers.ConvTranspose(self.out_channels, (2, 2), strides=(2, 2), padding="VALID")(z)


def conv_out(side: int) -> int:
  """Spatial side after one 4×4, stride-2, padding-1 convolution."""
  return (side + 2 - 4) // 2 + 1


def latent_side(side: int) -> int:
  return conv_out(conv_out(side))


def round_trips(side: int) -> bool:
  """True if a side×side input comes back at the same size (two /2 convs, two ×2 convTs)."""
  return side >= 4 and 4 * latent_side(side) == side


@dataclasses.dataclass(frozen=True)
class VQVAE:
  """Static description of one VQ-VAE; every method is a pure function of its arguments."""
  channels: int = 128
  embedding_dim: int = 128
  k_max: int = 1000
  layout: str = "nchw_chunks"
  commitment_cost: float = 0.25
  decay: float = 0.999
  epsilon: float = 1e-5

  @property
  def encoder(self) -> Encoder:
    return Encoder(self.channels, self.embedding_dim, self.layout)

  @property
  def decoder(self) -> Decoder:
    return Decoder(self.channels)

  def init(self, rng: jax.Array, x_example: jnp.ndarray, codebook_size: Any) -> Variables:
    r_enc, r_dec, r_code = jax.random.split(rng, 3)
    enc = self.encoder.init(r_enc, x_example)["params"]
    z = self.encoder.apply({"params": enc}, x_example)
    zq = quantizer.from_vectors(quantizer.to_vectors(z, self.layout, self.embedding_dim), z.shape, self.layout)
    dec = self.decoder.init(r_dec, zq)["params"]
    return {"params": {"encoder": enc, "decoder": dec},
            "codebook": quantizer.init_codebook(r_code, codebook_size, self.k_max, self.embedding_dim)}

  def forward(self, params: Variables, codebook: quantizer.Codebook, x: jnp.ndarray):
    """Returns the reconstruction and what training needs (vectors, code indices)."""
    z = self.encoder.apply({"params": params["encoder"]}, x)
    v_BxNxD = quantizer.to_vectors(z, self.layout, self.embedding_dim)
    flat_MxD = v_BxNxD.reshape(-1, self.embedding_dim)
    idx_M = quantizer.nearest_code(codebook, flat_MxD)
    q_MxD = codebook["embedding"][idx_M]
    zq = quantizer.from_vectors(quantizer.straight_through(flat_MxD, q_MxD).reshape(v_BxNxD.shape), z.shape,
                                self.layout)
    x_hat = self.decoder.apply({"params": params["decoder"]}, zq)
    return x_hat, dict(flat=flat_MxD, quantized=q_MxD, idx=idx_M)

  def reconstruct(self, variables: Variables, x: jnp.ndarray) -> jnp.ndarray:
    return self.forward(variables["params"], variables["codebook"], x)[0]

  def loss(self, params: Variables, codebook: quantizer.Codebook, x: jnp.ndarray, target: jnp.ndarray | None = None):
    """MSE of the reconstruction of x against `target` (default x) + β·commitment.

    Returns the EMA-updated codebook as new state.
    """
    x_hat, aux = self.forward(params, codebook, x)
    recon = jnp.mean((x_hat - (x if target is None else target)) ** 2)
    commit = jnp.mean((aux["flat"] - jax.lax.stop_gradient(aux["quantized"])) ** 2)
    new_codebook = quantizer.ema_update(codebook, jax.lax.stop_gradient(aux["flat"]), aux["idx"], self.decay,
                                        self.epsilon)
    metrics = dict(recon_mse=recon, commitment=commit, **quantizer.usage(codebook, aux["idx"]))
    return recon + self.commitment_cost * commit, (new_codebook, metrics)
