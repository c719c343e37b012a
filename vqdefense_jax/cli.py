"""Shared command-line handling for train.py and evaluate.py.

Usage: SCRIPT [--config FILE] [--workdir DIR] [--config.section.key=value ...]
A VQDefenseError becomes `error: <message>` on stderr and exit status 2.
"""

import argparse
import logging
import os
import sys
from typing import Callable

from vqdefense_jax.errors import VQDefenseError

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "quick.py")


def parse(argv: list[str], description: str, flags: dict[str, str] | None = None):
  """--config, --workdir, --config.<key>=<value> overrides, and the boolean `flags` {name: help}."""
  p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog="Any config field can be overridden: --config.vqvae.codebook_sizes=100,200")
  for name, text in (flags or {}).items():
    p.add_argument(f"--{name}", action="store_true", help=text)
  p.add_argument("--config", default=DEFAULT_CONFIG, help="experiment file with get_config() (default: quick)")
  p.add_argument("--workdir", default=None, help="run directory (default: runs/<config name>)")
  args, rest = p.parse_known_args(argv)
  overrides = []
  for item in rest:
    if not item.startswith("--config."):
      p.error(f"unrecognized argument {item!r}")
    overrides.append(item[len("--config."):])
  if args.workdir is None:
    args.workdir = os.path.join("runs", os.path.splitext(os.path.basename(args.config))[0])
  return args, tuple(overrides)


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
