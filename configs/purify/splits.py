"""Beyond the paper, full size (a GPU job): which k×k split works best, at small and at large ε?

  python evaluate.py --grid --config configs/purify/splits.py --workdir runs/splits

The paper's protocol (configs/purify/paper.py) at 48×48 images (MNIST resized
28→48) so that k = 1, 2, 3, 4 and 6 all give tiles that round-trip through the
VQ-VAE (48, 24, 16, 12 and 8 pixels; at 24×24 only k = 1, 2, 3, 6 do). The
Split purifier runs with every k (k = 1 is the No-Split VQ-VAE, k = 2 the
paper's 4-Split), under grey-box fgsm and pgd and white-box bpda_pgd and
ste_pgd. Output: table_split_k.* and fig_split_k.png (k × ε per attack).
"""

from configs.purify import paper


def get_config():
  c = paper.get_config()
  c.data.image_size = 48
  c.vqvae.split_ks = (1, 2, 3, 4, 6)
  c.attack.names = ("fgsm", "pgd", "bpda_pgd", "ste_pgd")
  c.eval.purifiers = ("none", "no_split", "split")
  return c
