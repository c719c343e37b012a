"""Training metrics as JSON lines (`metrics.jsonl`): one object per model and logged step, or per summary."""

import json
import os
from typing import Any, Callable

import numpy as np


class MetricsLog:
  """Appends rows to a JSON-lines file; with no path (a non-lead host) it writes nothing."""

  def __init__(self, path: str | None):
    self.path = path

  def rewrite(self, keep: Callable[[dict[str, Any]], bool]) -> None:
    """Drop the rows for which `keep(row)` is false, and a line a killed write left unfinished (atomically)."""
    if self.path is None or not os.path.exists(self.path):
      return
    with open(self.path) as f:
      lines = f.read().splitlines()
    kept = [line for line in lines if _parses(line) and keep(json.loads(line))]
    if len(kept) != len(lines):
      with open(self.path + ".tmp", "w") as f:
        f.write("".join(line + "\n" for line in kept))
      os.replace(self.path + ".tmp", self.path)

  def write(self, rows: list[dict[str, Any]]) -> None:
    if self.path is None or not rows:
      return
    with open(self.path, "a") as f:
      for row in rows:
        f.write(json.dumps(row) + "\n")


def _parses(line: str) -> bool:
  try:
    return isinstance(json.loads(line), dict)
  except ValueError:
    return False


def per_model(metrics: dict[str, np.ndarray], names: list[str]) -> list[tuple[str, dict[str, float]]]:
  """One {metric: value} row per model; the metrics of a stack carry a leading model axis."""
  if len(names) == 1 and all(np.ndim(v) == 0 for v in metrics.values()):
    return [(names[0], {k: float(v) for k, v in metrics.items()})]
  return [(n, {k: float(v[i]) for k, v in metrics.items()}) for i, n in enumerate(names)]
