"""AutoAttack against the paper authors' own models: the robustness numbers to quote (RESULTS.md, section 5).

  python evaluate.py --grid --config configs/purify/authors_autoattack.py --workdir runs/authors

configs/purify/authors.py's imported weights (it shares their checkpoints) on the first 500 test images at
ε = 0.1, 0.2, 0.3, and 0.5, where accuracy must fall to chance (the gradient-masking check), counted the final
way. One attack: `autoattack`, AutoAttack's standard L∞ suite (Croce & Hein 2020) with its standard settings:
APGD-CE, APGD-T and FAB-T (100 iterations each, 9 target classes) differentiating through the purifier with the
straight-through quantiser, then the gradient-free Square attack (5,000 queries), each member on the images
every earlier one left right. `table_autoattack.md` says what each member did; `table_masking.md` holds the
gradient-masking checks. `--config.attack.names=bpda_autoattack` runs the suite with BPDA gradients instead.

Expected (RESULTS.md section 5, measured 2026-12-07 on a 2-core CPU with --config.data.test_subset=100, 41 and
50 min in two runs, each sharing the cores with other work): robust accuracy at ε = 0.1 No-Split 0.57, 4-Split
0.64, undefended 0.46; 0.000 from ε = 0.2 on; Square fools 0.14 and 0.17 of the images the gradient members
missed at ε = 0.1, so table_masking.md flags both purifiers. All 500 images: about 3 hours on that CPU.
"""

from configs.purify import authors_robust


def get_config():
  c = authors_robust.get_config()
  c.attack.names = ("autoattack",)
  c.attack.restarts = 1
  return c
