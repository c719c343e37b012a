"""vqdefense_jax: purify and detect manipulated images, in JAX/Flax.

  core/     what every system shares: config and CLI, errors, files, devices and model stacks, tiles,
            data, the training loop and checkpoints, metrics, report primitives, the classifier and the
            attacks every system defends against
  purify/   VQ-VAE purification (the paper): VQ-VAE, quantiser, purifiers, the grid, its results and report
"""

from vqdefense_jax.core.errors import VQDefenseError

__all__ = ["VQDefenseError"]
