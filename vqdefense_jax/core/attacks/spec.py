"""Which attack, against what, with what settings: `Attack` (hashable, a static argument of the jitted grid) and
`AttackSpec` (the checked `attack` config section).

An attack's name says what the attacker differentiates, then the method:

  <method>        grey-box: the classifier f only (the paper's threat model), then the purifier p is applied
  bpda_<method>   white-box BPDA (Athalye et al. 2018): f(p(x)) forward, p taken as the identity backward
  ste_<method>    white-box: the true gradient of f(p(x)), through encoder, decoder and the quantiser's
                  straight-through estimator
  square          black-box: Square (Andriushchenko et al. 2020) queries f(p(x)) itself, the real quantiser
                  included, and uses no gradient
  autoattack      AutoAttack's standard L∞ suite (Croce & Hein 2020) against f(p(x)): APGD-CE, APGD-T and
                  FAB-T with the straight-through gradient, then Square; bpda_autoattack: with BPDA gradients

for the methods fgsm, pgd, apgd (APGD-CE or APGD-DLR), apgdt (APGD-T) and fabt (FAB-T).
"""

import dataclasses

from vqdefense_jax.core.attacks.losses import LOSSES
from vqdefense_jax.core.errors import VQDefenseError

GRADIENT_METHODS = ("fgsm", "pgd", "apgd", "apgdt", "fabt")
ATTACKS = (GRADIENT_METHODS + tuple(f"{g}_{m}" for g in ("bpda", "ste") for m in GRADIENT_METHODS)
           + ("square", "autoattack", "bpda_autoattack"))
RESTART_PICKS = ("defended", "classifier")
SUITE = ("apgd_ce", "apgd_t", "fab_t", "square")  # AutoAttack's standard L∞ version, in its order
ITEM_METHODS = ("apgdt", "fabt", "square", "autoattack")  # attack flat (image, ε) items, compacted (items.py)


@dataclasses.dataclass(frozen=True)
class Attack:
  """Hashable (a static argument of the jitted grid)."""
  name: str = "fgsm"
  steps: int = 10              # iterations of PGD / APGD / APGD-T / FAB-T (per target), or of the suite's members
  step_size: float = 0.25      # PGD step, as a fraction of ε (APGD sets its own)
  random_start: bool = True    # PGD / APGD start uniformly in the ε-ball
  loss: str = "ce"             # what PGD and APGD maximise: cross-entropy or difference of logits ratio
  restarts: int = 1            # random starts; the grid counts an image correct only if it survives all
  restart_pick: str = "defended"  # the grid's worst case over restarts: judged on the defended prediction, or
                                  # (grey-box attacks) the restart with the highest loss of the classifier alone
  queries: int = 5000          # Square: queries of the model per image, the initial one included
  p_init: float = 0.8          # Square: the share of the image its first squares cover
  targets: int = 9             # APGD-T, FAB-T: target classes, the largest other logits of the clean image in turn
  batch: int = 0               # apgdt, fabt, square, autoattack: (image, ε) items per batch (0: the grid's default,
                               # grid.default_item_batch: on CPU 64 per gradient step, 128 per Square query)

  def __post_init__(self):
    if self.name not in ATTACKS:
      raise VQDefenseError(f"unknown attack {self.name!r}; expected one of {', '.join(ATTACKS)}")
    if self.iterative and self.uses_gradient and (self.steps < 1 or self.step_size <= 0):
      raise VQDefenseError(f"attack {self.name}: steps must be >= 1 and step_size > 0")
    if self.loss not in LOSSES or self.restart_pick not in RESTART_PICKS:
      raise VQDefenseError(f"attack loss must be one of {LOSSES} and restart_pick one of {RESTART_PICKS}, got "
                           f"{self.loss!r} and {self.restart_pick!r}")
    if not 1 <= self.restarts <= 1000 or (self.restarts > 1 and not self.restartable):
      raise VQDefenseError(f"attack {self.name}: restarts must be in 1..1000, and above 1 only for pgd, apgd, apgdt "
                           f"(with a random start) and square, got {self.restarts}")
    if not 0 <= self.batch <= 1 << 20:
      raise VQDefenseError(f"attack {self.name}: batch must be in 0..{1 << 20} (0: the grid's default), got "
                           f"{self.batch}")
    if not 1 <= self.queries <= 1_000_000 or not 0.0 < self.p_init <= 1.0 or not 1 <= self.targets <= 1000:
      raise VQDefenseError(f"attack {self.name}: queries must be in 1..1000000, p_init in (0, 1] and targets >= 1, "
                           f"got {self.queries}, {self.p_init} and {self.targets}")

  @property
  def gradient(self) -> str:
    """'classifier' (grey-box), 'bpda', 'ste', or 'none' (Square: queries only)."""
    if self.name == "square":
      return "none"
    if self.name == "autoattack":
      return "ste"
    return self.name.split("_")[0] if "_" in self.name else "classifier"

  @property
  def method(self) -> str:
    """'fgsm', 'pgd', 'apgd', 'apgdt', 'fabt', 'square' or 'autoattack'."""
    return self.name.split("_")[-1]

  @property
  def white_box(self) -> bool:
    """True when the attack sees the purifier (through its gradient or its outputs)."""
    return self.gradient != "classifier"

  @property
  def uses_gradient(self) -> bool:
    return self.gradient != "none"

  @property
  def iterative(self) -> bool:
    return self.method != "fgsm"

  @property
  def suite(self) -> bool:
    return self.method == "autoattack"

  @property
  def restartable(self) -> bool:
    """Random restarts draw new starts (pgd, apgd, apgdt) or new squares (square)."""
    return self.method == "square" or (self.method in ("pgd", "apgd", "apgdt") and self.random_start)

  @property
  def threat_model(self) -> str:
    if self.gradient == "none":
      return "black-box"
    return "white-box" if self.white_box else "grey-box"

  def grey_box(self) -> "Attack":
    """The same attack against the classifier alone (what it is against an undefended classifier)."""
    return dataclasses.replace(self, name=self.method)


def _suite_members(attack: Attack) -> str:
  s = attack.steps
  return (f"APGD-CE ({s} steps), APGD-T ({s} steps × {attack.targets} targets), FAB-T ({s} steps × "
          f"{attack.targets} targets), Square ({attack.queries} queries, p_init {attack.p_init:g})")


def describe(attack: Attack) -> str:
  """One line for tables and logs: threat model, what is differentiated, steps."""
  what = {"classifier": "the attacker differentiates the classifier only, not the purifier",
          "bpda": "BPDA: forward through the purifier, backward as if it were the identity",
          "ste": "the true gradient through the purifier (quantiser: straight-through estimator)",
          "none": "no gradient: it queries the defended model (purifier and classifier, the real quantiser)"}[
              attack.gradient]
  start = "random start" if attack.random_start else "no random start"
  targets = f"the {attack.targets} largest other logits of the clean image in turn"
  how = {"fgsm": "one FGSM step",
         "pgd": f"PGD, {attack.steps} steps of {attack.step_size:g}·ε, {start}",
         "apgd": f"APGD, {max(attack.steps, 2)} steps, step 2ε halved at checkpoints, momentum 0.75, {start}",
         "apgdt": f"APGD-T, {max(attack.steps, 2)} steps per target, targeted DLR loss, {targets}, random start",
         "fabt": f"FAB-T, {attack.steps} steps per target, {targets}, no random start, counted only within ε",
         "square": f"Square, {attack.queries} queries per image, squares over {attack.p_init:g} of the image at "
                   "first, margin loss, each image stops when fooled",
         "autoattack": f"AutoAttack's standard L∞ suite in its order: {_suite_members(attack)}; each member runs "
                       "only on the images every earlier one left correct; per-image worst case"}[attack.method]
  if attack.method in ("pgd", "apgd"):
    how += f", {attack.loss.upper()} loss"
  if attack.iterative and not attack.suite:
    how += f", {attack.restarts} restart{'s' if attack.restarts > 1 else ''}"
    if attack.restarts > 1:
      how += (": an image counts as robust only if it survives every restart" + (
          " (judged on the defended prediction, so the restart is picked with the purifier's output)"
          if attack.restart_pick == "defended" and not attack.white_box else
          " (the restart picked by the classifier's own loss)" if attack.restart_pick == "classifier"
          and not attack.white_box else ""))
  if attack.suite:
    what = ("gradients: " + ("BPDA (forward through the purifier, backward as the identity)" if attack.gradient ==
                             "bpda" else "the true gradient through the purifier (straight-through quantiser)")
            + "; Square queries the defended model without a gradient")
  return f"{attack.threat_model} {attack.name} ({how}): {what}"


@dataclasses.dataclass(frozen=True)
class AttackSpec:
  """The `attack` config section, checked: the attacks of the grid's attack axis, the ε vector, the step
  counts of the convergence check, and the ε that must bring every defence to chance (`chance_epsilons`,
  added to the ε vector when the grid has an attack that sees the purifier)."""
  attacks: tuple[Attack, ...]
  epsilons: tuple[float, ...]
  convergence_steps: tuple[int, ...] = ()
  chance_epsilons: tuple[float, ...] = ()

  @classmethod
  def from_config(cls, section) -> "AttackSpec":
    names, eps = tuple(section.names), tuple(section.epsilons)
    if not eps or any(isinstance(e, bool) or not isinstance(e, (int, float)) or not 0.0 <= float(e) <= 1.0
                      for e in eps):
      raise VQDefenseError(f"attack.epsilons must be a non-empty list of values in [0, 1], got {eps}")
    if not names or any(n not in ATTACKS for n in names) or len(set(names)) != len(names):
      raise VQDefenseError(f"attack.names must be distinct names from {', '.join(ATTACKS)}, got {names}")
    if not 1 <= section.pgd_steps <= 10_000 or not 0 < section.pgd_step_size <= 1:
      raise VQDefenseError(f"attack.pgd_steps must be in 1..10000 and attack.pgd_step_size in (0, 1], got "
                           f"{section.pgd_steps} and {section.pgd_step_size}")
    if not 1 <= section.suite_steps <= 10_000:
      raise VQDefenseError(f"attack.suite_steps must be in 1..10000, got {section.suite_steps}")
    steps = tuple(section.convergence_steps)
    if (any(isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 10_000 for k in steps)
        or len(set(steps)) != len(steps)):
      raise VQDefenseError(f"attack.convergence_steps must be distinct step counts in 1..10000, got {steps}")
    if steps and not any(Attack(n).iterative and Attack(n).uses_gradient and not Attack(n).suite for n in names):
      raise VQDefenseError("attack.convergence_steps needs an iterative attack (pgd, apgd, ...) in attack.names")
    chance = float(section.chance_epsilon)
    if not 0.0 <= chance <= 1.0 or isinstance(section.chance_epsilon, bool):
      raise VQDefenseError(f"attack.chance_epsilon must be in [0, 1] (0: no check), got {section.chance_epsilon}")

    def make(n: str) -> Attack:
      kind = Attack(n)
      restarts = section.restarts if kind.restartable and (section.pgd_random_start or kind.method == "square") \
          and not kind.suite else 1
      return Attack(n, section.suite_steps if kind.suite else section.pgd_steps, section.pgd_step_size,
                    section.pgd_random_start or kind.suite, section.loss, restarts, section.restart_pick,
                    section.queries, section.p_init, section.targets, section.batch)

    attacks = tuple(make(n) for n in names)
    checks = (chance,) if chance > 0 and any(a.white_box for a in attacks) else ()
    extra = tuple(e for e in checks if not any(abs(e - float(v)) < 1e-9 for v in eps))
    return cls(attacks, tuple(float(e) for e in eps) + extra, steps, checks)
