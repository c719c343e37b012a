"""Quick CPU run of the restoration system: the classifier and four restorers of 24×24 MNIST mosaics.

  python train.py --config configs/restore/quick.py --workdir runs/restore_quick      # trains what is missing
  python evaluate.py --config configs/restore/quick.py --workdir runs/restore_quick   # restoration.json, tables

Differences from the full set-up (vqdefense_jax/restore/config.py): 12,000 training and 500 test images; a
generator of width 16 with 3 residual blocks (CycleGAN: 64 and 9) and a PatchGAN of width 16 (one stride-2
layer at 24×24: 16×16-pixel patches); 600 steps of batch 32 per restorer instead of 20,000 of 64; the classifier
of configs/purify/quick.py (2 epochs). The variants are the document's model (CBAM, λ = 1), the same without
CBAM, L1 only, and pix2pix's λ = 100.

Measured (2-core CPU; timings 2026-11-25: train 4 min 20 s, evaluate 11 s; numbers regenerated 2026-12-08 with
`python scripts/check_quoted_numbers.py --only restore`). Over the box, PSNR 12.53 dB and SSIM 0.568 for the
mosaic; 15.58 / 0.806 restored by the CBAM restorer, 15.9-16.0 / 0.82-0.83 by the others. Over the whole image
the restorers (19.5-20.3 dB) are no better than the mosaic (20.17 dB): they blur a little outside the box.
Grad-CAM concentration on the box 1.05 with CBAM, 1.05 without, 0.95 L1 only, 0.96 at λ = 100: at this size
attention is not concentrated on the box (the document's claim is not reproduced). Classifier accuracy 0.984
clean, 0.940 mosaicked, 0.938-0.944 restored; grey-box FGSM at ε = 0.2 gives 0.356, and 0.722 after the CBAM
restorer (trained on mosaics only).
"""

from vqdefense_jax.restore.config import base_config


def get_config():
  c = base_config()
  c.data.train_subset = 12000
  c.data.test_subset = 500
  c.generator.width = 16
  c.generator.blocks = 3
  c.discriminator.width = 16
  c.gan.batch_size = 32
  c.gan.steps = 600
  c.classifier.epochs = 2
  c.classifier.batch_size = 64
  c.train.checkpoint_every = 200
  c.train.log_every = 50
  return c
