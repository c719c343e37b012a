"""The restoration system at the document's size (an accelerator job): CycleGAN's networks on all of MNIST.

  python train.py --config configs/restore/paper.py --workdir runs/restore_paper
  python evaluate.py --config configs/restore/paper.py --workdir runs/restore_paper

The defaults of vqdefense_jax/restore/config.py: 60,000 MNIST training images at 24×24, a mosaic of 4-pixel
cells over a random box of 30-50 % of each side; CycleGAN's ResNet generator (width 64, 9 residual blocks, CBAM
after each) and PatchGAN (width 64; one stride-2 layer at 24×24), L = L_adv + λ·L1 with the document's λ = 1,
Adam 2e-4 with β1 = 0.5, 20,000 steps of batch 64 per variant; variants CBAM, no CBAM, L1 only, and λ = 100
(pix2pix); the classifier of the purification paper (14 epochs); evaluation on all 10,000 test images.

Expected: not yet measured (no accelerator run yet). What it should show, if the document's claim holds: a
Grad-CAM concentration on the box above 1 for the CBAM restorer, and higher than without CBAM.
"""

from vqdefense_jax.restore.config import base_config


def get_config():
  return base_config()
