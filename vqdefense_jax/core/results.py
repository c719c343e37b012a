"""Typed results saved as a json file (every number, with the keys users' scripts read) and an npz file (the
arrays their figures draw), written with their tables and figures all at once, and read back for
`evaluate.py --plot-only`. Detection's and restoration's results are `SavedResult`s; purification's
`GridResult` (purify/results.py) predates this and keeps its own format."""

import dataclasses
import json
import os
from typing import Any, Callable, ClassVar

import numpy as np

from vqdefense_jax.core import files
from vqdefense_jax.core.errors import VQDefenseError


@dataclasses.dataclass
class SavedResult:
  """The behaviour of a result dataclass whose subclass declares its fields, then `config` and `figures`
  ({name: array}, not in the json). `JSON` and `NPZ` name its files; an `OPTIONAL` field that is None is left
  out of the json (absent, as before the result was typed)."""
  JSON: ClassVar[str]
  NPZ: ClassVar[str]
  OPTIONAL: ClassVar[tuple[str, ...]] = ()

  def __post_init__(self):
    self.config = json.loads(json.dumps(self.config))  # as the json file gives it back (tuples become lists)

  def to_json(self) -> dict[str, Any]:
    """The json file's object: every field but the figures, the unmeasured optional ones left out."""
    out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "figures"}
    for key in self.OPTIONAL:
      if out[key] is None:
        del out[key]
    return json.loads(json.dumps(out))

  def save(self, target: Callable[[str], str]) -> None:
    """Both files, each to `target(its name)`."""
    with open(target(self.JSON), "w") as f:
      json.dump(self.to_json(), f, indent=2)
    np.savez_compressed(target(self.NPZ), **self.figures)

  @classmethod
  def load(cls, workdir: str):
    path = os.path.join(workdir, cls.JSON)
    if not os.path.exists(path):
      raise VQDefenseError(f"no {cls.JSON} in {workdir}: run evaluate.py with its --config first")
    try:
      with open(path) as f:
        fields = json.load(f)
      with np.load(os.path.join(workdir, cls.NPZ)) as z:
        figures = {k: z[k] for k in z.files}
      return cls(**fields, figures=figures)
    except (OSError, ValueError, TypeError) as e:
      raise VQDefenseError(f"{path} or its {cls.NPZ} is unreadable or from another version ({type(e).__name__}: "
                           f"{e}); run evaluate.py again") from e


def write(result: SavedResult, workdir: str, render: Callable[[Any, Callable[[str], str]], None],
          save: bool = True) -> list[str]:
  """The result's files (with `save`) and `render(result, target)`'s tables and figures, all at once
  (files.staged); returns the paths written."""
  with files.staged(workdir) as target:
    if save:
      result.save(target)
    render(result, target)
  return [os.path.join(workdir, n) for n in target.names]
