"""Gradient-masking checks and AutoAttack's outcome table, on synthetic grid results (no training)."""

import numpy as np
import pytest

from vqdefense_jax.core import attacks
from vqdefense_jax.purify import masking, report
from vqdefense_jax.purify.results import Convergence, GridResult, Restorer, Suite

EPS = (0.0, 0.1, 0.5)
ATTACKS = ("ste_apgd", "square", "autoattack", "worst_case")


def results(acc_by_attack: dict, suite_shares=None, convergence=None, attack=ATTACKS, chance=(0.5,),
            n: int = 500) -> GridResult:
  """One purifier (split), one size, one training mode; accuracy rows by attack name (E,)."""
  rows = np.stack([np.asarray(acc_by_attack[a], float) for a in attack])
  suite = None
  if any(attacks.Attack(a).suite for a in attack if a != "worst_case"):
    shares = np.zeros((1, len(EPS), len(attacks.OUTCOMES)))
    shares[0, :, 0] = acc_by_attack["autoattack"]
    if suite_shares:
      for name, share_E in suite_shares.items():
        shares[0, :, attacks.OUTCOMES.index(name)] = share_E
    shares[0, :, 2] = 1 - shares[0].sum(-1) + shares[0, :, 2]          # APGD-CE fooled the rest
    suite = Suite(("autoattack",), attacks.OUTCOMES, shares.copy(), shares[:, None, None, None].copy())
  return GridResult(attack=attack, training=("clean",), purifier=("split",), codebook_size=(128,), epsilon=EPS,
                    accuracy=rows[:, None, None, None], undefended=np.zeros((len(attack), len(EPS))),
                    threat_model={a: a for a in attack}, pairing="same", best_eps_max=0.1, best_size={"split": 128},
                    timing=(), num_test_images=n, suite=suite, convergence=convergence, chance_epsilons=chance)


def verdicts(r: GridResult, purifier: str = "split") -> dict[str, str]:
  return {c.check: c.verdict for c in masking.checks(r) if c.purifier == purifier}


FLAT = dict(ste_apgd=[0.9, 0.6, 0.0], square=[0.9, 0.7, 0.0], autoattack=[0.9, 0.55, 0.0], worst_case=[0.9, 0.55, 0.0])


def test_an_honest_defence_passes_what_its_grid_can_check():
  assert verdicts(results(FLAT)) == {"gradient_free": "ok", "chance": "ok", "convergence": "not run"}


def test_square_inside_the_suite_fooling_what_the_gradients_missed_is_suspect():
  r = results(FLAT, suite_shares={"square": [0.0, 0.05, 0.0]})
  found = [c for c in masking.checks(r) if c.purifier == "split" and c.check == "gradient_free"]
  assert found[0].verdict == "SUSPECT" and "0.050" in found[0].evidence and "ε = 0.1" in found[0].evidence
  # AutoAttack's own threshold: 0.2 percentage points
  assert verdicts(results(FLAT, suite_shares={"square": [0.0, 0.002, 0.0]}))["gradient_free"] == "ok"


def test_a_square_row_below_every_gradient_row_is_suspect():
  acc = dict(FLAT, square=[0.9, 0.55, 0.0])
  r = results(acc, attack=("ste_apgd", "square", "worst_case"))
  assert verdicts(r)["gradient_free"] == "SUSPECT"
  assert verdicts(results(FLAT, attack=("ste_apgd", "square", "worst_case")))["gradient_free"] == "ok"
  no_square = results(dict(FLAT, bpda_pgd=[0.9, 0.6, 0.0]), attack=("ste_apgd", "bpda_pgd", "worst_case"))
  assert verdicts(no_square)["gradient_free"] == "not run"


def test_accuracy_above_chance_at_the_check_eps_is_suspect():
  acc = {a: [0.9, 0.6, 0.3] for a in ATTACKS}
  found = [c for c in masking.checks(results(acc)) if c.purifier == "split" and c.check == "chance"][0]
  assert found.verdict == "SUSPECT" and "0.300 at ε = 0.5" in found.evidence
  bound = 0.1 + 2 * np.sqrt(0.09 / 500)                                # chance + 2 standard errors, 500 images
  assert verdicts(results({a: [0.9, 0.6, bound - 1e-3] for a in ATTACKS}))["chance"] == "ok"
  assert verdicts(results({a: [0.9, 0.6, bound + 1e-3] for a in ATTACKS}))["chance"] == "SUSPECT"
  assert verdicts(results(acc, chance=()))["chance"] == "not run"


def test_an_attack_still_falling_at_its_last_step_count_is_suspect():
  falling = np.array([[[0.9, 0.5, 0.0]], [[0.9, 0.4, 0.0]], [[0.9, 0.3, 0.0]]])   # (steps, attack, E)
  conv = Convergence((10, 50, 100), ("ste_apgd",), falling[:, :, None, None, None], np.zeros((3, 1, 3)))
  found = [c for c in masking.checks(results(FLAT, convergence=conv)) if c.check == "convergence"
           and c.purifier == "split"][0]
  assert found.verdict == "SUSPECT" and "0.400 at 50 steps → 0.300 at 100" in found.evidence
  flat = falling.copy()
  flat[2] = flat[1]
  conv = Convergence((10, 50, 100), ("ste_apgd",), flat[:, :, None, None, None], np.zeros((3, 1, 3)))
  assert verdicts(results(FLAT, convergence=conv))["convergence"] == "ok"


def test_grey_box_grids_have_no_checks_and_every_defence_is_checked():
  grey = results({"fgsm": [0.9, 0.5, 0.1]}, attack=("fgsm",), chance=())
  assert masking.checks(grey) == []
  r = results(FLAT)
  r = GridResult(**{**r.__dict__, "restorer": Restorer(np.asarray([FLAT[a] for a in ATTACKS])),
                    "suite": Suite(r.suite.attack, r.suite.outcome, r.suite.undefended, r.suite.defended,
                                   r.suite.undefended)})
  assert {c.purifier for c in masking.checks(r)} == {"none", "split", "restorer"}


@pytest.mark.slow
def test_the_autoattack_table_names_the_member_that_did_most(tmp_path):
  r = results(FLAT, suite_shares={"clean": [0.1, 0.0, 0.0], "apgd_t": [0.0, 0.1, 0.0], "square": [0.0, 0.2, 0.0]})
  report.render(r, str(tmp_path))
  rows = [line for line in (tmp_path / "table_autoattack.md").read_text().splitlines()
          if line.startswith("| autoattack | split")]
  by_eps = {line.split(" | ")[3]: line.split(" | ")[4] for line in rows}
  assert by_eps == {"0": "none", "0.1": "Square", "0.5": "APGD-CE"}
  masking_md = (tmp_path / "table_masking.md").read_text()
  assert "| clean | split | 128 | gradient_free | SUSPECT |" in masking_md
  printed = report.format_grid(r)
  assert "gradient-masking checks" in printed and "SUSPECT split 128" in printed
  assert [line.split()[2:] for line in printed.splitlines() if line.startswith("autoattack split")] == [
      ["none", "Square", "APGD-CE"]]


def test_suite_and_chance_eps_round_trip_through_the_files(tmp_path):
  r = results(FLAT, suite_shares={"square": [0.0, 0.05, 0.0]})
  r.save(str(tmp_path))
  back = GridResult.load(str(tmp_path))
  assert back.chance_epsilons == (0.5,) and back.suite.attack == ("autoattack",)
  assert back.suite.outcome == attacks.OUTCOMES
  np.testing.assert_array_equal(back.suite.defended, r.suite.defended)
  np.testing.assert_array_equal(back.suite.undefended, r.suite.undefended)
  with pytest.raises(Exception, match="suite outcomes"):
    GridResult(**{**r.__dict__, "suite": Suite(("autoattack",), attacks.OUTCOMES, r.suite.undefended,
                                               r.suite.defended[:, :, :, :, :2])})
