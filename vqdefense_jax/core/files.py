"""Files a run writes: the workdir, atomic JSON, and sets of outputs that appear all at once or not at all."""

import contextlib
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
