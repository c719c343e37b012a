"""The paper authors' PyTorch weights, imported without PyTorch, compute what PyTorch computes with them.

`reference_outputs.npz` (../shared/authors, or $VQDEFENSE_AUTHORS_DIR) holds PyTorch's outputs of the authors'
classifier and VQ-VAEs on the first 32 MNIST test images; every imported model must match them within 1e-4
and predict the same classes.
"""

import json
import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest

import evaluate
from support import ROOT
from torch_files import write_pth
from vqdefense_jax.core import checkpoints
from vqdefense_jax.core import classifier as classifier_lib
from vqdefense_jax.core.data import preprocess
from vqdefense_jax.core.errors import VQDefenseError
from vqdefense_jax.purify import interop
from vqdefense_jax.purify.purifiers import PURIFIERS, Purifier, VQParams
from vqdefense_jax.purify.results import GridResult
from vqdefense_jax.purify.vqvae import VQVAE

AUTHORS = os.environ.get("VQDEFENSE_AUTHORS_DIR") or os.path.join(ROOT, "..", "shared", "authors")
needs_authors = pytest.mark.skipif(not os.path.isfile(os.path.join(AUTHORS, "reference_outputs.npz")),
                                   reason=f"the authors' weights are not at {AUTHORS} (set VQDEFENSE_AUTHORS_DIR)")
RAW = classifier_lib.Classifier(mean=0.0, std=1.0)  # the authors' classifier takes raw [0, 1] pixels
MODEL = VQVAE(k_max=768)
AUTHORS_CONFIG = os.path.join(ROOT, "configs", "purify", "authors.py")


@pytest.fixture(scope="module")
def ref():
  with np.load(os.path.join(AUTHORS, "reference_outputs.npz")) as z:
    return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def imported():
  w = interop.WeightsSpec("torch", AUTHORS)
  return (interop.classifier_params(w.state_dict("classifier"), RAW, 24),
          interop.vqvae_variables(w.state_dict("no_split"), MODEL, 768),
          interop.vqvae_variables(w.state_dict("split"), MODEL, 768))


@needs_authors
def test_our_preprocessing_is_torchvision_s(ref):
  np.testing.assert_allclose(preprocess(ref["images_uint8"], 24)[..., 0], ref["x_24"], atol=1e-6)


@pytest.mark.slow
@needs_authors
def test_imported_models_reproduce_pytorch(ref, imported):
  cls, no_split, split = imported
  f = classifier_lib.logits_fn(cls, RAW)
  x = jnp.asarray(ref["x_24"][..., None])
  logits = np.asarray(f(x))
  np.testing.assert_allclose(logits, ref["logits"], atol=1e-4)
  np.testing.assert_array_equal(logits.argmax(-1), ref["logits"].argmax(-1))
  out = {name: np.asarray(Purifier(name, MODEL, MODEL, 2)(VQParams(no_split, split), x)) for name in PURIFIERS}
  for name in ("no_split", "split", "vae_to_split", "split_to_vae"):
    np.testing.assert_allclose(out[name][..., 0], ref[f"recon_{name}"].reshape(32, 24, 24), atol=1e-4, err_msg=name)
  for name in ("no_split", "split"):
    got = np.asarray(f(jnp.asarray(out[name])))
    np.testing.assert_allclose(got, ref[f"logits_{name}"], atol=1e-4, err_msg=name)
    np.testing.assert_array_equal(got.argmax(-1), ref[f"logits_{name}"].argmax(-1))
  # Something is measured: purification changes the images, and the classifier is mostly right.
  assert np.abs(out["no_split"] - np.asarray(x)).max() > 0.1
  assert (logits.argmax(-1) == ref["labels"]).mean() > 0.9


# --- wrong files: one clear error each (synthetic state dicts, no authors' files needed) -------------------

def _classifier_state(image_size: int = 24) -> dict[str, np.ndarray]:
  side = (image_size - 4) // 2
  shapes = {"conv1.weight": (32, 1, 3, 3), "conv1.bias": (32,), "conv2.weight": (64, 32, 3, 3), "conv2.bias": (64,),
            "fc1.weight": (128, 64 * side * side), "fc1.bias": (128,), "fc2.weight": (10, 128), "fc2.bias": (10,)}
  rng = np.random.default_rng(0)
  return {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}


def _vqvae_state(k: int = 768, c: int = 128) -> dict[str, np.ndarray]:
  shapes = {"encoder.strided_conv_1.weight": (c, 1, 4, 4), "encoder.strided_conv_2.weight": (c, c, 4, 4),
            "encoder.residual_conv_1.weight": (c, c, 3, 3), "encoder.residual_conv_2.weight": (c, c, 1, 1),
            "decoder.residual_conv_1.weight": (c, c, 1, 1), "decoder.residual_conv_2.weight": (c, c, 3, 3),
            "decoder.strided_t_conv_1.weight": (c, c, 2, 2), "decoder.strided_t_conv_2.weight": (c, 1, 2, 2),
            "codebook.embedding": (k, c), "codebook.ema_weight": (k, c), "codebook.ema_count": (k,)}
  shapes.update({k.replace("weight", "bias"): (s[0] if "t_conv" not in k else s[1],)
                 for k, s in shapes.items() if k.endswith("weight") and "codebook" not in k})
  rng = np.random.default_rng(1)
  return {name: rng.normal(size=s).astype(np.float32) for name, s in shapes.items()}


def test_a_synthetic_state_dict_imports_with_its_values():
  sd = _classifier_state()
  params = interop.classifier_params(sd, RAW, 24)
  np.testing.assert_array_equal(params["Dense_1"]["kernel"], sd["fc2.weight"].T)
  np.testing.assert_array_equal(params["Conv_0"]["kernel"][:, :, 0, 5], sd["conv1.weight"][5, 0])
  v = interop.vqvae_variables(_vqvae_state(k=40), VQVAE(k_max=64), 40)
  assert int(v["codebook"]["size"]) == 40
  np.testing.assert_array_equal(v["codebook"]["embedding"][:40], _vqvae_state(k=40)["codebook.embedding"])
  assert not np.asarray(v["codebook"]["embedding"][40:]).any()  # padded rows, never chosen
  t = _vqvae_state(k=40)["decoder.strided_t_conv_1.weight"]
  np.testing.assert_array_equal(v["params"]["decoder"]["ConvTranspose_0"]["kernel"][0, 1, 3, 7], t[3, 7, 1, 0])


@pytest.mark.parametrize("case,message", [
    ("missing key", "missing fc2.bias"),
    ("unexpected key", "unexpected fc3.weight"),
    ("28x28 classifier", r"fc1.weight has shape \(128, 9216\).*needs \(6400, 128\)"),
    ("wrong layout", "quantises its latent in the 'nchw_chunks' layout"),
    ("codebook size", "its codebook has 768 codes but the config asks for 512"),
    ("narrower VQ-VAE", r"has shape \(64.*the config.s model needs \(128"),
    ("a VQ-VAE as classifier", "missing conv1.bias"),
])
def test_a_state_dict_that_does_not_fit_is_one_clear_error(case, message):
  sd_c, sd_v = _classifier_state(), _vqvae_state()
  run = {
      "missing key": lambda: interop.classifier_params({k: v for k, v in sd_c.items() if k != "fc2.bias"}, RAW, 24),
      "unexpected key": lambda: interop.classifier_params({**sd_c, "fc3.weight": sd_c["fc2.weight"]}, RAW, 24),
      "28x28 classifier": lambda: interop.classifier_params(_classifier_state(28), RAW, 24),
      "wrong layout": lambda: interop.vqvae_variables(sd_v, VQVAE(k_max=768, layout="per_position"), 768),
      "codebook size": lambda: interop.vqvae_variables(sd_v, MODEL, 512),
      "narrower VQ-VAE": lambda: interop.vqvae_variables(_vqvae_state(c=64), MODEL, 768),
      "a VQ-VAE as classifier": lambda: interop.classifier_params(sd_v, RAW, 24),
  }[case]
  with pytest.raises(VQDefenseError, match=message):
    run()


def test_a_known_file_with_another_sha256_is_refused_before_unpickling(tmp_path):
  clone = tmp_path / "clone"
  os.makedirs(clone / "classifier_model")
  write_pth(clone / "classifier_model" / "lenet_mnist_model.pth", _classifier_state())
  with pytest.raises(VQDefenseError, match="expected b30e7c62.*not the published file"):
    interop.WeightsSpec("torch", str(clone)).state_dict("classifier")
  # Checking off: the file's own digest is recorded, and it imports.
  w = interop.WeightsSpec("torch", str(clone), check_sha256=False)
  assert w.record("classifier")["sha256"] != interop.PUBLISHED["classifier"][1]
  interop.classifier_params(w.state_dict("classifier"), RAW, 24)
  with pytest.raises(VQDefenseError, match="must be a clone of"):
    interop.WeightsSpec("torch", str(tmp_path / "nowhere")).state_dict("split")


# --- the whole path: import, grid, both counting rules, per-image predictions ------------------------------

@pytest.fixture(scope="module")
def authors_run(tmp_path_factory, ref):
  """configs/purify/authors.py on the 32 reference images (as train and test set), at ε = 0 and 0.1."""
  base = tmp_path_factory.mktemp("authors")
  data = base / "data"
  os.makedirs(data)
  x, y = ref["images_uint8"], ref["labels"].astype(np.uint8)
  np.savez(data / "mnist_uint8.npz", train_images=x, train_labels=y, test_images=x, test_labels=y)
  argv = ["--config", AUTHORS_CONFIG, "--workdir", str(base / "run"), f"--config.weights.torch_dir={AUTHORS}",
          f"--config.data.cache_dir={data}", "--config.data.auto_fetch=False", "--config.attack.epsilons=0,0.1",
          "--config.eval.figure_examples=2"]
  return base / "run", argv


@needs_authors
@pytest.mark.slow
def test_import_then_grid_counts_like_pytorch(authors_run, ref, capsys):
  workdir, argv = authors_run
  assert interop.main(["import-torch"] + argv) == 0
  record = checkpoints.read_record(str(workdir / "checkpoints" / "classifier"))
  assert record["imported"] == dict(format="pytorch state dict", file="classifier_model/lenet_mnist_model.pth",
                                    sha256=interop.PUBLISHED["classifier"][1])
  assert evaluate.main(argv + ["--grid"]) == 0
  r = GridResult.load(str(workdir))
  assert r.counting == "clean_and_final" and r.predictions is not None
  y, p = ref["labels"], r.predictions
  ok_clean = ref["logits"].argmax(-1) == y
  np.testing.assert_array_equal(p.clean, ref["logits"].argmax(-1))
  np.testing.assert_array_equal(p.undefended[0, 0], ref["logits"].argmax(-1))        # ε = 0: nothing attacked
  for name in ("no_split", "split"):
    i = r.purifier.index(name)
    pred = ref[f"logits_{name}"].argmax(-1)
    np.testing.assert_array_equal(p.defended[0, 0, i, 0, 0], pred, err_msg=name)  # fgsm, clean, size 768, ε = 0
    assert r.accuracy[0, 0, i, 0, 0] == np.mean((pred == y) & ok_clean)            # the authors' rule
    assert p.accuracy("final")[1][0, 0, i, 0, 0] == np.mean(pred == y)             # today's rule, recomputed
  np.testing.assert_array_equal(p.accuracy("clean_and_final")[1], r.accuracy)
  np.testing.assert_array_equal(p.accuracy("clean_and_final")[0], r.undefended)
  assert "the paper authors' counting" in capsys.readouterr().out


@needs_authors
@pytest.mark.slow
def test_imported_checkpoints_are_bound_to_their_source(authors_run, capsys):
  workdir, argv = authors_run
  if not os.path.isdir(workdir / "checkpoints"):
    assert interop.main(["import-torch"] + argv) == 0
  before = json.loads((workdir / "checkpoints" / "classifier" / "record.json").read_text())
  assert interop.main(["import-torch"] + argv) == 0                                  # already there: kept
  assert json.loads((workdir / "checkpoints" / "classifier" / "record.json").read_text()) == before
  capsys.readouterr()
  assert evaluate.main(argv + ["--config.classifier.input_std=0.5"]) == 2
  assert "classifier.input_std: 1.0 -> 0.5" in capsys.readouterr().err
  # A training config asking for this workdir does not get the imported models.
  assert evaluate.main(argv + ["--config.weights.source=train", "--config.classifier.batch_size=8",
                               "--config.vqvae.batch_size=8"]) == 2
  assert "made by another config" in capsys.readouterr().err
  # A clone whose file differs from the published one is refused, before its pickle is read.
  clone = workdir.parent / "clone"
  shutil.copytree(AUTHORS, clone)
  os.chmod(clone / "classifier_model", 0o755)
  path = clone / "classifier_model" / "lenet_mnist_model.pth"
  os.chmod(path, 0o644)
  write_pth(path, _classifier_state())
  other = [a for a in argv if "torch_dir" not in a] + [f"--config.weights.torch_dir={clone}", "--workdir",
                                                      str(workdir.parent / "run2")]
  assert interop.main(["import-torch"] + other) == 2
  assert "not the published file" in capsys.readouterr().err


@pytest.mark.parametrize("override", ["vqvae.codebook_sizes=512,768", "vqvae.training=clean,adversarial",
                                      "vqvae.split_ks=3"])
def test_an_importing_config_asks_for_what_the_authors_published(override):
  from vqdefense_jax.core import config as config_lib  # pylint: disable=g-import-not-at-top
  from vqdefense_jax.purify import experiment  # pylint: disable=g-import-not-at-top
  experiment.Experiment.from_config(config_lib.load(AUTHORS_CONFIG))  # as it is: valid
  with pytest.raises(VQDefenseError, match="imports one No-Split and one Split VQ-VAE"):
    experiment.Experiment.from_config(config_lib.load(AUTHORS_CONFIG, (override,)))
