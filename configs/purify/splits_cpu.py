"""configs/purify/splits.py reduced for a 2-core CPU (about 45 minutes): the numbers of RESULTS.md, table 3.

  python evaluate.py --grid --config configs/purify/splits_cpu.py --workdir runs/splits_cpu

configs/purify/quick.py (12,000 training images, 32-channel VQ-VAEs with D = 32,
1,200 steps of batch 64, a 2-epoch classifier, ε = 0…0.28 step 0.04) at
48×48 images, with k = 1, 2, 3, 4, 6 for the Split purifier, one codebook
size (128), the first 500 test images, and attacks fgsm, pgd, bpda_pgd and
ste_pgd (5 PGD steps of 0.25·ε, random start).
"""

from configs.purify import quick


def get_config():
  c = quick.get_config()
  c.data.image_size = 48
  c.vqvae.split_ks = (1, 2, 3, 4, 6)
  c.vqvae.codebook_sizes = (128,)
  c.data.test_subset = 500
  c.attack.names = ("fgsm", "pgd", "bpda_pgd", "ste_pgd")
  c.attack.pgd_steps = 5
  c.eval.purifiers = ("none", "no_split", "split")
  return c
