"""configs/purify/attacks.py reduced for a 2-core CPU (about 15 minutes): the numbers of RESULTS.md, tables 1 and 2.

  python evaluate.py --grid --config configs/purify/attacks_cpu.py --workdir runs/attacks_cpu

configs/purify/quick.py (12,000 training images at 24×24, 32-channel VQ-VAEs with
D = 32, 1,200 steps of batch 64, a 2-epoch classifier, ε = 0…0.28 step 0.04)
with: one codebook size (128), the first 500 test images, all six attacks with
5 PGD steps of 0.25·ε (random start), and clean plus adversarial training
(ε per image from 0.2, 0.25, 0.3, 0.35).
"""

from configs.purify import quick


def get_config():
  c = quick.get_config()
  c.vqvae.codebook_sizes = (128,)
  c.data.test_subset = 500
  c.attack.names = ("fgsm", "pgd", "bpda_fgsm", "bpda_pgd", "ste_fgsm", "ste_pgd")
  c.attack.pgd_steps = 5
  c.vqvae.training = ("clean", "adversarial")
  return c
