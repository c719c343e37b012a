"""AutoAttack against Table 1's purifiers and the restorer, reduced for a 2-core CPU: RESULTS.md sections 1b
and 6b.

  python evaluate.py --grid --config configs/purify/restorer_autoattack.py --workdir runs/restorer_cpu

configs/purify/restorer_cpu.py's models (12,000 training images at 24×24, a 2-epoch classifier, clean-trained
32-channel VQ-VAEs with 128 codes, the restorer trained on FGSM → clean pairs; the first 500 test images; it
shares that config's checkpoints, and trains them in an empty workdir) under one attack: `autoattack`,
AutoAttack's standard L∞ suite with its standard settings (APGD-CE, APGD-T and FAB-T with the straight-through
gradient, 100 iterations, 9 targets; Square with 5,000 queries), at ε = 0.04, 0.08, 0.16, 0.28, and 0.5 (the
chance check).

Expected (RESULTS.md sections 1b and 6b, measured 2026-12-07 on a 2-core CPU with --config.data.test_subset=100,
about 90 minutes after training): AutoAttack leaves undefended 0.90 / 0.75 / 0.07 / 0.00, No-Split 0.76 / 0.48 /
0.19 / 0.01, 4-Split 0.80 / 0.58 / 0.18 / 0.00 and the restorer 0.89 / 0.50 / 0.06 / 0.00 at ε = 0.04 / 0.08 /
0.16 / 0.28, everything 0 at 0.5; table_masking.md flags No-Split and 4-Split (Square fools 3-6% of the images
the gradient members missed), not the restorer.
"""

from configs.purify import restorer_cpu


def get_config():
  c = restorer_cpu.get_config()
  c.attack.names = ("autoattack",)
  c.attack.restarts = 1
  return c
