"""A detection experiment from config to table: train ALAE, train one detector per augmentation p, evaluate.

Workdir layout (as in purification, every checkpoint directory holds the record.json of what made it):
  checkpoints/alae/                 the generator of the training fakes
  checkpoints/dcgan/                a second generator, for fakes the detectors never saw
  checkpoints/detector_<variant>/   variants 'none' (p = 0), 'p0.1', 'p0.5', ... (detector.augment_p)
  metrics.jsonl, config.json
  detection.json, detection.npz     every number (detect/results.py); the images the figures draw
  table_detection.{csv,md}, table_robustness.{csv,md}, fig_detection_ap.png, fakes.png

  purify/                           the purification experiment (purify/experiment.py) whose classifier and
                                    VQ-VAEs make some sources: its own checkpoints, records, config.json

Sources of fakes at evaluation (eval.sources): `alae_samples` (the generator the detectors were trained
against, fresh samples), `alae_reconstructions` (G(E(x)) of real test digits: manipulated real images),
`dcgan_samples` (a convolutional generator the detectors never saw), `vqvae_no_split` and `vqvae_split` (the
purifiers' reconstructions of real test digits), `fgsm_eps<ε>` and `pgd_eps<ε>` (grey-box attacks on the
classifier at eval.attack_epsilons). Each is scored against the real test images; AP and accuracy as in Wang
et al. (2020), Table 2. With eval.fid, each source's Fréchet distance to the real test images on the
classifier's penultimate features (an MNIST-specific FID, not Inception FID).
"""

import dataclasses
import functools
import os
from typing import Any

import jax.numpy as jnp
import numpy as np

from vqdefense_jax.core import config as config_lib
from vqdefense_jax.core import data as data_lib
from vqdefense_jax.core import defence
from vqdefense_jax.core import experiment as skeleton
from vqdefense_jax.core import parallel
from vqdefense_jax.core import training
from vqdefense_jax.core import workdir as workdir_lib
from vqdefense_jax.core.config import require
from vqdefense_jax.detect import alae as alae_lib
from vqdefense_jax.detect import augment
from vqdefense_jax.detect import dcgan as dcgan_lib
from vqdefense_jax.detect import detector as detector_lib
from vqdefense_jax.detect import metrics as metrics_lib
from vqdefense_jax.detect import report
from vqdefense_jax.detect import runs as runs_lib
from vqdefense_jax.detect import sources
from vqdefense_jax.detect import config as detect_config
from vqdefense_jax.detect.config import PURIFY_SOURCES, SOURCES, base_config
from vqdefense_jax.detect.detector import ADVERSARIAL, variant_name
from vqdefense_jax.detect.results import DetectionResult
from vqdefense_jax.purify import api as purify_lib


@dataclasses.dataclass(frozen=True)
class GateSpec:
  """The `gate` section: the detector of detect, then purify, and whether evaluation runs that grid."""
  detector: str
  epsilons: tuple[float, ...]
  threshold: float
  grid: bool

  @classmethod
  def from_config(cls, s, variants: tuple[str, ...]) -> "GateSpec":
    spec = cls(s.detector, tuple(float(e) for e in s.epsilons), float(s.threshold), s.grid)
    require(spec.detector in variants + (ADVERSARIAL,), f"gate.detector must be one of "
            f"{', '.join(variants + (ADVERSARIAL,))}, not {spec.detector!r}")
    require(bool(spec.epsilons) and all(0 < e <= 1 for e in spec.epsilons),
            f"gate.epsilons must be values in (0, 1], got {spec.epsilons}")
    require(0 < spec.threshold < 1, f"gate.threshold must be in (0, 1), got {spec.threshold}")
    return spec

  @property
  def needs_purify(self) -> bool:
    return self.grid or self.detector == ADVERSARIAL


@dataclasses.dataclass(frozen=True)
class EvalSpec:
  sources: tuple[str, ...]
  attack_epsilons: tuple[float, ...]
  fid: bool
  num_fakes: int
  threshold: float
  blur_sigmas: tuple[float, ...]
  jpeg_qualities: tuple[int, ...]

  @classmethod
  def from_config(cls, s) -> "EvalSpec":
    spec = cls(tuple(s.sources), tuple(float(e) for e in s.attack_epsilons), s.fid, s.num_fakes,
               float(s.threshold), tuple(float(v) for v in s.blur_sigmas), tuple(s.jpeg_qualities))
    require(bool(spec.sources) and set(spec.sources) <= set(SOURCES) and len(set(spec.sources)) == len(spec.sources),
            f"eval.sources must be distinct names from {', '.join(SOURCES)}, got {spec.sources}")
    eps = spec.attack_epsilons
    require(all(0 < e <= 1 for e in eps) and len(set(eps)) == len(eps)
            and (eps or not {"fgsm", "pgd"} & set(spec.sources)),
            f"eval.attack_epsilons must be distinct values in (0, 1] (some, for the fgsm and pgd sources), got "
            f"{spec.attack_epsilons}")
    require(spec.num_fakes >= 0, "eval.num_fakes must be >= 0 (0: as many as test images)")
    require(0 < spec.threshold < 1, f"eval.threshold must be in (0, 1), got {spec.threshold}")
    require(all(0 < v <= 20 for v in spec.blur_sigmas), "eval.blur_sigmas must lie in (0, 20]")
    require(all(1 <= q <= 100 for q in spec.jpeg_qualities), "eval.jpeg_qualities must lie in 1..100")
    return spec

  @property
  def source_names(self) -> tuple[str, ...]:
    """The sources as scored: 'fgsm' and 'pgd' once per attack ε ('fgsm_eps0.1', ...)."""
    return tuple(n for s in self.sources
                 for n in ([f"{s}_eps{e:g}" for e in self.attack_epsilons] if s in ("fgsm", "pgd") else [s]))

  @property
  def needs_purify(self) -> bool:
    """Whether the classifier and VQ-VAEs are needed (FID features, attacks, reconstructions)."""
    return self.fid or bool(set(self.sources) & set(PURIFY_SOURCES))


@dataclasses.dataclass(frozen=True)
class Experiment:
  seed: int
  data: data_lib.DataSpec
  alae: alae_lib.ALAESpec
  dcgan: dcgan_lib.DCGANSpec
  detector: detector_lib.DetectorSpec
  eval: EvalSpec
  gate: GateSpec
  loop: training.LoopSpec
  purify: purify_lib.Experiment | None       # the classifier and VQ-VAEs, when eval or the gate needs them
  parallel: parallel.ParallelSpec            # several processes (distributed); shared with `purify`
  config: dict = dataclasses.field(compare=False, repr=False)

  @classmethod
  def from_config(cls, c) -> "Experiment":
    config_lib.check_types(c, base_config())
    require(0 <= c.seed < 2 ** 32, f"seed must be in 0..{2 ** 32 - 1}, got {c.seed}")
    ev, detector = EvalSpec.from_config(c.eval), detector_lib.DetectorSpec.from_config(c.detector)
    gate = GateSpec.from_config(c.gate, tuple(variant_name(p) for p in detector.augment_p))
    purify, data = None, data_lib.DataSpec.from_config(c.data)
    if ev.needs_purify or gate.needs_purify:
      require(data.dataset == "mnist", f"data.dataset={data.dataset!r} has no class labels for the classifier: set "
              "eval.fid=false, gate.grid=false, gate.detector to a variant ('none') and eval.sources to generator "
              "sources only (alae_samples, alae_reconstructions, dcgan_samples), as configs/detect/faces.py does")
      purify = purify_lib.Experiment.from_config(detect_config.purify_config_of(c))
      require(len(purify.vq.codebook_sizes) == 1 or not {"vqvae_no_split", "vqvae_split"} & set(ev.sources),
              "the vqvae_* sources use one VQ-VAE of each kind: give purify.vqvae.codebook_sizes one size, got "
              f"{purify.vq.codebook_sizes}")
    return cls(seed=c.seed, data=data, alae=alae_lib.ALAESpec.from_config(c.alae),
               dcgan=dcgan_lib.DCGANSpec.from_config(c.dcgan),
               detector=detector, eval=ev, gate=gate,
               loop=training.LoopSpec.from_config(c.train), purify=purify,
               parallel=parallel.ParallelSpec.from_config(c.parallel), config=c.to_dict())

  @property
  def augment_of(self) -> dict[str, float]:
    """Every detector variant and its augmentation probability: one per detector.augment_p, and the gate's
    'adversarial' detector (trained without augmentation, which would wash out the perturbations)."""
    out = {variant_name(p): p for p in self.detector.augment_p}
    return out | ({ADVERSARIAL: 0.0} if self.gate.detector == ADVERSARIAL else {})

  @property
  def variants(self) -> tuple[str, ...]:
    return tuple(self.augment_of)


# Kept importable from here (tests name them so).
quantize, adversarial_training_set = sources.quantize, runs_lib.adversarial_training_set


def purify_workdir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), "purify")


def train_all(exp: Experiment, workdir: str, stop_at: int | None = None, retrain: bool = False,
              ds: data_lib.Dataset | None = None) -> dict[str, Any]:
  """Train (or resume, or skip) the purification models (when eval needs them), ALAE, the DCGAN, then one
  detector per augmentation p; returns every model's params by name ('purify': (classifier, VQ-VAE stacks))."""
  workdir = workdir_lib.claim(workdir, "detect")
  ds = ds or data_lib.load_dataset(exp.data)
  runs = {r.name: r for r in runs_lib.runs(exp, ds)}
  # The purification models' checks too, before anything of either is written.
  nested = () if exp.purify is None else ((purify_lib.all_runs(exp.purify, ds), purify_workdir(workdir)),)
  metrics = skeleton.prepare(workdir, exp.config, list(runs.values()), retrain, parallel.is_lead(), nested=nested)
  if exp.purify is not None:  # its own records, config.json and metrics, in its own directory
    purify_lib.train_all(exp.purify, purify_workdir(workdir), stop_at=stop_at, retrain=retrain, ds=ds)
  xy = (jnp.asarray(ds.train_images), jnp.asarray(ds.train_labels), None)
  out = {name: skeleton.fit_run(runs[name], workdir, xy, metrics, exp.loop, stop_at).params
         for name in ("alae", "dcgan")}
  if exp.purify is not None:
    out["purify"] = purify_lib.load_trained(exp.purify, purify_workdir(workdir), ds)
  sets = {}  # each training set made once: the ALAE one serves every augmentation variant
  for variant in exp.variants:
    fakes = "fgsm" if variant == ADVERSARIAL else "alae"
    if fakes not in sets:
      sets[fakes] = (runs_lib.adversarial_training_set(exp, ds, out["purify"][0]) if fakes == "fgsm" else
                     runs_lib.detector_training_set(exp, ds, out["alae"]))
    run = dataclasses.replace(runs[f"detector_{variant}"],
                              batches=runs_lib.detector_batches(exp, variant, *sets[fakes]))
    out[run.name] = skeleton.fit_run(run, workdir, (), metrics, exp.loop, stop_at).params
  return out


def load_trained(exp: Experiment, workdir: str, ds: data_lib.Dataset) -> dict[str, Any]:
  """Every model's params (as `train_all` returns them) from finished checkpoints made from this config."""
  out = {run.name: skeleton.load(run, workdir).params for run in runs_lib.runs(exp, ds)}
  if exp.purify is not None:
    out["purify"] = purify_lib.load_trained(exp.purify, purify_workdir(workdir), ds)
  return out


# --- evaluation ------------------------------------------------------------------------------------------

def evaluate(exp: Experiment, workdir: str, train_missing: bool = True, retrain: bool = False) -> dict[str, Any]:
  """AP and accuracy of every detector variant on every source, robustness to blur and JPEG, FID; writes the
  files."""
  workdir = workdir_lib.claim(workdir, "detect", create=train_missing)
  ds = data_lib.load_dataset(exp.data)
  params = skeleton.load_or_train(lambda: load_trained(exp, workdir, ds),
                                  lambda: train_all(exp, workdir, retrain=retrain, ds=ds), train_missing)
  reals = quantize(ds.test_images)
  n_fake = min(exp.eval.num_fakes or len(reals), len(reals))
  fakes = sources.make_sources(exp, params, ds, n_fake)
  model = exp.detector.model
  names = list(exp.eval.source_names)
  result = dict(sources=names, variants=list(exp.variants), num_real=int(len(reals)), num_fakes=n_fake,
                threshold=exp.eval.threshold, ap={}, accuracy={}, real_accuracy={}, fake_accuracy={},
                ap_blur={}, ap_jpeg={}, detector_params=detector_lib.num_params(params[f"detector_{exp.variants[0]}"]))
  labels = lambda n_real, n_fake: np.concatenate([np.zeros(n_real, np.int32), np.ones(n_fake, np.int32)])
  robust_source = "alae_samples" if "alae_samples" in fakes else names[0]
  for v in exp.variants:
    score = functools.partial(detector_lib.scores, model, params[f"detector_{v}"])
    real_scores = score(reals)
    result["ap"][v], result["accuracy"][v], result["fake_accuracy"][v] = {}, {}, {}
    for source, x_fake in fakes.items():
      s = np.concatenate([real_scores, score(x_fake)])
      y = labels(len(reals), len(x_fake))
      acc = metrics_lib.accuracies(s, y, exp.eval.threshold)
      result["ap"][v][source] = metrics_lib.average_precision(s, y)
      result["accuracy"][v][source] = acc["accuracy"]
      result["fake_accuracy"][v][source] = acc["fake_accuracy"]
      result["real_accuracy"][v] = acc["real_accuracy"]
    both = np.concatenate([reals, fakes[robust_source]])
    y = labels(len(reals), len(fakes[robust_source]))
    n = len(both)
    result["ap_blur"][v] = {f"{sigma:g}": metrics_lib.average_precision(
        score(augment.blur(both, np.full(n, sigma))), y) for sigma in exp.eval.blur_sigmas}
    result["ap_jpeg"][v] = {str(q): metrics_lib.average_precision(score(augment.jpeg(both, np.full(n, q))), y)
                            for q in exp.eval.jpeg_qualities}
  result["robustness_source"] = robust_source
  if exp.eval.fid:
    result["fid"] = sources.fid(exp, params, ds, fakes, reals)
    result["fid_features"] = "the project classifier's penultimate activations (MNIST-specific, not Inception)"
  if exp.gate.grid:  # detect, then purify: the purification grid with this gate, written to purify/
    gate = defence.Gate(model, exp.gate.threshold)
    grid = purify_lib.grid_report(exp.purify, purify_workdir(workdir), ds, *params["purify"],
                                  gate=(gate, params[f"detector_{exp.gate.detector}"]))
    result["gate"] = dict(detector=exp.gate.detector, threshold=exp.gate.threshold, grid="purify/grid.json",
                          purifiers=list(grid.purifier), attacks=list(grid.attack))
  k = min(report.FIGURE_EXAMPLES, len(reals), *(len(x) for x in fakes.values()))
  figures = dict(reals=reals[:k], **{f"fakes/{s}": x[:k] for s, x in fakes.items()})
  if "alae" in params and len(ds.test_images) >= 2:
    k = min(4, len(ds.test_images) // 2)
    figures["interpolations"] = np.asarray(alae_lib.interpolate(params["alae"], ds.test_images[:k],
                                                                ds.test_images[k:2 * k], 8))
    figures["alae_grid"] = sources.samples(alae_lib.sample, exp, params["alae"], 64, skeleton.image_shape(ds), "figure")
  out = DetectionResult(**result, config=exp.config, figures=figures)
  if parallel.is_lead():  # on several processes every one computes the same result; one writes it
    report.write(out, workdir)
  return out


format_result, replot = report.format_result, report.replot
