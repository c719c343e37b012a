"""The detection system at full size (an accelerator job): ALAE on all 60,000 MNIST images, four detectors.

  python train.py --config configs/detect/paper.py --workdir runs/detect_paper
  python evaluate.py --config configs/detect/paper.py --workdir runs/detect_paper

The defaults of vqdefense_jax/detect/config.py: ALAE with its MNIST MLP configuration (latent 50, 6 mapping
layers, 1024-unit MLPs, R1 γ = 10, Adam 0.002 with β = (0, 0.99)) trained 30,000 steps of batch 128; detectors
of widths (16, 32, 64) trained 5,000 steps of batch 128 on 60,000 real and 60,000 ALAE images, one per
augmentation p = 0, 0.1, 0.5, and the gate's detector of FGSM examples; the purification models inside at
the paper's protocol (classifier 14 epochs; No-Split and Split VQ-VAEs of 128 channels, codebook size 768,
50 epochs); evaluation on all 10,000 test images, and the purification grid with detect, then purify under
grey-box FGSM and white-box straight-through PGD (10 steps).

Expected: not yet measured (no GPU has been lent to this project). The quick CPU config already gives AP
1.000 on ALAE fakes for every variant, and blur robustness that grows with p (RESULTS.md, section 4); the
open question at this size is how far the detectors generalise to fakes of other generators.
"""

from vqdefense_jax.detect.config import base_config


def get_config():
  c = base_config()
  c.purify.attack.names = ("fgsm", "ste_fgsm", "ste_pgd")
  return c
