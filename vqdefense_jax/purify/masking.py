"""Gradient-masking checks (Carlini et al. 2019, "On evaluating adversarial robustness"; Athalye et al. 2018) for
every defence of a grid that has an attack which sees the purifier.

A robustness number is suspect when one of the checks of `EXPLAIN` fails: a gradient-free attack does better
than the gradient attacks; accuracy does not fall to chance as ε grows; more steps still lower it. Each check
runs on every (training, purifier, codebook size) of the grid, the undefended classifier and the restorer; a
check whose attacks the grid did not run says so.
"""

import dataclasses
import math

import numpy as np

from vqdefense_jax.core import attacks as attacks_lib
from vqdefense_jax.purify.results import GridResult

TOLERANCE = 0.002   # AutoAttack's threshold for Square lowering the robust accuracy of the gradient attacks
CHECKS = ("gradient_free", "chance", "convergence")
EXPLAIN = {
    "gradient_free": "a gradient-free attack does better than the gradient attacks: Square inside AutoAttack "
                     "fooled images that APGD-CE, APGD-T and FAB-T all missed, or a `square` row is below every "
                     "gradient row that sees the purifier (threshold 0.2 percentage points, AutoAttack's own check "
                     "of Square)",
    "chance": "accuracy does not fall to chance at the check ε (attack.chance_epsilon, 0.5 by default, where any "
              "image can be turned into any other): the strongest attack that sees the purifier leaves more than "
              "1/K + 2 binomial standard errors (K classes)",
    "convergence": "more steps still lower it: an iterative attack's accuracy at the largest step count of "
                   "attack.convergence_steps is below that at the next largest by more than 0.2 percentage points "
                   "(restarts are not checked: the grid keeps only the worst case over them)",
}


@dataclasses.dataclass(frozen=True)
class Check:
  training: str          # '-' for the undefended classifier and the restorer
  purifier: str
  codebook_size: str
  check: str
  verdict: str           # 'ok', 'SUSPECT' or 'not run'
  evidence: str


def _attack(name: str) -> attacks_lib.Attack | None:
  return None if name not in attacks_lib.ATTACKS else attacks_lib.Attack(name)


def _sees_purifier(name: str) -> bool:
  a = _attack(name)
  return a is not None and a.white_box


def _gradient_free(r: GridResult, acc_AxE: np.ndarray, outcomes_SxExO: np.ndarray | None) -> tuple[str, str]:
  eps = r.epsilon
  found = []
  if outcomes_SxExO is not None and r.suite is not None:
    square = r.suite.outcome.index("square")
    for s, name in enumerate(r.suite.attack):
      for e, share in enumerate(outcomes_SxExO[s, :, square]):
        if share > TOLERANCE:
          found.append(f"in {name}, Square fooled {share:.3f} of the images that APGD-CE, APGD-T and FAB-T all "
                       f"missed (ε = {eps[e]:g})")
  rows = {n: acc_AxE[i] for i, n in enumerate(r.attack)}
  gradient = [n for n in rows if _sees_purifier(n) and _attack(n).uses_gradient and not _attack(n).suite]
  if "square" in rows and gradient:
    best_E = np.min([rows[n] for n in gradient], axis=0)
    for e in np.flatnonzero(rows["square"] < best_E - TOLERANCE):
      which = gradient[int(np.argmin([rows[n][e] for n in gradient]))]
      found.append(f"square {rows['square'][e]:.3f} < {best_E[e]:.3f} ({which}) at ε = {eps[e]:g}")
  if found:
    return "SUSPECT", "; ".join(found)
  ran_suite = outcomes_SxExO is not None and r.suite is not None
  if not ran_suite and not ("square" in rows and gradient):
    return "not run", "needs autoattack, or square beside a gradient attack that sees the purifier"
  return "ok", "Square found nothing the gradient attacks missed (beyond 0.002)"


def _chance(r: GridResult, acc_AxE: np.ndarray, num_classes: int) -> tuple[str, str]:
  rows = [i for i, n in enumerate(r.attack) if _sees_purifier(n) or n == "worst_case"]
  if not rows or not r.chance_epsilons:
    return "not run", "needs an attack that sees the purifier and attack.chance_epsilon > 0"
  chance = 1.0 / num_classes
  bound = chance + 2 * math.sqrt(chance * (1 - chance) / max(r.num_test_images, 1))
  out = []
  for c in r.chance_epsilons:
    e = int(np.argmin(np.abs(np.asarray(r.epsilon) - c)))
    i = rows[int(np.argmin(acc_AxE[rows, e]))]
    out.append((acc_AxE[i, e] > bound, f"{acc_AxE[i, e]:.3f} at ε = {r.epsilon[e]:g} under {r.attack[i]} "
                                        f"(chance {chance:.2f}, bound {bound:.3f})"))
  return ("SUSPECT" if any(bad for bad, _ in out) else "ok"), "; ".join(text for _, text in out)


def _convergence(r: GridResult, conv_SxAxE: np.ndarray | None) -> tuple[str, str]:
  c = r.convergence
  if c is None or conv_SxAxE is None or len(c.steps) < 2:
    return "not run", "needs attack.convergence_steps with two or more step counts"
  order = np.argsort(c.steps)
  last, before = order[-1], order[-2]
  found = []
  for a, name in enumerate(c.attack):
    drop_E = conv_SxAxE[before, a] - conv_SxAxE[last, a]
    for e in np.flatnonzero(drop_E > TOLERANCE):
      found.append(f"{name}: {conv_SxAxE[before, a, e]:.3f} at {c.steps[before]} steps → {conv_SxAxE[last, a, e]:.3f} "
                   f"at {c.steps[last]} (ε = {r.epsilon[e]:g})")
  if found:
    return "SUSPECT", "; ".join(found)
  return "ok", f"flat from {c.steps[before]} to {c.steps[last]} steps (within 0.002)"


def checks(r: GridResult, num_classes: int = 10) -> list[Check]:
  """Every check for every defence of `r`; empty when no attack of the grid sees the purifier."""
  if not any(_sees_purifier(n) for n in r.attack):
    return []
  out = []

  def add(training, purifier, size, acc_AxE, outcomes_SxExO, conv_SxAxE):
    for name, (verdict, evidence) in zip(CHECKS, (_gradient_free(r, acc_AxE, outcomes_SxExO),
                                                  _chance(r, acc_AxE, num_classes), _convergence(r, conv_SxAxE))):
      out.append(Check(training, purifier, size, name, verdict, evidence))

  u = r.suite
  add("-", "none", "-", r.undefended, None if u is None else u.undefended,
      None if r.convergence is None else r.convergence.undefended)
  for t, mode in enumerate(r.training):
    for p, purifier in enumerate(r.purifier):
      for m, size in enumerate(r.codebook_size):
        add(mode, purifier, str(size), r.accuracy[:, t, p, m], None if u is None else u.defended[:, t, p, m],
            None if r.convergence is None else r.convergence.accuracy[:, :, t, p, m])
  if r.restorer is not None:
    add("-", "restorer", "-", r.restorer.accuracy, None if u is None else u.restorer, None)
  return out


def suspects(found: list[Check]) -> list[Check]:
  return [c for c in found if c.verdict == "SUSPECT"]
