"""The detection system at full size (an accelerator job): ALAE on all 60,000 MNIST images, three detectors.

  python train.py --config configs/detect/paper.py --workdir runs/detect_paper
  python evaluate.py --config configs/detect/paper.py --workdir runs/detect_paper

The defaults of vqdefense_jax/detect/config.py: ALAE with its MNIST MLP configuration (latent 50, 6 mapping
layers, 1024-unit MLPs, R1 γ = 10, Adam 0.002 with β = (0, 0.99)) trained 30,000 steps of batch 128; detectors
of widths (16, 32, 64) trained 5,000 steps of batch 128 on 60,000 real and 60,000 ALAE images, one per
augmentation p = 0, 0.1, 0.5; evaluation on all 10,000 test images.

Expected: not yet measured (no GPU has been lent to this project). The quick CPU config already gives AP
1.000 on ALAE fakes for every variant, and blur robustness that grows with p (RESULTS.md, section 4); the
open question at this size is how far the detectors generalise to fakes of other generators.
"""

from vqdefense_jax.detect.config import base_config


def get_config():
  return base_config()
