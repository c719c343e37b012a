"""The result of a detection evaluation: `DetectionResult`, its json (+ npz for the figures' images) round trip.
detection.json keeps the keys it has always had (users' scripts read them); detection.npz holds the images the
figures draw (the first real and fake images of every source, ALAE's interpolations and samples), so
`evaluate.py --plot-only` redraws them without the models."""

import dataclasses
import json
import os
from typing import Any

import numpy as np

from vqdefense_jax.core.errors import VQDefenseError

JSON, NPZ = "detection.json", "detection.npz"
OPTIONAL = ("fid", "fid_features", "gate")  # absent from detection.json when not measured


@dataclasses.dataclass
class DetectionResult:
  """Every number of a detection evaluation, per detector variant and source of fakes (detect/experiment.py's
  docstring says what each holds), and `figures` ({'reals', 'fakes/<source>', 'interpolations', 'alae_grid'} ->
  images)."""
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

  def __post_init__(self):
    self.config = json.loads(json.dumps(self.config))  # as the json file gives it back (tuples become lists)

  def to_json(self) -> dict[str, Any]:
    """detection.json's object: every field but the figures, the unmeasured optional ones left out."""
    out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "figures"}
    for key in OPTIONAL:
      if out[key] is None:
        del out[key]
    return json.loads(json.dumps(out))

  def save(self, json_path: str, npz_path: str) -> None:
    with open(json_path, "w") as f:
      json.dump(self.to_json(), f, indent=2)
    np.savez_compressed(npz_path, **self.figures)

  @classmethod
  def load(cls, workdir: str) -> "DetectionResult":
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
