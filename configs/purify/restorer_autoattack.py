"""AutoAttack against Table 1's purifiers and the restorer, reduced for a 2-core CPU: RESULTS.md sections 1b
and 6b.

  python evaluate.py --grid --config configs/purify/restorer_autoattack.py --workdir runs/restorer_cpu

configs/purify/restorer_cpu.py's models (12,000 training images at 24×24, a 2-epoch classifier, clean-trained
32-channel VQ-VAEs with 128 codes, the restorer trained on FGSM → clean pairs; the first 500 test images; it
shares that config's checkpoints, and trains them in an empty workdir) under one attack: `autoattack`,
AutoAttack's standard L∞ suite with its standard settings (APGD-CE, APGD-T and FAB-T with the straight-through
gradient, 100 iterations, 9 targets; Square with 5,000 queries), at ε = 0.04, 0.08, 0.16, 0.28, and 0.5 (the
chance check).

Expected: see RESULTS.md sections 1b and 6b.
"""

from configs.purify import restorer_cpu


def get_config():
  c = restorer_cpu.get_config()
  c.attack.names = ("autoattack",)
  c.attack.restarts = 1
  return c
