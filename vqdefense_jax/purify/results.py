"""The grid's result: one typed object with named axes, the only thing between computing and rendering.

  accuracy[attack, training, purifier, codebook_size, epsilon]   defended accuracy
  undefended[attack, epsilon]                                     the classifier alone
  paired.accuracy[attack, training, pipeline, epsilon]            pipelines at the best pair (pairing 'best')
  split_k.accuracy[attack, k, codebook_size, epsilon]             the Split purifier with k×k tiles
  restorer.accuracy[attack, epsilon]                              the restorer as a purifier (restore/purifier.py)
  suite.defended[suite attack, training, purifier, codebook_size, epsilon, outcome]
                                                                  AutoAttack: the share of images each member
                                                                  fooled first, the robust share, wrong clean
  figure[epsilon, row, example, H, W, 1]                          clean, adversarial, each purifier's output
  predictions (eval.save_predictions): every test image's predicted class, from which either counting rule
  (`counting`: 'final' or the authors' 'clean_and_final') can be recomputed

`save` writes `grid.json` (everything, arrays as nested lists) and `grid.npz` (the arrays); `load` reads
them back into an equal object, so `evaluate.py --plot-only` renders exactly what the grid computed.
"""

import dataclasses
import json
import os
import zipfile
from typing import Any

import numpy as np

from vqdefense_jax.core import files
from vqdefense_jax.core.errors import VQDefenseError


@dataclasses.dataclass(frozen=True)
class Paired:
  """Pipelines with the best No-Split size and the best Split size (grid.pairing = 'best')."""
  no_split_size: int
  split_size: int
  purifier: tuple[str, ...]
  accuracy: np.ndarray                  # (A, T, P', E)


@dataclasses.dataclass(frozen=True)
class SplitK:
  """The Split purifier with k×k tiles for every k of vqvae.split_ks (clean-trained)."""
  k: tuple[int, ...]
  accuracy: np.ndarray                  # (A, K, M, E)


@dataclasses.dataclass(frozen=True)
class Convergence:
  """The iterative attacks again at every attack.convergence_steps: has the accuracy flattened?"""
  steps: tuple[int, ...]
  attack: tuple[str, ...]               # the iterative attacks (and worst_case when several)
  accuracy: np.ndarray                  # (S, A', T, P, M, E)
  undefended: np.ndarray                # (S, A', E)


@dataclasses.dataclass(frozen=True)
class Restorer:
  """The restorer (restore/purifier.py: a generator trained on (FGSM, clean) pairs) as one more purifier: one
  model, so no codebook size and no training mode."""
  accuracy: np.ndarray                  # (A, E)


@dataclasses.dataclass(frozen=True)
class Suite:
  """What AutoAttack's suite did to each test image, as shares of all test images: `outcome` is
  attacks.OUTCOMES (robust, wrong before any attack, then each member in the suite's order: the member that
  fooled the image first)."""
  attack: tuple[str, ...]               # the grid's suite attacks (autoattack, bpda_autoattack)
  outcome: tuple[str, ...]
  undefended: np.ndarray                # (S, E, O)
  defended: np.ndarray                  # (S, T, P, M, E, O)
  restorer: np.ndarray | None = None    # (S, E, O)


@dataclasses.dataclass(frozen=True)
class Predictions:
  """Every test image's predicted class in the main grid call (int8)."""
  labels: np.ndarray                    # (N,)
  clean: np.ndarray                     # (N,) the classifier on the clean image
  undefended: np.ndarray                # (A, E, N)
  defended: np.ndarray                  # (A, T, P, M, E, N)

  def accuracy(self, counting: str) -> tuple[np.ndarray, np.ndarray]:
    """(undefended (A, E), defended (A, T, P, M, E)) under a counting rule, over all N images.

    'final': the final prediction is right; 'clean_and_final': it is right and so is the clean one.
    """
    if counting not in ("final", "clean_and_final"):
      raise VQDefenseError(f"unknown counting rule {counting!r}; expected 'final' or 'clean_and_final'")
    ok = np.ones_like(self.labels, bool) if counting == "final" else self.clean == self.labels
    rate = lambda pred: np.mean((pred == self.labels) & ok, axis=-1)
    return rate(self.undefended), rate(self.defended)


@dataclasses.dataclass(frozen=True)
class Figure:
  """The reconstruction figure: rows clean, adversarial, each purifier; at the best (or first) sizes."""
  rows: tuple[str, ...]
  epsilons: tuple[float, ...]
  no_split_size: int
  split_size: int
  images: np.ndarray                    # (F, rows, n, H, W, 1)


@dataclasses.dataclass(frozen=True)
class GridResult:
  attack: tuple[str, ...]
  training: tuple[str, ...]
  purifier: tuple[str, ...]
  codebook_size: tuple[int, ...]
  epsilon: tuple[float, ...]
  accuracy: np.ndarray                  # (A, T, P, M, E)
  undefended: np.ndarray                # (A, E)
  threat_model: dict[str, str]          # attack -> one-line description
  pairing: str
  best_eps_max: float
  best_size: dict[str, int]             # 'no_split' / 'split' -> best codebook size
  timing: tuple[dict[str, Any], ...]
  paired: Paired | None = None
  split_k: SplitK | None = None
  figure: Figure | None = None
  num_test_images: int = 0
  classifier_clean_accuracy: float = float("nan")
  counting: str = "final"               # how `accuracy` and `undefended` count (Predictions.accuracy)
  predictions: Predictions | None = None
  convergence: Convergence | None = None
  restorer: Restorer | None = None
  suite: Suite | None = None
  chance_epsilons: tuple[float, ...] = ()   # ε added to check that accuracy falls to chance (gradient masking)
  run: dict[str, Any] = dataclasses.field(default_factory=dict)      # device, mesh, wall time, jax version
  config: dict[str, Any] = dataclasses.field(default_factory=dict)   # the resolved config

  def __post_init__(self):
    shape = tuple(len(a) for a in (self.attack, self.training, self.purifier, self.codebook_size, self.epsilon))
    if np.shape(self.accuracy) != shape or np.shape(self.undefended) != (shape[0], shape[-1]):
      raise VQDefenseError(f"grid result arrays {np.shape(self.accuracy)} and {np.shape(self.undefended)} do not "
                           f"match the axes {shape}")
    if self.restorer is not None and np.shape(self.restorer.accuracy) != (shape[0], shape[-1]):
      raise VQDefenseError(f"the restorer's accuracy {np.shape(self.restorer.accuracy)} does not match the attack "
                           f"and ε axes {(shape[0], shape[-1])}")
    u = self.suite
    if u is not None:
      s, o = len(u.attack), len(u.outcome)
      if (not set(u.attack) <= set(self.attack) or np.shape(u.undefended) != (s, shape[-1], o)
          or np.shape(u.defended) != (s,) + shape[1:] + (o,)
          or (u.restorer is not None and np.shape(u.restorer) != (s, shape[-1], o))):
        raise VQDefenseError(f"the suite outcomes {np.shape(u.defended)} do not match the axes {shape} and "
                             f"{s} suite attacks × {o} outcomes")
    p = self.predictions
    if p is not None:
      n = np.shape(p.labels)[0]
      if (np.shape(p.clean) != (n,) or np.shape(p.undefended) != (shape[0], shape[-1], n)
          or np.shape(p.defended) != shape + (n,)):
        raise VQDefenseError(f"the grid's per-image predictions {np.shape(p.defended)} do not match the axes {shape} "
                             f"and {n} labels")

  def slices(self) -> list[tuple[int, int, str, str]]:
    """(attack index, training index, attack, training) of every slice, the first attack's first."""
    return [(i, j, a, t) for i, a in enumerate(self.attack) for j, t in enumerate(self.training)]

  # --- files -------------------------------------------------------------------------------------------
  def to_json(self) -> dict[str, Any]:
    out = dict(axes=dict(attack=list(self.attack), training=list(self.training), purifier=list(self.purifier),
                         codebook_size=list(self.codebook_size), epsilon=list(self.epsilon)),
               accuracy=np.asarray(self.accuracy).tolist(), undefended=np.asarray(self.undefended).tolist(),
               threat_model=dict(self.threat_model), pairing=self.pairing, best_eps_max=self.best_eps_max,
               best_size=dict(self.best_size), timing=list(self.timing), num_test_images=self.num_test_images,
               classifier_clean_accuracy=self.classifier_clean_accuracy, counting=self.counting,
               predictions=self.predictions is not None, **self.run, config=self.config)
    if self.paired is not None:
      out["paired"] = dict(no_split_size=self.paired.no_split_size, split_size=self.paired.split_size,
                           purifier=list(self.paired.purifier), accuracy=self.paired.accuracy.tolist())
    if self.split_k is not None:
      out["split_k"] = dict(k=list(self.split_k.k), accuracy=self.split_k.accuracy.tolist())
    if self.convergence is not None:
      out["convergence"] = dict(steps=list(self.convergence.steps), attack=list(self.convergence.attack))
    if self.restorer is not None:
      out["restorer"] = dict(accuracy=np.asarray(self.restorer.accuracy).tolist())
    if self.suite is not None:
      u = self.suite
      out["suite"] = dict(attack=list(u.attack), outcome=list(u.outcome), undefended=u.undefended.tolist(),
                          defended=u.defended.tolist(),
                          restorer=None if u.restorer is None else np.asarray(u.restorer).tolist())
    if self.chance_epsilons:
      out["chance_epsilons"] = list(self.chance_epsilons)
    if self.figure is not None:
      f = self.figure
      out["figure"] = dict(rows=list(f.rows), epsilons=list(f.epsilons), no_split_size=f.no_split_size,
                           split_size=f.split_size)
    return out

  def arrays(self) -> dict[str, np.ndarray]:
    """What `grid.npz` holds."""
    a = dict(accuracy=np.asarray(self.accuracy, np.float64), undefended=np.asarray(self.undefended, np.float64),
             attack=np.asarray(self.attack, str), training=np.asarray(self.training, str),
             purifier=np.asarray(self.purifier, str), codebook_size=np.asarray(self.codebook_size, np.int64),
             epsilon=np.asarray(self.epsilon, np.float64))
    if self.paired is not None:
      a["paired_purifier"] = np.asarray(self.paired.purifier, str)
      a["paired_accuracy"] = np.asarray(self.paired.accuracy, np.float64)
    if self.split_k is not None:
      a["split_k"] = np.asarray(self.split_k.k, np.int64)
      a["split_k_accuracy"] = np.asarray(self.split_k.accuracy, np.float64)
    if self.restorer is not None:
      a["restorer_accuracy"] = np.asarray(self.restorer.accuracy, np.float64)
    if self.suite is not None:
      a["suite_undefended"] = np.asarray(self.suite.undefended, np.float64)
      a["suite_defended"] = np.asarray(self.suite.defended, np.float64)
      if self.suite.restorer is not None:
        a["suite_restorer"] = np.asarray(self.suite.restorer, np.float64)
    if self.figure is not None:
      a["figure"] = np.asarray(self.figure.images, np.float32)
    if self.convergence is not None:
      a["convergence_accuracy"] = np.asarray(self.convergence.accuracy, np.float64)
      a["convergence_undefended"] = np.asarray(self.convergence.undefended, np.float64)
    if self.predictions is not None:
      a.update({f"predictions_{f.name}": np.asarray(getattr(self.predictions, f.name), np.int8)
                for f in dataclasses.fields(Predictions)})
    return a

  @classmethod
  def from_files(cls, doc: dict[str, Any], arrays: dict[str, np.ndarray]) -> "GridResult":
    """The inverse of (`to_json`, `arrays`)."""
    axes = doc["axes"]
    paired = split_k = figure = convergence = None
    if "convergence" in doc:
      c = doc["convergence"]
      convergence = Convergence(tuple(int(k) for k in c["steps"]), tuple(c["attack"]),
                                arrays["convergence_accuracy"], arrays["convergence_undefended"])
    if "paired" in doc:
      p = doc["paired"]
      paired = Paired(int(p["no_split_size"]), int(p["split_size"]), tuple(p["purifier"]), arrays["paired_accuracy"])
    if "split_k" in doc:
      split_k = SplitK(tuple(int(k) for k in doc["split_k"]["k"]), arrays["split_k_accuracy"])
    if "figure" in doc and "figure" in arrays:
      f = doc["figure"]
      figure = Figure(tuple(f["rows"]), tuple(float(e) for e in f["epsilons"]), int(f["no_split_size"]),
                      int(f["split_size"]), arrays["figure"])
    restorer = Restorer(arrays["restorer_accuracy"]) if "restorer" in doc else None
    suite = None
    if "suite" in doc:
      u = doc["suite"]
      suite = Suite(tuple(u["attack"]), tuple(u["outcome"]), arrays["suite_undefended"], arrays["suite_defended"],
                    arrays.get("suite_restorer"))
    predictions = None
    if doc.get("predictions"):
      predictions = Predictions(**{f.name: arrays[f"predictions_{f.name}"] for f in dataclasses.fields(Predictions)})
    known = {"axes", "accuracy", "undefended", "threat_model", "pairing", "best_eps_max", "best_size", "timing",
             "paired", "split_k", "figure", "num_test_images", "classifier_clean_accuracy", "config", "counting",
             "predictions", "convergence", "restorer", "suite", "chance_epsilons"}
    return cls(attack=tuple(axes["attack"]), training=tuple(axes["training"]), purifier=tuple(axes["purifier"]),
               codebook_size=tuple(int(s) for s in axes["codebook_size"]),
               epsilon=tuple(float(e) for e in axes["epsilon"]), accuracy=arrays["accuracy"],
               undefended=arrays["undefended"], threat_model=dict(doc["threat_model"]), pairing=doc["pairing"],
               best_eps_max=float(doc["best_eps_max"]), best_size={k: int(v) for k, v in doc["best_size"].items()},
               timing=tuple(doc["timing"]), paired=paired, split_k=split_k, figure=figure,
               num_test_images=int(doc["num_test_images"]),
               classifier_clean_accuracy=float(doc["classifier_clean_accuracy"]),
               counting=doc.get("counting", "final"),  # grids saved before the option existed counted 'final'
               predictions=predictions, convergence=convergence, restorer=restorer, suite=suite,
               chance_epsilons=tuple(float(e) for e in doc.get("chance_epsilons", ())),
               run={k: v for k, v in doc.items() if k not in known}, config=doc.get("config", {}))

  def save(self, workdir: str) -> None:
    """`grid.json` and `grid.npz`, replaced together: a failure (a full disk) leaves the previous pair."""
    os.makedirs(workdir, exist_ok=True)
    with files.staged(workdir) as target:
      with open(target("grid.json"), "w") as f:
        json.dump(self.to_json(), f, indent=2)
      with open(target("grid.npz"), "wb") as f:  # a file object, so numpy does not append another ".npz"
        np.savez(f, **self.arrays())

  @classmethod
  def load(cls, workdir: str) -> "GridResult":
    """Read `grid.json` and `grid.npz`; a missing or unreadable file is a `VQDefenseError`."""
    paths = [os.path.join(workdir, n) for n in ("grid.json", "grid.npz")]
    for p in paths:
      if not os.path.exists(p):
        raise VQDefenseError(f"{p} not found: run `python evaluate.py --grid` first to create the grid results")
    try:
      with open(paths[0]) as f:
        doc = json.load(f)
      with np.load(paths[1]) as z:
        arrays = {k: z[k] for k in z.files}
      return cls.from_files(doc, arrays)
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as e:
      raise VQDefenseError(f"cannot read the grid results in {workdir} ({type(e).__name__}: {e}); run "
                           "`python evaluate.py --grid` again to recreate them") from e
