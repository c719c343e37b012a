"""A restoration experiment from config to tables: train the classifier and one restorer per variant, evaluate.

Workdir layout (every checkpoint directory holds the record.json of what made it; another config's run that asks
for it is an error, or with --retrain deletes and trains it again):
  checkpoints/classifier/            the MNIST classifier (eval.classifier)
  checkpoints/restorer_<variant>/    one per `variants` entry ('cbam', 'nocbam', 'cbam_l1only', ...)
  metrics.jsonl, config.json
  restoration.json                   every number below, and the config (restore/results.py)
  restoration.npz                    the images and maps the figures draw (evaluate.py --plot-only redraws them)
  table_quality.{csv,md}             PSNR and SSIM over the box and the whole image: mosaicked and restored
  table_gradcam.{csv,md}             Grad-CAM concentration on the box, per CBAM layer and in all
  table_accuracy.{csv,md}            classifier accuracy on clean, mosaicked, restored, attacked, purified images
  fig_restorations.png               clean / mosaicked / every variant's restoration
  fig_gradcam.png                    the document's Fig. 2: per variant, the input, G's output, the Grad-CAM map
                                     of its CBAM layers (mean of the layers' maps) and its overlay on the input
  fig_gradcam_layers.png             each CBAM layer's map apart (the first variant)
  fig_gradcam_classifier.png         the classifier's Grad-CAM on clean, attacked and purified images
  fig_quality.png                    PSNR and SSIM over the box, per variant

Training pairs are (mosaic(x_i), x_i) for the training images, the box of image i a function of (seed, i); the
test pairs likewise with another seed. Every variant is trained from the same initialisation seed and batch
order (`stable_seed(seed, 'restorer')`), so an ablation changes only what its name says.

Evaluation (eval.num_images test images):
  psnr, ssim          [variant]['mosaic' | 'restored']['box' | 'image'] against the clean image (quality.py);
                      'mosaic' is the de-identified input, the same for every variant
  gradcam_concentration[variant]   the mean over CBAM layers of each layer's mean (over images) ratio of
                      Grad-CAM mass in the box to the box's area share (gradcam.py); above 1: attention
                      concentrates on the box. `gradcam_concentration_layers` has each layer's value.
                      With mosaic.region = 'image' the box is the whole image and every ratio is 1.
  realness[variant]   mean over images of D(G(x)) (the logit Grad-CAM explains; its own D)
  accuracy            the classifier on 'clean', 'mosaic', 'restored'[variant]
  classifier_gradcam  FGSM at eval.attack_epsilon against the classifier (grey-box), 'purified' = the first
                      variant's restorer applied to the attacked image (trained on mosaic pairs; the restorer
                      trained on adversarial pairs is the purification grid's): accuracies and the figure.
"""

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vqdefense_jax.core import attacks
from vqdefense_jax.core import classifier
from vqdefense_jax.core import config as config_lib
from vqdefense_jax.core import data as data_lib
from vqdefense_jax.core import experiment as skeleton
from vqdefense_jax.core import parallel
from vqdefense_jax.core import training
from vqdefense_jax.core import workdir as workdir_lib
from vqdefense_jax.core.config import require
from vqdefense_jax.restore import gan
from vqdefense_jax.restore import gradcam
from vqdefense_jax.restore import models
from vqdefense_jax.restore import mosaic as mosaic_lib
from vqdefense_jax.restore import quality
from vqdefense_jax.restore import report
from vqdefense_jax.restore import runs as runs_lib
from vqdefense_jax.restore.config import base_config
from vqdefense_jax.restore.results import RestorationResult

@dataclasses.dataclass(frozen=True)
class EvalSpec:
  num_images: int
  classifier: bool
  attack_epsilon: float
  ssim_filter_size: int
  ssim_sigma: float
  figure_examples: int

  @classmethod
  def from_config(cls, s) -> "EvalSpec":
    spec = cls(s.num_images, s.classifier, float(s.attack_epsilon), s.ssim_filter_size, float(s.ssim_sigma),
               s.figure_examples)
    require(spec.num_images >= 0, "eval.num_images must be >= 0 (0: every test image)")
    require(0 < spec.attack_epsilon <= 1, f"eval.attack_epsilon must be in (0, 1], got {spec.attack_epsilon}")
    require(spec.ssim_filter_size >= 1 and spec.ssim_filter_size % 2 == 1 and spec.ssim_sigma > 0,
            f"eval.ssim_filter_size must be odd and >= 1 and eval.ssim_sigma > 0, got {spec.ssim_filter_size} and "
            f"{spec.ssim_sigma}")
    require(1 <= spec.figure_examples <= 64, "eval.figure_examples must be in 1..64")
    return spec


@dataclasses.dataclass(frozen=True)
class Experiment:
  seed: int
  data: data_lib.DataSpec
  mosaic: mosaic_lib.Mosaic
  nets: models.NetSpec
  gan: gan.GANSpec
  variants: tuple[gan.Variant, ...]
  classifier: training.Schedule | None        # None without eval.classifier
  classifier_model: classifier.Classifier
  eval: EvalSpec
  loop: training.LoopSpec
  parallel: parallel.ParallelSpec            # several processes (distributed)
  config: dict = dataclasses.field(compare=False, repr=False)

  @classmethod
  def from_config(cls, c) -> "Experiment":
    config_lib.check_types(c, base_config())
    require(c.system == "restore", f"a restoration config has system='restore', not {c.system!r}")
    require(0 <= c.seed < 2 ** 32, f"seed must be in 0..{2 ** 32 - 1}, got {c.seed}")
    data = data_lib.DataSpec.from_config(c.data)
    ev = EvalSpec.from_config(c.eval)
    require(not ev.classifier or data.dataset == "mnist", f"data.dataset={data.dataset!r} has no digit labels for "
            "the MNIST classifier: set eval.classifier=false (configs/restore/faces.py does)")
    mosaic = mosaic_lib.Mosaic.from_config(c.mosaic)
    mosaic.cells(data.image_size)  # the block fits in the image
    gan_spec = gan.GANSpec.from_config(c.gan)
    names = tuple(c.variants)
    require(bool(names) and len(set(names)) == len(names), f"variants must be distinct names, got {names}")
    variants = tuple(gan.Variant.parse(n, gan_spec.l1_weight) for n in names)
    same = {}
    for v in variants:
      key = (v.cbam, v.adversarial, v.l1_weight)
      require(key not in same, f"variants {same.get(key)!r} and {v.name!r} are the same model (λ = {v.l1_weight})")
      same[key] = v.name
    return cls(seed=c.seed, data=data, mosaic=mosaic,
               nets=models.NetSpec.from_config(c.generator, c.discriminator, data.image_size), gan=gan_spec,
               variants=variants,
               classifier=training.Schedule.from_config(c.classifier, "classifier") if ev.classifier else None,
               classifier_model=classifier.from_config(c.classifier), eval=ev,
               loop=training.LoopSpec.from_config(c.train), parallel=parallel.ParallelSpec.from_config(c.parallel),
               config=c.to_dict())

  @property
  def variant_names(self) -> tuple[str, ...]:
    return tuple(v.name for v in self.variants)


# Kept importable from here.
restorer_name, pairs = runs_lib.restorer_name, runs_lib.pairs


def train_all(exp: Experiment, workdir: str, stop_at: int | None = None, retrain: bool = False,
              ds: data_lib.Dataset | None = None) -> dict[str, Any]:
  """Train (or resume, or skip when finished) the classifier and every restorer; returns their params by
  checkpoint name ('classifier', 'restorer_<variant>')."""
  workdir = workdir_lib.claim(workdir, "restore")
  ds = ds or data_lib.load_dataset(exp.data)
  runs = {r.name: r for r in runs_lib.runs(exp, ds)}
  metrics = skeleton.prepare(workdir, exp.config, list(runs.values()), retrain, parallel.is_lead())
  out = {}
  if "classifier" in runs:
    consts = (jnp.asarray(ds.train_images), jnp.asarray(ds.train_labels), None)
    out["classifier"] = skeleton.fit_run(runs.pop("classifier"), workdir, consts, metrics, exp.loop, stop_at).params
  x_mosaic, _ = pairs(exp, ds.train_images, "train")
  consts = (jnp.asarray(x_mosaic), jnp.asarray(ds.train_images))  # on the device once for every variant
  for name, run in runs.items():
    out[name] = skeleton.fit_run(run, workdir, consts, metrics, exp.loop, stop_at).params
  return out


def load_trained(exp: Experiment, workdir: str, ds: data_lib.Dataset) -> dict[str, Any]:
  """Every model's params (as `train_all` returns them) from finished checkpoints made from this config."""
  return {run.name: skeleton.load(run, workdir).params for run in runs_lib.runs(exp, ds)}


# --- evaluation ------------------------------------------------------------------------------------------

def _finite(v: float) -> float | None:
  """JSON has no NaN or infinity: an undefined value is null."""
  return float(v) if math.isfinite(v) else None


def cbam_gradcam(params: gan.RestorerParams, x: np.ndarray, mask: np.ndarray, batch: int = 250) -> dict[str, Any]:
  """Grad-CAM of the restorer's CBAM layers on de-identified images `x` with their boxes `mask`: maps (N, L, H, W),
  concentration per image and layer (N, L), D(G(x)) (N,)."""
  maps_NxLxHxW, score_N = parallel.batched(lambda xb: tuple(gradcam.restorer_gradcam(params, jnp.asarray(xb))),
                                           x, batch=batch)
  conc_NxL = np.stack([np.asarray(gradcam.concentration(jnp.asarray(maps_NxLxHxW[:, j]), jnp.asarray(mask)))
                       for j in range(maps_NxLxHxW.shape[1])], axis=1)
  return dict(maps=maps_NxLxHxW, concentration=conc_NxL, score=score_N)


def _concentration_summary(conc_NxL: np.ndarray) -> tuple[float | None, list[float | None], int]:
  """(mean over layers of each layer's mean over images, each layer's mean, images where every layer's is
  defined)."""
  defined = np.isfinite(conc_NxL)
  per_layer = [float(np.mean(c[d])) if d.any() else float("nan") for c, d in zip(conc_NxL.T, defined.T)]
  return _finite(float(np.mean(per_layer))), [_finite(v) for v in per_layer], int(defined.all(axis=1).sum())


def classifier_views(exp: Experiment, cls_params, x: np.ndarray, y: np.ndarray, purify) -> dict[str, np.ndarray]:
  """Clean, grey-box FGSM (eval.attack_epsilon) and purified (`purify` of the attacked) images."""
  logits = classifier.logits_fn(cls_params, exp.classifier_model)
  sign = parallel.batched(jax.jit(lambda a, b: attacks.fgsm_sign(logits, a, b)), x, y)
  adv = np.clip(x + exp.eval.attack_epsilon * sign, 0.0, 1.0).astype(np.float32)
  return dict(clean=x, adversarial=adv, purified=parallel.batched(purify, adv))


def evaluate(exp: Experiment, workdir: str, train_missing: bool = True, retrain: bool = False) -> dict[str, Any]:
  """PSNR/SSIM, Grad-CAM concentration and accuracy of every variant; writes restoration.json, tables and figures.
  Trains what is missing first when `train_missing` (`retrain` as in `train_all`)."""
  workdir = workdir_lib.claim(workdir, "restore", create=train_missing)
  ds = data_lib.load_dataset(exp.data)
  params = skeleton.load_or_train(lambda: load_trained(exp, workdir, ds),
                                  lambda: train_all(exp, workdir, retrain=retrain, ds=ds), train_missing)
  n = min(exp.eval.num_images or len(ds.test_images), len(ds.test_images))
  clean, labels = ds.test_images[:n], ds.test_labels[:n]
  x_mosaic, mask = pairs(exp, clean, "test")
  q = lambda a: quality.summarise(a, clean, mask, exp.eval.ssim_filter_size, exp.eval.ssim_sigma)
  q_mosaic = q(x_mosaic)
  names = list(exp.variant_names)
  result = dict(variants=names, num_images=int(n), image_shape=list(clean.shape[1:]),
                mosaic=dataclasses.asdict(exp.mosaic), box_area=float(mask.mean()),
                psnr={}, ssim={}, gradcam_concentration={}, gradcam_concentration_layers={}, gradcam_defined={},
                realness={}, layers=list(models.Generator(blocks=exp.nets.blocks).layer_names))
  k = min(exp.eval.figure_examples, n)
  restored, maps = {}, {}
  for v in exp.variants:
    p = params[restorer_name(v)]
    restored[v.name] = parallel.batched(lambda x: gan.restore(p, x), x_mosaic)
    q_restored = q(restored[v.name])
    for metric in ("psnr", "ssim"):
      result[metric][v.name] = {inp: {r: _finite(val) for r, val in qq[metric].items()}
                                for inp, qq in (("mosaic", q_mosaic), ("restored", q_restored))}
    cams = cbam_gradcam(p, x_mosaic, mask)
    (result["gradcam_concentration"][v.name], result["gradcam_concentration_layers"][v.name],
     result["gradcam_defined"][v.name]) = _concentration_summary(cams["concentration"])
    result["realness"][v.name] = float(np.mean(cams["score"]))
    maps[v.name] = cams["maps"][:k]
  # `box`: the figures draw each image's mosaic box, so a reader can judge Grad-CAM's concentration on it by eye.
  figures = dict(clean=clean[:k], mosaic=x_mosaic[:k], box=np.asarray(mask[:k]),
                 **{f"restored/{v}": r[:k] for v, r in restored.items()}, **{f"maps/{v}": m for v, m in maps.items()})
  result["accuracy"] = None
  if exp.classifier is not None:
    cls_params, model = params["classifier"], exp.classifier_model
    acc = lambda x: classifier.accuracy(cls_params, x, labels, model=model)
    result["accuracy"] = dict(clean=acc(clean), mosaic=acc(x_mosaic), restored={v: acc(r) for v, r in restored.items()})
    first = params[restorer_name(exp.variants[0])]
    views = classifier_views(exp, cls_params, clean, labels, lambda x: gan.restore(first, x))
    result["classifier_gradcam"] = dict(
        epsilon=exp.eval.attack_epsilon, purified_by=restorer_name(exp.variants[0]), layer=gradcam.CLASSIFIER_LAYER,
        target="true class", accuracy={name: acc(x) for name, x in views.items()})
    cam = jax.jit(lambda x, c: gradcam.classifier_gradcam(model, cls_params, x, c)[0])
    for name, x in views.items():
      figures[f"classifier/{name}/x"] = x[:k]
      figures[f"classifier/{name}/cam"] = np.asarray(cam(jnp.asarray(x[:k]), jnp.asarray(labels[:k])))
  out = RestorationResult(**result, config=exp.config, figures=figures)
  if parallel.is_lead():  # on several processes every one computes the same result; one writes it
    report.write(out, workdir)
  return out


format_result, replot = report.format_result, report.replot


