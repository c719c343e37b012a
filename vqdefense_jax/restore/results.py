"""The result of a restoration evaluation: `RestorationResult`, its json (+ npz for the figures' images) round
trip. restoration.json keeps the keys it has always had (users' scripts read them); restoration.npz holds the
images and maps the figures draw, so `evaluate.py --plot-only` redraws them without the models."""

import dataclasses
from typing import Any

import numpy as np

from vqdefense_jax.core.results import SavedResult


@dataclasses.dataclass
class RestorationResult(SavedResult):
  """Every number of a restoration evaluation (restore/experiment.py's docstring says what each holds), and
  `figures`: the images the figures draw ({'clean', 'mosaic', 'restored/<variant>', 'maps/<variant>',
  'classifier/<view>/x', 'classifier/<view>/cam', 'box': the mosaic box masks} -> array)."""
  JSON, NPZ, OPTIONAL = "restoration.json", "restoration.npz", ("classifier_gradcam",)  # (no classifier: absent)
  variants: list[str]
  num_images: int
  image_shape: list[int]
  mosaic: dict[str, Any]
  box_area: float
  psnr: dict[str, Any]
  ssim: dict[str, Any]
  gradcam_concentration: dict[str, float | None]
  gradcam_concentration_layers: dict[str, list[float | None]]
  gradcam_defined: dict[str, int]
  realness: dict[str, float]
  layers: list[str]
  accuracy: dict[str, Any] | None = None
  classifier_gradcam: dict[str, Any] | None = None  # with `accuracy` only
  config: dict[str, Any] = dataclasses.field(default_factory=dict)
  figures: dict[str, np.ndarray] = dataclasses.field(default_factory=dict, repr=False, compare=False)
