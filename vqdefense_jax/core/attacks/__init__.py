"""L∞ attacks over a whole ε vector: grey-box (the paper's), white-box (they see the purifier's gradient),
black-box (Square: the purifier's outputs), and AutoAttack's standard suite.

Every attack returns x_adv of shape (E, B, H, W, C) for the ε vector (E,), with ‖x_adv − x‖∞ ≤ ε and
x_adv ∈ [0, 1]. Names and threat models: spec.py. The modules:

  spec        Attack (the static description), AttackSpec (the `attack` config section), describe
  losses      cross-entropy, DLR, targeted DLR, margin
  gradient    FGSM (Goodfellow et al. 2015), PGD (Madry et al. 2018)
  autopgd     APGD and APGD-T (Croce & Hein 2020)
  fab         FAB-T (Croce & Hein 2020) and its L∞ projection
  square      Square (Andriushchenko et al. 2020), gradient-free
  autoattack  AutoAttack's standard L∞ suite: APGD-CE, APGD-T, FAB-T, Square, each on what the last left
  items       flat (image, ε) items: per-item keys, compaction to the items still to attack
  dispatch    run: one entry point, and the gradient each threat model follows (target_fn)
"""

from vqdefense_jax.core.attacks.autopgd import APGD_MOMENTUM, APGD_RHO, apgd, apgd_checkpoints
from vqdefense_jax.core.attacks.autoattack import OUTCOMES, outcome_counts
from vqdefense_jax.core.attacks.dispatch import ImagesFn, run, target_fn
from vqdefense_jax.core.attacks.gradient import fgsm, fgsm_pairs, fgsm_per_image, fgsm_sign, pgd
from vqdefense_jax.core.attacks.losses import (LOSSES, LogitsFn, dlr, dlr_targeted, loss_and_grad, loss_grad, margin,
                                               per_image_loss)
from vqdefense_jax.core.attacks.spec import (ATTACKS, GRADIENT_METHODS, ITEM_METHODS, RESTART_PICKS, SUITE, Attack,
                                             AttackSpec, describe)
