"""vqdefense_jax: VQ-VAE purification of adversarial images in JAX/Flax."""

from vqdefense_jax.errors import VQDefenseError

__all__ = ["VQDefenseError"]
