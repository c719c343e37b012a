"""Training metrics as JSON lines (`metrics.jsonl`): one object per model and logged step, or per summary."""

import json
from typing import Any

import numpy as np


class MetricsLog:
  """Appends rows to a JSON-lines file; with no path (a non-lead host) it writes nothing."""

  def __init__(self, path: str | None):
    self.path = path

  def write(self, rows: list[dict[str, Any]]) -> None:
    if self.path is None or not rows:
      return
    with open(self.path, "a") as f:
      for row in rows:
        f.write(json.dumps(row) + "\n")


def per_model(metrics: dict[str, np.ndarray], names: list[str]) -> list[tuple[str, dict[str, float]]]:
  """One {metric: value} row per model; the metrics of a stack carry a leading model axis."""
  if len(names) == 1 and all(np.ndim(v) == 0 for v in metrics.values()):
    return [(names[0], {k: float(v) for k, v in metrics.items()})]
  return [(n, {k: float(v[i]) for k, v in metrics.items()}) for i, n in enumerate(names)]
