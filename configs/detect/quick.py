"""Quick CPU run of the detection system: ALAE, a DCGAN, four detectors, the purification models and the gate.

  python train.py --config configs/detect/quick.py --workdir runs/detect_quick      # trains what is missing
  python evaluate.py --config configs/detect/quick.py --workdir runs/detect_quick   # detection.json, tables

Differences from the full set-up (vqdefense_jax/detect/config.py): 12,000 training and 1,000 test images,
ALAE (ALAE's MNIST MLP sizes) trained 10,000 steps of batch 128 instead of 30,000, the DCGAN 4,000 steps
instead of 10,000, detectors of widths (8, 16, 32) trained 600 steps of batch 64 on 12,000 real and 12,000
ALAE (or FGSM) images; the purification models of configs/purify/quick.py with one codebook size (128); the
gated grid under grey-box FGSM and white-box straight-through FGSM and 10-step PGD at 8 ε.

Measured (RESULTS.md, section 4; 2-core CPU; 2026-11-25: train 10 min 31 s, evaluate 8 min 35 s on an idle
machine; numbers regenerated 2026-12-08 with scripts/check_quoted_numbers.py): AP 1.000 on ALAE samples,
reconstructions, FGSM and PGD for every detector, 0.78–0.88 on DCGAN samples (every DCGAN fake called real);
with blur σ = 2, AP on ALAE samples 0.605 without augmentation and 0.998 with p = 0.5; detect, then purify
keeps the classifier's clean accuracy (0.973) at ε = 0 and equals the purifier from ε = 0.04 on.
"""

from configs.purify import quick as purify_quick
from vqdefense_jax.detect.config import base_config, purify_section


def get_config():
  c = base_config()
  c.data.train_subset = 12000
  c.data.test_subset = 1000
  c.alae.steps = 10000
  c.dcgan.steps = 4000
  c.detector.widths = (8, 16, 32)
  c.detector.batch_size = 64
  c.detector.steps = 600
  c.purify = purify_section(purify_quick.get_config())  # the classifier and VQ-VAEs of configs/purify/quick.py,
  c.purify.vqvae.codebook_sizes = (128,)                # with one codebook size
  c.purify.attack.names = ("fgsm", "ste_fgsm", "ste_pgd")  # detect, then purify: grey-box, white-box through the gate
  c.purify.eval.purifiers = ("none", "no_split", "split")
  c.train.checkpoint_every = 500
  c.train.log_every = 50
  return c
