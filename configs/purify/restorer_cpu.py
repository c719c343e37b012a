"""The restorer (the attention-GAN paper's CBAM GAN) as one more purifier beside the VQ-VAEs, under RESULTS.md §1b's converged
attacks, reduced for a 2-core CPU (about an hour from an empty workdir; 76 min measured on a shared machine):
RESULTS.md §6b.

  python evaluate.py --grid --config configs/purify/restorer_cpu.py --workdir runs/restorer_cpu

configs/purify/attacks_cpu.py (12,000 training images at 24×24, a 2-epoch classifier, 32-channel VQ-VAEs with
one codebook size, 128, the first 500 test images) with §1b's attacks: pgd, bpda_pgd, ste_pgd and ste_apgd,
50 steps, the worst of 3 random starts, ε = 0.04, 0.08, 0.16, 0.28, clean-trained VQ-VAEs. The restorer
(restore/purifier.py) is trained on FGSM → clean pairs (ε per image from 0.2, 0.25, 0.3, 0.35): a 16-wide
generator with 3 CBAM residual blocks, a 16-wide PatchGAN, λ = 1, 2,000 steps of batch 32.

Expected (measured 2026-12-06, RESULTS.md §6b): classifier 0.984; the No-Split, 4-Split and undefended rows
equal §1b's; the restorer keeps 0.960 / 0.952 / 0.904 / 0.728 under grey-box PGD at ε = 0.04 / 0.08 / 0.16 /
0.28, and 0.864 / 0.578 / 0.034 / 0.000 in the worst case over the four attacks (4-Split: 0.862 / 0.710 /
0.280 / 0.002).
"""

from configs.purify import attacks_cpu
from vqdefense_jax.restore import purifier as _restorer  # noqa: F401  registers 'restorer' and its config section


def get_config():
  c = attacks_cpu.get_config()
  c.vqvae.training = ("clean",)
  c.attack.names = ("pgd", "bpda_pgd", "ste_pgd", "ste_apgd")
  c.attack.pgd_steps = 50
  c.attack.restarts = 3
  c.attack.epsilons = (0.04, 0.08, 0.16, 0.28)
  c.grid.best_eps_max = 0.08
  c.eval.purifiers = ("none", "no_split", "split", "restorer")
  c.restorer.width = 16
  c.restorer.blocks = 3
  c.restorer.d_width = 16
  c.restorer.batch_size = 32
  c.restorer.steps = 2000
  return c
