"""What the tests share besides fixtures: the synthetic MNIST cache, each system's tiny config, helpers.

A plain module (the fixtures are in conftest.py files), so a test module or a config file a test writes imports
it by its one name, `support`, wherever it sits.
"""

import dataclasses
import gc
import os
import shutil
import socket

import jax
import numpy as np

from vqdefense_jax.core import data as data_lib
from vqdefense_jax.detect import config as detect_config
from vqdefense_jax.purify import config as config_lib
from vqdefense_jax.purify import experiment
from vqdefense_jax.restore import config as restore_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# XLA:CPU maps every compiled executable into memory, and nothing frees it while a jit cache holds it. One
# process running the whole suite passed Linux's default limit of 65,530 maps per process (vm.max_map_count)
# and segfaulted inside the compiler (CI, 2026-12-07); within tests/core, one module alone passed 29,000.
MAP_BUDGET = 20_000


def memory_maps() -> int:
  """How many memory maps this process holds (0 where /proc is not there)."""
  try:
    with open("/proc/self/maps") as f:
      return sum(1 for _ in f)
  except OSError:
    return 0


def release_compiled_code():
  jax.clear_caches()
  gc.collect()


def free_port() -> int:
  """A TCP port on 127.0.0.1 that nothing listens on now (the coordinator of a multi-process test)."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


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


def write_mnist(directory) -> str:
  os.makedirs(directory, exist_ok=True)
  np.savez(os.path.join(directory, "mnist_uint8.npz"), **synthetic_mnist())
  return str(directory)


def tiny(data_dir: str):
  """A config small enough to train and evaluate in seconds on 2 CPU cores."""
  c = config_lib.base_config()
  c.data.cache_dir = str(data_dir)
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
  c.eval.figure_epsilons = (0.3,)
  c.eval.figure_examples = 3
  c.train.checkpoint_every = 4
  c.train.log_every = 4
  return c


def tiny_beyond(data_dir: str):
  """The tiny config with every extension of the grid on."""
  c = tiny(data_dir)
  c.vqvae.training = ("clean", "adversarial")
  c.vqvae.split_ks = (1, 2, 4)       # 16x16 images: tiles of 16, 8 and 4 pixels
  c.attack.names = ("fgsm", "pgd", "bpda_fgsm", "ste_pgd")
  c.attack.pgd_steps = 3
  return c


def write_tiny_config_file(path, data_dir: str, name: str = "tiny") -> str:
  """A tiny config as a config file, for the command-line tests."""
  path.write_text(f"import sys\nsys.path.insert(0, {os.path.dirname(__file__)!r})\nfrom support import {name}\n"
                  f"def get_config():\n  return {name}({str(data_dir)!r})\n")
  return str(path)


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
  c.gate.epsilons = (0.1, 0.3)
  c.eval.blur_sigmas = (1.0,)
  c.eval.jpeg_qualities = (50,)
  c.eval.attack_epsilons = (0.1, 0.3)
  # The classifier and VQ-VAEs of the fid, vqvae_* and attack sources: the purification tests' tiny ones.
  c.purify = detect_config.purify_section(tiny(data_dir))
  c.purify.vqvae.codebook_sizes = (6,)
  c.purify.attack.pgd_steps = 3
  c.purify.attack.names = ("fgsm", "ste_fgsm")
  c.purify.eval.purifiers = ("none", "no_split", "split")
  c.train.checkpoint_every = 4
  c.train.log_every = 4
  return c


def tiny_faces(data_dir: str):
  """The tiny config on TFDS's CelebA (RGB): the generator sources only, as configs/detect/faces.py."""
  c = tiny_detect(data_dir)
  c.data.source = "tfds"
  c.data.dataset = "celeb_a"
  c.data.train_subset = 40
  c.data.test_subset = 12
  c.eval.sources = ("alae_samples", "alae_reconstructions", "dcgan_samples")
  c.eval.fid = False
  c.gate.detector = "none"
  c.gate.grid = False
  return c


def tiny_restore(data_dir: str):
  """Small enough to train and evaluate in seconds: 16×16 images, width 4, one residual block, 4 steps."""
  c = restore_config.base_config()
  c.data.cache_dir = str(data_dir)
  c.data.auto_fetch = False
  c.data.image_size = 16
  c.generator.width = 4
  c.generator.blocks = 1
  c.discriminator.width = 4
  c.gan.batch_size = 16
  c.gan.steps = 4
  c.variants = ("cbam", "cbam_l1only")  # one network shape: initialisation and Grad-CAM compile once
  c.classifier.batch_size = 16
  c.classifier.epochs = 0
  c.classifier.steps = 4
  c.eval.figure_examples = 3
  c.eval.ssim_filter_size = 7
  c.train.checkpoint_every = 2
  c.train.log_every = 2
  return c


@dataclasses.dataclass
class Trained:
  """A trained workdir (do not change it: copy it first) and what was loaded from it."""
  config_file: str
  config: object
  exp: experiment.Experiment
  workdir: str
  cls: object
  stacks: dict
  ds: data_lib.Dataset

  def copy(self, dest) -> str:
    shutil.copytree(self.workdir, dest)
    return str(dest)


def train_tiny(tmp_path_factory, data_dir: str, name: str) -> Trained:
  import train  # the real command, so the CLI's training path is exercised too
  root = tmp_path_factory.mktemp(name)
  config_file = write_tiny_config_file(root / f"{name}.py", data_dir, name)
  workdir = str(root / "run")
  assert train.main(["--config", config_file, "--workdir", workdir]) == 0
  c = {"tiny": tiny, "tiny_beyond": tiny_beyond}[name](data_dir)
  exp = experiment.Experiment.from_config(c)
  ds = data_lib.load_dataset(exp.data)
  cls, stacks = experiment.load_trained(exp, workdir, ds)
  return Trained(config_file, c, exp, workdir, cls, stacks, ds)
