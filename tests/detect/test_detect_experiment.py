"""The detection system end to end on a tiny config: train.py trains ALAE and the detectors, evaluate.py writes
AP and accuracy per variant and source; checkpoints are bound to their config."""

import json
import os
import shutil

import chex
import numpy as np
import pytest

import evaluate
import train
from support import tiny_detect
from vqdefense_jax.core import classifier
from vqdefense_jax.core import config as config_lib
from vqdefense_jax.core import data as data_lib
from vqdefense_jax.core.errors import VQDefenseError
from vqdefense_jax.detect import experiment
from vqdefense_jax.detect.results import DetectionResult


def test_the_configs_build():
  for name in ("quick", "paper"):
    c = config_lib.load(os.path.join(os.path.dirname(__file__), "..", "..", "configs", "detect", f"{name}.py"))
    exp = experiment.Experiment.from_config(c)
    assert exp.variants == ("none", "p0.1", "p0.5", "adversarial")


@pytest.mark.slow
def test_train_then_evaluate_writes_the_detection_table(config_file, tmp_path, capsys):
  workdir = str(tmp_path / "run")
  assert train.main(["--config", config_file, "--workdir", workdir]) == 0
  assert evaluate.main(["--config", config_file, "--workdir", workdir]) == 0
  out = capsys.readouterr().out
  assert "alae_samples" in out and "pgd_eps0.3" in out
  with open(os.path.join(workdir, "detection.json")) as f:
    r = json.load(f)
  assert r["variants"] == ["none", "p0.5", "adversarial"]
  assert r["sources"] == ["alae_samples", "alae_reconstructions", "dcgan_samples", "vqvae_no_split", "vqvae_split",
                          "fgsm_eps0.1", "fgsm_eps0.3", "pgd_eps0.1", "pgd_eps0.3"]
  assert set(r["fid"]) == set(r["sources"]) | {"real_train"} and all(v >= 0 for v in r["fid"].values())
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
               "fakes.png", "interpolations.png", "alae_samples.png", "config.json", "metrics.jsonl",
               "purify/config.json", "purify/checkpoints/classifier/record.json", "purify/grid.json",
               "purify/table_detect_no_split.md", "purify/table_detect_split__ste_fgsm.md"):
    assert os.path.exists(os.path.join(workdir, name)), name
  with open(os.path.join(workdir, "purify", "grid.json")) as f:
    g = json.load(f)
  assert g["axes"]["purifier"] == ["no_split", "split", "detect_no_split", "detect_split"]
  assert r["gate"]["detector"] == "adversarial"
  # The json + npz round trip, and --plot-only from them alone: the same tables, every figure.
  loaded = DetectionResult.load(workdir)
  assert loaded.to_json() == r and set(loaded.figures) == {"reals", "interpolations", "alae_grid"} | {
      f"fakes/{s}" for s in r["sources"]}
  only = tmp_path / "only"
  only.mkdir()
  for name in ("config.json", "detection.json", "detection.npz"):
    shutil.copy(os.path.join(workdir, name), only / name)
  assert evaluate.main(["--plot-only", "--workdir", str(only)]) == 0
  for name in ("table_detection.md", "table_robustness.md", "fig_detection_ap.png", "fakes.png", "interpolations.png",
               "alae_samples.png"):
    assert (only / name).exists(), name
  assert (only / "table_detection.md").read_text() == open(os.path.join(workdir, "table_detection.md")).read()
  # Another ALAE learning rate: the checkpoints are refused, naming the field, and nothing is retrained.
  assert train.main(["--config", config_file, "--workdir", workdir, "--config.alae.learning_rate=0.01"]) == 2
  assert "alae.learning_rate: 0.002 -> 0.01" in capsys.readouterr().err
  # The purification models are bound to their config too (the field is named as the purification record has it).
  assert train.main(["--config", config_file, "--workdir", workdir, "--config.purify.vqvae.learning_rate=0.001"]) == 2
  assert "vqvae.learning_rate: 0.0002 -> 0.001" in capsys.readouterr().err
  # A detector's record holds the ALAE it was trained against: --retrain replaces both.
  assert train.main(["--config", config_file, "--workdir", workdir, "--config.alae.learning_rate=0.01",
                     "--retrain"]) == 0


@pytest.mark.slow
def test_the_gate_detector_trains_on_fgsm_examples_within_their_epsilon(data_dir):
  exp = experiment.Experiment.from_config(tiny_detect(data_dir))
  ds = data_lib.load_dataset(exp.data)
  cls_params = classifier.init_params(0, exp.data.image_size, exp.purify.classifier_model)
  x, y = experiment.adversarial_training_set(exp, ds, cls_params)
  n = len(ds.train_images)
  chex.assert_shape(x, (2 * n,) + ds.train_images.shape[1:])
  np.testing.assert_array_equal(y, np.repeat([0, 1], n))
  np.testing.assert_array_equal(x[:n], experiment.quantize(ds.train_images))  # real images, as 8-bit files
  step_N = np.abs(x[n:] - x[:n]).max(axis=(1, 2, 3))
  eps = np.asarray(exp.gate.epsilons)
  # Each attacked image moved by one of gate.epsilons (to 8-bit precision), and both values were drawn.
  nearest = np.abs(step_N[:, None] - eps[None]).min(axis=1)
  assert nearest.max() <= 1 / 255 + 1e-6
  assert len({float(eps[np.argmin(np.abs(s - eps))]) for s in step_N}) == len(eps)
  # The same (seed, config) gives the same set.
  x2, _ = experiment.adversarial_training_set(exp, ds, cls_params)
  np.testing.assert_array_equal(x, x2)


@pytest.mark.slow
@pytest.mark.parametrize("override,message", [
    ("--config.alae.batch_size=1000", "larger than the 240 training examples: lower alae.batch_size"),
    ("--config.detector.batch_size=1000",
     "larger than the 480 real and fake training images: lower detector.batch_size"),
    ("--config.detector.num_fakes=100000", "detector.num_fakes=100000 is more than 10x the 240 training images"),
    ("--config.eval.num_fakes=100000", "eval.num_fakes=100000 is more than the 40 test images")])
def test_what_the_data_cannot_serve_is_refused_before_anything_is_trained(config_file, tmp_path, capsys, override,
                                                                         message):
  """Known only once the data is loaded, but still before the purification models or ALAE train (and, with
  --retrain, before anything is deleted)."""
  workdir = tmp_path / "run"
  assert train.main(["--config", config_file, "--workdir", str(workdir), override, "--retrain"]) == 2
  err = [line for line in capsys.readouterr().err.strip().splitlines() if "%|" not in line]
  assert len(err) == 1 and message in err[0], err
  assert not [p for p in workdir.rglob("*")], "nothing is written"

def test_a_gate_detector_must_exist_and_faces_cannot_use_the_classifier(data_dir):
  c = tiny_detect(data_dir)
  c.gate.detector = "p0.3"
  with pytest.raises(VQDefenseError, match="gate.detector must be one of none, p0.5, adversarial"):
    experiment.Experiment.from_config(c)
  c = tiny_detect(data_dir)
  c.eval.sources = ("alae_samples", "fgsm")
  c.eval.attack_epsilons = ()
  with pytest.raises(VQDefenseError, match="eval.attack_epsilons"):
    experiment.Experiment.from_config(c)
  c = tiny_detect(data_dir)
  c.eval.sources = ("alae_samples", "dcgan_samples")
  c.eval.fid = False
  c.gate.detector = "none"
  c.gate.grid = False
  assert experiment.Experiment.from_config(c).purify is None  # nothing needs the classifier: none is trained


@pytest.mark.slow
def test_rgb_faces_from_tfds_end_to_end(tmp_path, data_dir, capsys):
  tfds = pytest.importorskip("tensorflow_datasets")
  path = tmp_path / "tiny_faces.py"
  path.write_text(f"import sys\nsys.path.insert(0, {os.path.dirname(os.path.dirname(__file__))!r})\n"
                  "from support import tiny_faces\n"
                  f"def get_config():\n  return tiny_faces({str(data_dir)!r})\n")
  workdir = str(tmp_path / "faces")
  with tfds.testing.mock_data(num_examples=60):
    assert train.main(["--config", str(path), "--workdir", workdir]) == 0
    assert evaluate.main(["--config", str(path), "--workdir", workdir]) == 0
    # Asking for a classifier-based source on faces is one clear error.
    assert evaluate.main(["--config", str(path), "--workdir", workdir, "--config.eval.fid=true"]) == 2
  assert "has no class labels for the classifier: set eval.fid=false" in capsys.readouterr().err
  with open(os.path.join(workdir, "detection.json")) as f:
    r = json.load(f)
  assert r["sources"] == ["alae_samples", "alae_reconstructions", "dcgan_samples"] and "fid" not in r
  assert r["num_real"] == 12 and not os.path.exists(os.path.join(workdir, "purify"))
  for name in ("fakes.png", "interpolations.png", "alae_samples.png", "table_detection.md"):
    assert os.path.exists(os.path.join(workdir, name)), name


def test_the_faces_config_builds():
  c = config_lib.load(os.path.join(os.path.dirname(__file__), "..", "..", "configs", "detect", "faces.py"))
  exp = experiment.Experiment.from_config(c)
  assert exp.purify is None and exp.data.dataset == "celeb_a" and exp.variants == ("none", "p0.1", "p0.5")


def test_the_detection_system_runs_on_several_processes_with_its_purification_models(data_dir):
  c = tiny_detect(data_dir)
  c.parallel.distributed = True
  exp = experiment.Experiment.from_config(c)
  assert exp.parallel.distributed and exp.purify.parallel.distributed  # one section: systems.start joins once
