"""RESULTS.md's attacks against the paper authors' own models (imported weights; 2-core CPU: about 30 minutes).

  python evaluate.py --grid --config configs/purify/authors_attacks.py --workdir runs/authors
  ... --config.data.test_subset=0 --config.attack.epsilons=...   # all 10,000 images, the paper's ε (a GPU job)

configs/purify/authors.py (imports the weights if the workdir has none; shares its checkpoints) with the six
attacks of configs/purify/attacks.py: grey-box fgsm and pgd, white-box bpda_fgsm, bpda_pgd (identity
backward through the purifier) and ste_fgsm, ste_pgd (true gradient, straight-through quantiser); PGD 10
steps of 0.25·ε from a random start. Reduced for a CPU: the first 1,000 test images, ε = 0…0.28 step 0.04.

What to expect is REPRODUCTION.md's "White-box attacks on the authors' models".
"""

from configs.purify import authors


def get_config():
  c = authors.get_config()
  c.data.test_subset = 1000
  c.attack.names = ("fgsm", "pgd", "bpda_fgsm", "bpda_pgd", "ste_fgsm", "ste_pgd")
  c.attack.epsilons = tuple(round(0.04 * i, 2) for i in range(8))
  return c
