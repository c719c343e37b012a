"""The detection system end to end on a tiny config: train.py trains ALAE and the detectors, evaluate.py writes
AP and accuracy per variant and source; checkpoints are bound to their config."""

import json
import os

import numpy as np
import pytest

import evaluate
import train
from vqdefense_jax.core import config as config_lib
from vqdefense_jax.detect import config as detect_config
from vqdefense_jax.detect import experiment


def tiny_detect(data_dir: str):
  c = detect_config.base_config()
  c.data.cache_dir = str(data_dir)
  c.data.auto_fetch = False
  c.data.image_size = 16
  c.alae.latent = 8
  c.alae.mapping_layers = 2
  c.alae.hidden = 32
  c.alae.batch_size = 16
  c.alae.steps = 8
  c.dcgan.latent = 8
  c.dcgan.width = 4
  c.dcgan.batch_size = 16
  c.dcgan.steps = 8
  c.detector.widths = (4, 8)
  c.detector.batch_size = 16
  c.detector.steps = 8
  c.detector.augment_p = (0.0, 0.5)
  c.eval.blur_sigmas = (1.0,)
  c.eval.jpeg_qualities = (50,)
  c.train.checkpoint_every = 4
  c.train.log_every = 4
  return c


@pytest.fixture
def config_file(tmp_path, data_dir):
  path = tmp_path / "tiny_detect.py"
  path.write_text(f"import sys\nsys.path.insert(0, {os.path.dirname(__file__)!r})\n"
                  "from test_detect_experiment import tiny_detect\n"
                  f"def get_config():\n  return tiny_detect({str(data_dir)!r})\n")
  return str(path)


def test_the_configs_build():
  for name in ("quick", "paper"):
    c = config_lib.load(os.path.join(os.path.dirname(__file__), "..", "..", "configs", "detect", f"{name}.py"))
    exp = experiment.Experiment.from_config(c)
    assert exp.variants == ("none", "p0.1", "p0.5")


@pytest.mark.slow
def test_train_then_evaluate_writes_the_detection_table(config_file, tmp_path, capsys):
  workdir = str(tmp_path / "run")
  assert train.main(["--config", config_file, "--workdir", workdir]) == 0
  assert evaluate.main(["--config", config_file, "--workdir", workdir]) == 0
  out = capsys.readouterr().out
  assert "AP alae_samples" in out
  with open(os.path.join(workdir, "detection.json")) as f:
    r = json.load(f)
  assert r["variants"] == ["none", "p0.5"]
  assert r["sources"] == ["alae_samples", "alae_reconstructions", "dcgan_samples"]
  for v in r["variants"]:
    assert 0 <= r["real_accuracy"][v] <= 1
    for s in r["sources"]:
      assert 0 <= r["ap"][v][s] <= 1 and 0 <= r["accuracy"][v][s] <= 1 and 0 <= r["fake_accuracy"][v][s] <= 1
      # accuracy is the image-weighted mean of the real and the fake accuracy
      n_real, n_fake = r["num_real"], r["num_fakes"]
      np.testing.assert_allclose(r["accuracy"][v][s], (n_real * r["real_accuracy"][v] + n_fake *
                                                       r["fake_accuracy"][v][s]) / (n_real + n_fake))
    assert set(r["ap_blur"][v]) == {"1"} and set(r["ap_jpeg"][v]) == {"50"}
  for name in ("table_detection.csv", "table_detection.md", "table_robustness.md", "fig_detection_ap.png",
               "fakes.png", "config.json", "metrics.jsonl"):
    assert os.path.exists(os.path.join(workdir, name)), name
  # Another ALAE learning rate: the checkpoints are refused, naming the field, and nothing is retrained.
  assert train.main(["--config", config_file, "--workdir", workdir, "--config.alae.learning_rate=0.01"]) == 2
  assert "alae.learning_rate: 0.002 -> 0.01" in capsys.readouterr().err
  # A detector's record holds the ALAE it was trained against: --retrain replaces both.
  assert train.main(["--config", config_file, "--workdir", workdir, "--config.alae.learning_rate=0.01",
                     "--retrain"]) == 0
