"""The result of a detection evaluation: `DetectionResult`, its json (+ npz for the figures' images) round trip.
detection.json keeps the keys it has always had (users' scripts read them); detection.npz holds the images the
figures draw (the first real and fake images of every source, ALAE's interpolations and samples), so
`evaluate.py --plot-only` redraws them without the models."""

import dataclasses
from typing import Any

import numpy as np

from vqdefense_jax.core.results import SavedResult


@dataclasses.dataclass
class DetectionResult(SavedResult):
  """Every number of a detection evaluation, per detector variant and source of fakes (detect/experiment.py's
  docstring says what each holds), and `figures` ({'reals', 'fakes/<source>', 'interpolations', 'alae_grid'} ->
  images)."""
  JSON, NPZ, OPTIONAL = "detection.json", "detection.npz", ("fid", "fid_features", "gate")  # (when not measured)
  sources: list[str]
  variants: list[str]
  num_real: int
  num_fakes: int
  threshold: float
  ap: dict[str, dict[str, float]]
  accuracy: dict[str, dict[str, float]]
  real_accuracy: dict[str, float]
  fake_accuracy: dict[str, dict[str, float]]
  ap_blur: dict[str, dict[str, float]]
  ap_jpeg: dict[str, dict[str, float]]
  detector_params: int
  robustness_source: str
  fid: dict[str, float] | None = None
  fid_features: str | None = None
  gate: dict[str, Any] | None = None
  config: dict[str, Any] = dataclasses.field(default_factory=dict)
  figures: dict[str, np.ndarray] = dataclasses.field(default_factory=dict, repr=False, compare=False)
