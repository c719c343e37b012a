"""Command-line handling shared by train.py and evaluate.py (absl flags + `config_flags`).

Usage: SCRIPT [--config FILE] [--workdir DIR] [--config.section.key=value ...] [switches]
A `VQDefenseError` becomes `error: <message>` on stderr and exit status 2.
"""

import dataclasses
import logging
import os
import signal
import sys
import threading
from typing import Callable

import ml_collections
from absl import flags

from vqdefense_jax.core import config as config_lib
from vqdefense_jax.core.errors import VQDefenseError

INTERRUPTED = "interrupted: re-run the same command to continue (training resumes from its last checkpoint)"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_CONFIG = os.path.join(ROOT, "configs", "purify", "quick.py")


@dataclasses.dataclass
class Args:
  config: ml_collections.ConfigDict | None  # None with `config_optional` when no --config was given
  workdir: str
  switches: dict[str, bool]


RETRAIN = {"retrain": "delete the checkpoints in the workdir that another config made, and train them again"}


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
  """0 on success; 2 with one `error:` line for a problem the user can fix; 130 on Ctrl-C.

  In a run of several processes (core/distributed.py), a process that fails tells the others and exits at
  once, so that none of them waits for it.
  """
  joined = lambda: "vqdefense_jax.core.distributed" in sys.modules and sys.modules[
      "vqdefense_jax.core.distributed"].joined()
  try:
    status, message = _run(main)
  except BaseException as e:  # a bug: its traceback belongs in a bug report
    if joined() and not isinstance(e, (KeyboardInterrupt, SystemExit)):
      sys.modules["vqdefense_jax.core.distributed"].fail_with_traceback(e)
    raise
  if status and joined():
    sys.modules["vqdefense_jax.core.distributed"].fail(message)
  return status


def _run(main: Callable[[], None]) -> tuple[int, str]:
  try:
    main()
  except VQDefenseError as e:
    return _error(str(e))
  except OSError as e:  # a full disk, a read-only or vanished directory: the machine's problem, not a bug
    where = f" {e.filename}" if e.filename else ""
    return _error(f"cannot read or write{where}: {e.strerror or e}")
  except MemoryError:
    return _error("out of memory; lower the batch sizes or data.image_size, or use data.train_subset")
  except KeyboardInterrupt:  # in-process callers; the commands use `exit_on_interrupt`
    print(INTERRUPTED, file=sys.stderr)
    return 130, "interrupted"
  except Exception as e:
    if "RESOURCE_EXHAUSTED" not in str(e):  # anything else is a bug: its traceback belongs in a bug report
      raise
    return _error("out of accelerator memory (RESOURCE_EXHAUSTED); lower the batch sizes, grid.chunk_size or "
                  "the codebook sizes")
  return 0, ""


def _error(message: str) -> tuple[int, str]:
  message = " ".join(message.split())
  print(f"error: {message}", file=sys.stderr)
  return 2, message


def exit_on_interrupt() -> None:
  """Make Ctrl-C end the process at once with its message and status 130, whatever the main thread is doing.

  A KeyboardInterrupt raised inside JAX or orbax (waiting on the device, writing a checkpoint) can leave
  them hung or crash the interpreter's teardown. So SIGINT is blocked in every thread and one thread waits
  for it, prints the message and exits without teardown. Nothing is lost: checkpoints are written
  atomically, and a metrics line cut in half is dropped on resume. Call it first, before JAX starts threads.
  """
  signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})

  def wait() -> None:
    signal.sigwait({signal.SIGINT})
    print(f"\n{INTERRUPTED}", file=sys.stderr, flush=True)
    os._exit(130)
  threading.Thread(target=wait, name="ctrl-c", daemon=True).start()
