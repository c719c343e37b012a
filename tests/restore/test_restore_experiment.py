"""The restoration system end to end on a tiny config: train_all trains the classifier and the restorers,
evaluate writes restoration.json, tables and figures; checkpoints are bound to their config; RGB faces from TFDS
(celeb_a under `tfds.testing.mock_data`) go through the same path; bad configs are one-line errors."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import evaluate
from support import ROOT, tiny_restore
from vqdefense_jax.core import config as config_lib
from vqdefense_jax.core import data as data_lib
from vqdefense_jax.core.errors import VQDefenseError
from vqdefense_jax.restore import experiment
from vqdefense_jax.restore.results import RestorationResult

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "restore")


def test_the_configs_build():
  for name, variants in (("quick", ("cbam", "nocbam", "cbam_l1only", "cbam_lambda100")),
                         ("paper", ("cbam", "nocbam", "cbam_l1only", "cbam_lambda100")),
                         ("faces", ("cbam", "nocbam"))):
    c = config_lib.load(os.path.join(CONFIGS, f"{name}.py"))
    exp = experiment.Experiment.from_config(c)
    assert exp.variant_names == variants and c.system == "restore"
  exp = experiment.Experiment.from_config(config_lib.load(os.path.join(CONFIGS, "quick.py")))
  assert [(v.cbam, v.adversarial, v.l1_weight) for v in exp.variants] == [
      (True, True, 1.0), (False, True, 1.0), (True, False, 1.0), (True, True, 100.0)]
  assert exp.nets.d_layers == 1  # 24×24: the deepest PatchGAN whose receptive field (16) fits


def test_bad_configs_are_one_line_errors(data_dir):
  cases = [("variants", ("cbam", "cbam"), "distinct"),
           ("variants", ("attention",), "expected 'cbam' or 'nocbam'"),
           ("variants", ("cbam_l1only_l1only",), "expected 'cbam' or 'nocbam'"),
           ("variants", ("cbam", "cbam_lambda1"), "are the same model"),
           ("variants", ("nocbam_l1only_lambda0",), "> 0 with l1only"),
           ("data.image_size", 18, "divisible by 4"),
           ("mosaic.block", 32, "larger than the image side"),
           ("mosaic.region", "face", "mosaic.region"),
           ("discriminator.layers", 3, "no patch"),
           ("eval.ssim_filter_size", 4, "odd"),
           ("gan.steps", 0, "gan.batch_size"),
           ("data.dataset", "celeb_a", "needs data.source='tfds'")]
  for key, value, message in cases:
    c = tiny_restore(data_dir)
    section, _, field = key.rpartition(".")
    (c[section] if section else c)[field] = value
    with pytest.raises(VQDefenseError, match=message):
      experiment.Experiment.from_config(c)
  c = tiny_restore(data_dir)
  c.data.source, c.data.dataset = "tfds", "celeb_a"
  with pytest.raises(VQDefenseError, match="eval.classifier=false"):
    experiment.Experiment.from_config(c)


def _check_result(r, variants, classifier: bool):
  assert r["variants"] == list(variants)
  for v in variants:
    for metric in ("psnr", "ssim"):
      for inp in ("mosaic", "restored"):
        assert set(r[metric][v][inp]) == {"box", "image"}
    assert r["psnr"][v]["mosaic"] == r["psnr"][variants[0]]["mosaic"]  # the input is the same for every variant
    for region in ("box", "image"):
      assert -1 <= r["ssim"][v]["restored"][region] <= 1 and r["psnr"][v]["restored"][region] > 0
    # A mosaic changes only the box: over the whole image it is closer to the clean image than over the box.
    assert r["psnr"][v]["mosaic"]["image"] > r["psnr"][v]["mosaic"]["box"]
    assert r["gradcam_concentration"][v] is not None and r["gradcam_concentration"][v] >= 0
    assert len(r["gradcam_concentration_layers"][v]) == len(r["layers"]) == 1
  if classifier:
    assert set(r["accuracy"]) == {"clean", "mosaic", "restored"} and set(r["accuracy"]["restored"]) == set(variants)
    acc = r["accuracy"]
    assert all(0 <= a <= 1 for a in [acc["clean"], acc["mosaic"], *acc["restored"].values()])
    assert set(r["classifier_gradcam"]["accuracy"]) == {"clean", "adversarial", "purified"}
  else:
    assert r["accuracy"] is None


@pytest.mark.slow
def test_train_all_then_evaluate_writes_restoration_json_and_checkpoints_are_bound(restore_config, tmp_path):
  c = restore_config
  exp = experiment.Experiment.from_config(c)
  workdir = str(tmp_path / "run")
  with pytest.raises(VQDefenseError, match="does not exist"):
    experiment.evaluate(exp, workdir, train_missing=False)
  os.makedirs(workdir)
  with pytest.raises(VQDefenseError, match="no checkpoint"):
    experiment.evaluate(exp, workdir, train_missing=False)
  params = experiment.train_all(exp, workdir)
  assert set(params) == {"classifier", "restorer_cbam", "restorer_cbam_l1only"}
  result = experiment.evaluate(exp, workdir, train_missing=False)
  r = result.to_json()
  with open(os.path.join(workdir, "restoration.json")) as f:
    assert json.load(f) == r
  _check_result(r, exp.variant_names, classifier=True)
  assert r["num_images"] == 40 and r["image_shape"] == [16, 16, 1]
  outputs = ("table_quality.md", "table_quality.csv", "table_gradcam.md", "table_accuracy.md", "fig_gradcam.png",
             "fig_gradcam_layers.png", "fig_gradcam_classifier.png", "fig_restorations.png", "fig_quality.png")
  for name in outputs + ("restoration.npz", "config.json", "metrics.jsonl", "checkpoints/restorer_cbam/record.json"):
    assert os.path.exists(os.path.join(workdir, name)), name
  assert experiment.format_result(result).count("restored") == 2
  # The json + npz round trip, and --plot-only from them alone: the same tables, every figure.
  loaded = RestorationResult.load(workdir)
  assert loaded == result and set(loaded.figures) == set(result.figures)
  assert set(result.figures) >= {"clean", "mosaic", "restored/cbam", "maps/cbam_l1only", "classifier/purified/cam"}
  for k, a in result.figures.items():
    np.testing.assert_array_equal(loaded.figures[k], np.asarray(a))
  only = tmp_path / "only"
  only.mkdir()
  for name in ("config.json", "restoration.json", "restoration.npz"):
    shutil.copy(os.path.join(workdir, name), only / name)
  assert evaluate.main(["--plot-only", "--workdir", str(only)]) == 0
  for name in outputs:
    assert (only / name).exists(), name
  assert (only / "table_quality.md").read_text() == open(os.path.join(workdir, "table_quality.md")).read()
  # Another λ: both restorers' checkpoints are refused, naming the field, before anything is written.
  c.gan.l1_weight = 10.0
  other = experiment.Experiment.from_config(c)
  with pytest.raises(VQDefenseError, match=r"restorer_cbam .*gan.l1_weight: 1.0 -> 10.0"):
    experiment.train_all(other, workdir)
  with pytest.raises(VQDefenseError, match="another config"):
    experiment.evaluate(other, workdir, train_missing=False)


@pytest.mark.slow
def test_rgb_faces_from_tfds_restore_end_to_end(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  c = tiny_restore("")
  c.data.source, c.data.dataset = "tfds", "celeb_a"
  c.data.test_subset = 4
  c.eval.classifier = False
  c.variants = ("cbam",)
  exp = experiment.Experiment.from_config(c)
  with tfds.testing.mock_data(num_examples=20):
    ds = data_lib.load_dataset(exp.data)
    assert ds.train_images.shape[1:] == (16, 16, 3)
    experiment.train_all(exp, str(tmp_path / "run"), ds=ds)
    r = experiment.evaluate(exp, str(tmp_path / "run"), train_missing=False).to_json()
  _check_result(r, ("cbam",), classifier=False)
  assert r["image_shape"] == [16, 16, 3] and r["num_images"] == 4
  assert np.isfinite(r["realness"]["cbam"])


@pytest.mark.slow
@pytest.mark.parametrize("key", ["gan", "classifier"])
def test_a_batch_larger_than_the_training_set_is_refused_before_anything_is_written(restore_config, tmp_path, key):
  c = restore_config
  c[key].batch_size = 1000
  exp = experiment.Experiment.from_config(c)
  with pytest.raises(VQDefenseError, match=f"larger than the 240 training examples: lower {key}.batch_size"):
    experiment.train_all(exp, str(tmp_path / "run"), retrain=True)
  assert os.listdir(tmp_path / "run") == []


@pytest.mark.slow
def test_a_truncated_checkpoint_is_one_error_line(data_dir, tmp_path):
  """orbax stops a restore at its first failed read; the reads still in flight must not print tracebacks after the
  error line (they did in about half the runs)."""
  workdir = str(tmp_path / "run")
  experiment.train_all(experiment.Experiment.from_config(tiny_restore(data_dir)), workdir)
  directory = os.path.join(workdir, "checkpoints", "restorer_cbam")
  latest = max((d for d in os.listdir(directory) if d.isdigit()), key=int)
  for root, _, names in os.walk(os.path.join(directory, latest)):
    for name in names if os.path.basename(root) == "d" else ():
      os.truncate(os.path.join(root, name), os.path.getsize(os.path.join(root, name)) // 2)
  config = tmp_path / "tiny_restore.py"
  config.write_text(f"from support import tiny_restore\ndef get_config():\n  return tiny_restore({data_dir!r})\n")
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(ROOT, "tests"), ROOT]))
  for _ in range(2):  # the tracebacks came in about half the runs
    out = subprocess.run([sys.executable, "train.py", "--config", str(config), "--workdir", workdir], cwd=ROOT,
                         env=env, capture_output=True, text=True)
    err = [line for line in out.stderr.strip().splitlines() if "%|" not in line]
    assert out.returncode == 2 and len(err) == 1 and "is corrupt" in err[0], out.stderr[-3000:]
