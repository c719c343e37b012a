"""Beyond the paper, full size (a GPU job): every attack on clean- and adversarially trained purifiers.

  python evaluate.py --grid --config configs/purify/attacks.py --workdir runs/attacks

The paper's protocol (configs/purify/paper.py) plus:
- attack.names: grey-box fgsm (the paper's) and pgd; white-box bpda_fgsm,
  bpda_pgd (backward pass as identity through the purifier) and ste_fgsm,
  ste_pgd (true gradient, straight-through quantiser); PGD: 10 steps of
  0.25·ε from a random start;
- vqvae.training = clean and adversarial: every VQ-VAE also trained
  Defense-VAE style on FGSM inputs (ε per image from 0.2, 0.25, 0.3, 0.35,
  against the trained classifier) with the clean image as target.
That is 4 × 10 VQ-VAEs to train, and a grid of 6 attacks × 2 trainings ×
4 purifiers × 10 sizes × 16 ε.

What to expect is what RESULTS.md measures: whether the purifiers survive an
attacker who sees them (white-box), and whether adversarial training helps.
"""

from configs.purify import paper


def get_config():
  c = paper.get_config()
  c.attack.names = ("fgsm", "pgd", "bpda_fgsm", "bpda_pgd", "ste_fgsm", "ste_pgd")
  c.vqvae.training = ("clean", "adversarial")
  return c
