"""Shared fixtures: a tiny config on a small synthetic MNIST-shaped cache (no network)."""

import os

import jax
import numpy as np
import pytest

from vqdefense_jax import config as config_lib

jax.config.update("jax_numpy_rank_promotion", "raise")


def synthetic_mnist(n_train: int = 240, n_test: int = 40, seed: int = 0) -> dict[str, np.ndarray]:
  """Learnable stand-in for MNIST: class y is a bright 8×8 block at one of 10 places, plus noise."""
  rng = np.random.default_rng(seed)

  def make(n):
    y = rng.integers(0, 10, n)
    x = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
    for i, c in enumerate(y):
      r, col = divmod(int(c), 4)
      x[i, 2 + 8 * r:10 + 8 * r, 1 + 7 * col:7 + 7 * col] = 230
    return x, y.astype(np.uint8)

  (xtr, ytr), (xte, yte) = make(n_train), make(n_test)
  return dict(train_images=xtr, train_labels=ytr, test_images=xte, test_labels=yte)


@pytest.fixture
def data_dir(tmp_path):
  d = tmp_path / "data"
  d.mkdir()
  np.savez(d / "mnist_uint8.npz", **synthetic_mnist())
  return str(d)


def tiny(data_dir: str):
  """A config small enough to train and evaluate in seconds on 2 CPU cores."""
  c = config_lib.base_config()
  c.data.cache_dir = data_dir
  c.data.auto_fetch = False
  c.data.image_size = 16
  c.classifier.batch_size = 16
  c.classifier.epochs = 0
  c.classifier.steps = 30
  c.vqvae.channels = 8
  c.vqvae.embedding_dim = 8
  c.vqvae.codebook_sizes = (4, 6)
  c.vqvae.k_max = 8
  c.vqvae.decay = 0.9
  c.vqvae.batch_size = 16
  c.vqvae.epochs = 0
  c.vqvae.steps = 12
  c.attack.epsilons = (0.0, 0.1, 0.3)
  c.eval.batch_size = 32            # 40 test images: the last batch is padded
  c.eval.figure_epsilons = (0.3,)
  c.eval.figure_examples = 3
  c.train.checkpoint_every = 4
  c.train.log_every = 4
  config_lib.validate(c)
  return c


@pytest.fixture
def tiny_config(data_dir):
  return tiny(data_dir)


def write_tiny_config_file(path, data_dir: str) -> str:
  """The tiny config as a config file, for the command-line tests."""
  path.write_text(f"import sys\nsys.path.insert(0, {os.path.dirname(__file__)!r})\nfrom conftest import tiny\n"
                  f"def get_config():\n  return tiny({str(data_dir)!r})\n")
  return str(path)


@pytest.fixture
def tiny_config_file(tmp_path, data_dir):
  return write_tiny_config_file(tmp_path / "tiny.py", data_dir)
