"""The result of a restoration evaluation: `RestorationResult`, its json (+ npz for the figures' images) round
trip. restoration.json keeps the keys it has always had (users' scripts read them); restoration.npz holds the
images and maps the figures draw, so `evaluate.py --plot-only` redraws them without the models."""

import dataclasses
import json
import os
from typing import Any

import numpy as np

from vqdefense_jax.core.errors import VQDefenseError

JSON, NPZ = "restoration.json", "restoration.npz"


@dataclasses.dataclass
class RestorationResult:
  """Every number of a restoration evaluation (restore/experiment.py's docstring says what each holds), and
  `figures`: the images the figures draw ({'clean', 'mosaic', 'restored/<variant>', 'maps/<variant>',
  'classifier/<view>/x', 'classifier/<view>/cam'} -> array)."""
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

  def __post_init__(self):
    self.config = json.loads(json.dumps(self.config))  # as the json file gives it back (tuples become lists)

  def to_json(self) -> dict[str, Any]:
    """restoration.json's object: every field but the figures (and no `classifier_gradcam` without a classifier)."""
    out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "figures"}
    if out["classifier_gradcam"] is None:
      del out["classifier_gradcam"]
    return json.loads(json.dumps(out))

  def save(self, json_path: str, npz_path: str) -> None:
    with open(json_path, "w") as f:
      json.dump(self.to_json(), f, indent=2)
    np.savez_compressed(npz_path, **self.figures)

  @classmethod
  def load(cls, workdir: str) -> "RestorationResult":
    path = os.path.join(workdir, JSON)
    if not os.path.exists(path):
      raise VQDefenseError(f"no {JSON} in {workdir}: run evaluate.py with its --config first")
    try:
      with open(path) as f:
        fields = json.load(f)
      with np.load(os.path.join(workdir, NPZ)) as z:
        figures = {k: z[k] for k in z.files}
      return cls(**fields, figures=figures)
    except (OSError, ValueError, TypeError) as e:
      raise VQDefenseError(f"{path} or its {NPZ} is unreadable or from another version ({type(e).__name__}: "
                           f"{e}); run evaluate.py again") from e
