"""A workdir belongs to one system and one config, and every check runs before anything is written
(core/workdir.py), for train.py and evaluate.py alike."""

import json
import os

import jax.numpy as jnp
import pytest

import evaluate
import train
from support import write_tiny_config_file
from vqdefense_jax.core import checkpoints
from vqdefense_jax.core import workdir as workdir_lib
from vqdefense_jax.core.errors import VQDefenseError


def _checkpoint(directory, record, step: int) -> str:
  """A checkpoint directory holding `step`, made from `record`."""
  checkpoints.write_record(str(directory), record)
  with checkpoints.quiet():
    mngr = checkpoints.manager(str(directory))
    checkpoints.save(mngr, step, {"w": jnp.ones(3)})
    mngr.wait_until_finished()
    mngr.close()
  return str(directory)


def _snapshot(workdir) -> dict[str, bytes]:
  out = {}
  for root, _, names in os.walk(workdir):
    for n in names:
      with open(os.path.join(root, n), "rb") as f:
        out[os.path.relpath(os.path.join(root, n), workdir)] = f.read()
  return out


def _one_line_error(capsys) -> str:
  err = [line for line in capsys.readouterr().err.strip().splitlines() if "%|" not in line]
  assert len(err) == 1 and err[0].startswith("error: "), err
  return err[0]


def test_the_owner_is_the_system_of_config_json(tmp_path):
  assert workdir_lib.owner(str(tmp_path)) is None
  (tmp_path / "config.json").write_text(json.dumps({"seed": 0}))          # purification configs have no `system`
  assert workdir_lib.owner(str(tmp_path)) == "purify"
  (tmp_path / "config.json").write_text(json.dumps({"system": "detect"}))
  assert workdir_lib.owner(str(tmp_path)) == "detect"
  with pytest.raises(VQDefenseError, match="holds a detect run"):
    workdir_lib.claim(str(tmp_path), "restore")
  assert workdir_lib.claim(str(tmp_path), "detect") == str(tmp_path)


def test_claim_creates_a_workdir_only_when_asked(tmp_path):
  missing = tmp_path / "missing"
  with pytest.raises(VQDefenseError, match="does not exist.*--grid"):
    workdir_lib.claim(str(missing), "purify", create=False)
  assert not missing.exists()
  assert workdir_lib.claim(str(missing), "purify") == str(missing) and missing.is_dir()


def test_a_refused_run_writes_nothing_and_retrain_replaces_only_what_is_stale(tmp_path):
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "config.json").write_text(json.dumps({"system": "restore", "steps": 8}))
  same = _checkpoint(workdir / "checkpoints" / "same", {"width": 4}, 8)
  other = _checkpoint(workdir / "checkpoints" / "other", {"width": 4}, 8)
  longer = _checkpoint(workdir / "checkpoints" / "longer", {"width": 4}, 8)
  before = _snapshot(workdir)
  config = {"system": "restore", "steps": 4}
  for runs, match in (({same: ({"width": 4}, 8), other: ({"width": 5}, 8)}, "width: 4 -> 5"),
                      ({longer: ({"width": 4}, 4)}, "steps: 8 saved -> 4 asked")):
    with pytest.raises(VQDefenseError, match=match):
      workdir_lib.accept(str(workdir), config, runs, retrain=False)
    assert _snapshot(workdir) == before                     # not config.json, not metrics.jsonl, no checkpoint
  # A nested experiment's stale checkpoint refuses the outer run before it writes, too.
  with pytest.raises(VQDefenseError, match="width: 4 -> 6"):
    workdir_lib.accept(str(workdir), config, {same: ({"width": 4}, 8)}, retrain=False,
                       also=({other: ({"width": 6}, 8)},))
  assert _snapshot(workdir) == before
  # Another system's config refuses at once.
  with pytest.raises(VQDefenseError, match="holds a restore run"):
    workdir_lib.accept(str(workdir), {"system": "detect"}, {}, retrain=False)
  assert _snapshot(workdir) == before
  metrics = workdir_lib.accept(str(workdir), config, {same: ({"width": 4}, 8), other: ({"width": 5}, 8),
                                                      longer: ({"width": 4}, 4)}, retrain=True)
  assert os.path.isdir(same) and not os.path.exists(other) and not os.path.exists(longer)
  assert json.loads((workdir / "config.json").read_text()) == config
  assert metrics.path == str(workdir / "metrics.jsonl")


def test_train_into_another_systems_workdir_is_refused_before_anything_is_written(tmp_path, data_dir, capsys):
  config_file = write_tiny_config_file(tmp_path / "tiny.py", data_dir)
  workdir = tmp_path / "detect_run"
  workdir.mkdir()
  (workdir / "config.json").write_text(json.dumps({"system": "detect", "seed": 3}))
  (workdir / "metrics.jsonl").write_text('{"model": "alae", "step": 4, "loss": 1.0}\n')
  before = _snapshot(workdir)
  for main, extra in ((train.main, []), (evaluate.main, ["--grid"])):
    assert main(["--config", config_file, "--workdir", str(workdir)] + extra) == 2
    assert "holds a detect run" in _one_line_error(capsys)
    assert _snapshot(workdir) == before


def test_evaluate_without_grid_does_not_create_a_missing_workdir(tmp_path, data_dir, capsys):
  config_file = write_tiny_config_file(tmp_path / "tiny.py", data_dir)
  missing = tmp_path / "never_trained"
  assert evaluate.main(["--config", config_file, "--workdir", str(missing)]) == 2
  assert "does not exist" in _one_line_error(capsys) and not missing.exists()


def test_plot_only_without_a_workdir_or_results_is_a_one_line_error(tmp_path, capsys):
  assert evaluate.main(["--plot-only", "--workdir", str(tmp_path / "missing")]) == 2
  assert "does not exist" in _one_line_error(capsys) and not (tmp_path / "missing").exists()
  for system, results in (("detect", "detection.json"), ("restore", "restoration.json")):
    (tmp_path / "config.json").write_text(json.dumps({"system": system}))
    assert evaluate.main(["--plot-only", "--workdir", str(tmp_path)]) == 2
    message = _one_line_error(capsys)
    assert f"no {results}" in message and "--grid" not in message
