"""Command-line handling shared by train.py and evaluate.py (absl flags + `config_flags`).

Usage: SCRIPT [--config FILE] [--workdir DIR] [--config.section.key=value ...] [switches]
A `VQDefenseError` becomes `error: <message>` on stderr and exit status 2.
"""

import dataclasses
import logging
import os
import sys
from typing import Callable

import ml_collections
from absl import flags

from vqdefense_jax.core import config as config_lib
from vqdefense_jax.core.errors import VQDefenseError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_CONFIG = os.path.join(ROOT, "configs", "purify", "quick.py")


@dataclasses.dataclass
class Args:
  config: ml_collections.ConfigDict | None  # None with `config_optional` when no --config was given
  workdir: str
  switches: dict[str, bool]


def parse(argv: list[str], description: str, switches: dict[str, str] | None = None,
          config_optional: bool = False) -> Args:
  """--config, --workdir, --config.<key>=<value> overrides, and the boolean `switches` {name: help}.

  With `config_optional`, the config file is loaded only when --config is given.
  """
  fv = flags.FlagValues()
  given = any(a in ("--config", "-config") or a.startswith(("--config=", "--config.", "-config")) for a in argv)
  if given or not config_optional:
    argv = config_lib.with_config(argv, DEFAULT_CONFIG)
    config_lib.define(fv, argv)
  flags.DEFINE_string("workdir", None, "run directory (default: runs/<config name>)", flag_values=fv)
  for name, text in (switches or {}).items():
    flags.DEFINE_bool(name, False, text, flag_values=fv)
  if any(a in ("-h", "--help", "-help") for a in argv):
    print(description.strip() + "\n\nflags:\n" + fv.get_help(include_special_flags=False)
          + "\n  --config.<section>.<key>=<value>: override any config field, e.g. --config.vqvae.codebook_sizes=100,200")
    raise SystemExit(0)
  config_lib.parse(fv, argv)
  config = config_lib.loaded(fv) if "config" in fv else None
  path = fv["config"].config_filename if "config" in fv else DEFAULT_CONFIG
  workdir = fv["workdir"].value or os.path.join("runs", os.path.splitext(os.path.basename(path))[0])
  return Args(config, workdir, {name: fv[name].value for name in (switches or {})})


def setup_logging() -> None:
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                      datefmt="%H:%M:%S")
  import absl.logging
  absl.logging.set_verbosity(absl.logging.WARNING)  # orbax logs every save at INFO
  for noisy in ("absl", "jax._src.xla_bridge", "orbax"):
    logging.getLogger(noisy).setLevel(logging.WARNING)


def run(main: Callable[[], None]) -> int:
  try:
    main()
  except VQDefenseError as e:
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print("interrupted: re-run the same command to continue (training resumes from its last checkpoint)",
          file=sys.stderr)
    return 130
  return 0
