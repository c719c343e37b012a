"""Files a run writes: the workdir, atomic JSON, and sets of outputs that appear all at once or not at all."""

import contextlib
import fcntl
import json
import os
import tempfile
from typing import Any, Iterator

from vqdefense_jax.core.errors import VQDefenseError


def prepare_workdir(workdir: str) -> str:
  """Create the workdir and prove it is writable before any work starts; returns its absolute path."""
  workdir = os.path.abspath(workdir)
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=workdir):
      pass
  except OSError as e:
    raise VQDefenseError(f"workdir {workdir} is not writable: {e.strerror or e}") from e
  return workdir


@contextlib.contextmanager
def locked(workdir: str, lead: bool = True) -> Iterator[str]:
  """Hold an exclusive lock on the (existing) workdir while a run writes to it; yields its absolute path.

  A second train.py or evaluate.py on the same workdir gets a one-line error instead of interleaving its
  files with the first's. The lock is the directory's own `flock` (no lock file to leave behind); the
  operating system drops it when the process ends, however it ends. Only the `lead` process of a
  multi-process run takes it.
  """
  workdir = os.path.abspath(workdir)
  if not lead:
    yield workdir
    return
  fd = os.open(workdir, os.O_RDONLY)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as e:
      raise VQDefenseError(f"workdir {workdir} is in use by another train.py or evaluate.py; wait for it to "
                           "finish or use another --workdir") from e
    yield workdir
  finally:
    os.close(fd)  # releases the lock


def write_json_atomic(path: str, obj: Any) -> None:
  """Readers see the old file or the whole new one, never a partial one."""
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2)
  os.replace(tmp, path)


class Staging:
  """`staging(name)` is the temporary path of output `name`; `names` lists the outputs in order."""

  def __init__(self, directory: str):
    self.directory = directory
    self.temporary: dict[str, str] = {}

  def __call__(self, name: str) -> str:
    return self.temporary.setdefault(name, os.path.join(self.directory, ".partial-" + name))

  @property
  def names(self) -> list[str]:
    return list(self.temporary)


@contextlib.contextmanager
def staged(directory: str) -> Iterator[Staging]:
  """Yields a `Staging`; on success every staged output moves into place at once.

  A failure anywhere removes the temporary files and leaves the previous outputs untouched.
  """
  staging = Staging(directory)
  try:
    yield staging
  except BaseException:
    for t in staging.temporary.values():
      if os.path.exists(t):
        os.remove(t)
    raise
  for name, t in staging.temporary.items():
    os.replace(t, os.path.join(directory, name))
