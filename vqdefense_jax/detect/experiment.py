"""A detection experiment from config to table: train ALAE, train one detector per augmentation p, evaluate.

Workdir layout (as in purification, every checkpoint directory holds the record.json of what made it):
  checkpoints/alae/                 the generator of the training fakes
  checkpoints/dcgan/                a second generator, for fakes the detectors never saw
  checkpoints/detector_<variant>/   variants 'none' (p = 0), 'p0.1', 'p0.5', ... (detector.augment_p)
  metrics.jsonl, config.json
  detection.json, table_detection.{csv,md}, table_robustness.{csv,md}, fig_detection_ap.png, fakes.png

Sources of fakes at evaluation: `alae_samples` (the generator the detectors were trained against, fresh
samples), `alae_reconstructions` (G(E(x)) of real test digits: manipulated real images) and `dcgan_samples`
(a convolutional generator the detectors never saw). Each is scored against the real test images; AP and
accuracy as in Wang et al. (2020), Table 2.
"""

import dataclasses
import functools
import json
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from vqdefense_jax.core import checkpoints
from vqdefense_jax.core import config as config_lib
from vqdefense_jax.core import data as data_lib
from vqdefense_jax.core import files
from vqdefense_jax.core import report as draw
from vqdefense_jax.core import training
from vqdefense_jax.core.config import require
from vqdefense_jax.core.errors import VQDefenseError
from vqdefense_jax.core.metrics import MetricsLog
from vqdefense_jax.detect import alae as alae_lib
from vqdefense_jax.detect import augment
from vqdefense_jax.detect import dcgan as dcgan_lib
from vqdefense_jax.detect import detector as detector_lib
from vqdefense_jax.detect import metrics as metrics_lib
from vqdefense_jax.detect.config import base_config

CODE_VERSION = 1
SOURCES = ("alae_samples", "alae_reconstructions", "dcgan_samples")


@dataclasses.dataclass(frozen=True)
class ALAESpec:
  latent: int
  mapping_layers: int
  hidden: int
  r1_gamma: float
  learning_rate: float
  separate_adam: bool
  batch_size: int
  steps: int

  @classmethod
  def from_config(cls, s) -> "ALAESpec":
    spec = cls(s.latent, s.mapping_layers, s.hidden, float(s.r1_gamma), float(s.learning_rate), s.separate_adam,
               s.batch_size, s.steps)
    require(1 <= spec.latent <= 4096 and 1 <= spec.mapping_layers <= 64 and 1 <= spec.hidden <= 16384,
            f"alae.latent (1..4096), alae.mapping_layers (1..64) and alae.hidden (1..16384) out of range: "
            f"{spec.latent}, {spec.mapping_layers}, {spec.hidden}")
    require(spec.r1_gamma >= 0 and spec.learning_rate > 0, "alae.r1_gamma must be >= 0 and alae.learning_rate > 0")
    require(1 <= spec.batch_size <= training.MAX_BATCH and 1 <= spec.steps <= training.MAX_STEPS,
            f"alae.batch_size must be in 1..{training.MAX_BATCH} and alae.steps in 1..{training.MAX_STEPS}")
    return spec


@dataclasses.dataclass(frozen=True)
class DCGANSpec:
  latent: int
  width: int
  learning_rate: float
  batch_size: int
  steps: int

  @classmethod
  def from_config(cls, s) -> "DCGANSpec":
    spec = cls(s.latent, s.width, float(s.learning_rate), s.batch_size, s.steps)
    require(1 <= spec.latent <= 4096 and 1 <= spec.width <= 1024,
            f"dcgan.latent (1..4096) and dcgan.width (1..1024) out of range: {spec.latent}, {spec.width}")
    require(spec.learning_rate > 0, "dcgan.learning_rate must be > 0")
    require(1 <= spec.batch_size <= training.MAX_BATCH and 1 <= spec.steps <= training.MAX_STEPS,
            f"dcgan.batch_size must be in 1..{training.MAX_BATCH} and dcgan.steps in 1..{training.MAX_STEPS}")
    return spec


@dataclasses.dataclass(frozen=True)
class DetectorSpec:
  widths: tuple[int, ...]
  learning_rate: float
  batch_size: int
  steps: int
  num_fakes: int
  augment_p: tuple[float, ...]
  sigma_max: float
  quality_min: int

  @classmethod
  def from_config(cls, s) -> "DetectorSpec":
    spec = cls(tuple(s.widths), float(s.learning_rate), s.batch_size, s.steps, s.num_fakes,
               tuple(float(p) for p in s.augment_p), float(s.sigma_max), s.quality_min)
    require(bool(spec.widths) and all(1 <= w <= 1024 for w in spec.widths),
            f"detector.widths must be a non-empty list of widths in 1..1024, got {spec.widths}")
    require(spec.learning_rate > 0, "detector.learning_rate must be > 0")
    require(1 <= spec.batch_size <= training.MAX_BATCH and 1 <= spec.steps <= training.MAX_STEPS,
            f"detector.batch_size must be in 1..{training.MAX_BATCH} and detector.steps in 1..{training.MAX_STEPS}")
    require(spec.num_fakes >= 0, "detector.num_fakes must be >= 0 (0: as many as training images)")
    require(bool(spec.augment_p) and all(0 <= p <= 1 for p in spec.augment_p)
            and len(set(spec.augment_p)) == len(spec.augment_p),
            f"detector.augment_p must be distinct probabilities in [0, 1], got {spec.augment_p}")
    require(0 <= spec.sigma_max <= 20 and 1 <= spec.quality_min <= 100,
            "detector.sigma_max must be in [0, 20] and detector.quality_min in 1..100")
    return spec

  def augment(self, p: float) -> augment.Augment:
    return augment.Augment(p_blur=p, p_jpeg=p, sigma_max=self.sigma_max, quality_min=self.quality_min)


def variant_name(p: float) -> str:
  """'none' for p = 0, else 'p<p>' ('p0.1', 'p0.5'): Wang et al.'s Blur+JPEG (p) variants."""
  return "none" if p == 0 else f"p{p:g}"


@dataclasses.dataclass(frozen=True)
class EvalSpec:
  num_fakes: int
  threshold: float
  blur_sigmas: tuple[float, ...]
  jpeg_qualities: tuple[int, ...]

  @classmethod
  def from_config(cls, s) -> "EvalSpec":
    spec = cls(s.num_fakes, float(s.threshold), tuple(float(v) for v in s.blur_sigmas), tuple(s.jpeg_qualities))
    require(spec.num_fakes >= 0, "eval.num_fakes must be >= 0 (0: as many as test images)")
    require(0 < spec.threshold < 1, f"eval.threshold must be in (0, 1), got {spec.threshold}")
    require(all(0 < v <= 20 for v in spec.blur_sigmas), "eval.blur_sigmas must lie in (0, 20]")
    require(all(1 <= q <= 100 for q in spec.jpeg_qualities), "eval.jpeg_qualities must lie in 1..100")
    return spec


@dataclasses.dataclass(frozen=True)
class Experiment:
  seed: int
  data: data_lib.DataSpec
  alae: ALAESpec
  dcgan: DCGANSpec
  detector: DetectorSpec
  eval: EvalSpec
  loop: training.LoopSpec
  config: dict = dataclasses.field(compare=False, repr=False)

  @classmethod
  def from_config(cls, c) -> "Experiment":
    config_lib.check_types(c, base_config())
    require(0 <= c.seed < 2 ** 32, f"seed must be in 0..{2 ** 32 - 1}, got {c.seed}")
    return cls(seed=c.seed, data=data_lib.DataSpec.from_config(c.data), alae=ALAESpec.from_config(c.alae),
               dcgan=DCGANSpec.from_config(c.dcgan),
               detector=DetectorSpec.from_config(c.detector), eval=EvalSpec.from_config(c.eval),
               loop=training.LoopSpec.from_config(c.train), config=c.to_dict())

  @property
  def variants(self) -> tuple[str, ...]:
    return tuple(variant_name(p) for p in self.detector.augment_p)


def quantize(x: np.ndarray) -> np.ndarray:
  """Images as an 8-bit file would store them. Every image the detector sees, real or fake, is quantised
  this way, so it cannot tell them apart by quantisation alone (generators output continuous values)."""
  return (np.rint(np.clip(x, 0.0, 1.0) * 255) / 255).astype(np.float32)


# --- records ---------------------------------------------------------------------------------------------

def _common(exp: Experiment, ds: data_lib.Dataset) -> dict[str, Any]:
  return dict(code_version=CODE_VERSION, seed=exp.seed,
              data=dict(image_size=exp.data.image_size, train_examples=len(ds.train_images),
                        train_sha256=ds.train_sha256))


def alae_record(exp: Experiment, ds: data_lib.Dataset) -> dict[str, Any]:
  a = dataclasses.asdict(exp.alae)
  a.pop("steps")  # a longer schedule continues a finished model
  return dict(model="alae", **_common(exp, ds), alae=a)


def dcgan_record(exp: Experiment, ds: data_lib.Dataset) -> dict[str, Any]:
  g = dataclasses.asdict(exp.dcgan)
  g.pop("steps")
  return dict(model="dcgan", **_common(exp, ds), dcgan=g)


def detector_record(exp: Experiment, ds: data_lib.Dataset, p: float) -> dict[str, Any]:
  d = dataclasses.asdict(exp.detector)
  for key in ("steps", "augment_p"):
    d.pop(key)
  return dict(model=f"detector_{variant_name(p)}", **_common(exp, ds), detector=dict(d, p=p),
              fakes_from=alae_record(exp, ds))


# --- training --------------------------------------------------------------------------------------------

def _image_shape(ds: data_lib.Dataset) -> tuple[int, int, int]:
  return tuple(int(s) for s in ds.train_images.shape[1:])


def alae_step(exp: Experiment) -> alae_lib.ALAEStep:
  a = exp.alae
  return alae_lib.ALAEStep(latent=a.latent, mapping_layers=a.mapping_layers, hidden=a.hidden, r1_gamma=a.r1_gamma,
                           learning_rate=a.learning_rate, separate_adam=a.separate_adam,
                           seed=training.stable_seed(exp.seed, "alae"))


def dcgan_step(exp: Experiment) -> dcgan_lib.DCGANStep:
  g = exp.dcgan
  return dcgan_lib.DCGANStep(latent=g.latent, width=g.width, learning_rate=g.learning_rate,
                             seed=training.stable_seed(exp.seed, "dcgan"))


def _fit(step, init, batches, num_steps: int, workdir: str, name: str, record, consts, metrics, exp: Experiment,
         stop_at: int | None):
  return training.fit(step, init, batches, num_steps=num_steps, ckpt_dir=os.path.join(workdir, "checkpoints", name),
                      name=name, consts=consts, metrics=metrics, checkpoint_every=exp.loop.checkpoint_every,
                      log_every=exp.loop.log_every, stop_at=stop_at, record=record)


def samples(sample: Callable, exp: Experiment, params, n: int, shape, purpose: str, batch: int = 1000) -> np.ndarray:
  """n samples of a generator (`alae.sample`, `dcgan.sample`), in batches, from a key of (seed, purpose):
  training fakes and test fakes differ."""
  key = jax.random.key(training.stable_seed(exp.seed, f"samples/{purpose}"))
  out = [np.asarray(sample(params, jax.random.fold_in(key, i), min(batch, n - i), tuple(shape)))
         for i in range(0, n, batch)]
  return np.concatenate(out) if out else np.zeros((0,) + tuple(shape), np.float32)


def alae_reconstructions(params, images: np.ndarray, batch: int = 1000) -> np.ndarray:
  return np.concatenate([np.asarray(alae_lib.reconstruct(params, images[i:i + batch]))
                         for i in range(0, len(images), batch)])


def detector_training_set(exp: Experiment, ds: data_lib.Dataset, alae_params) -> tuple[np.ndarray, np.ndarray]:
  """Real training images (label 0) and as many ALAE samples (label 1; detector.num_fakes overrides)."""
  n_fake = exp.detector.num_fakes or len(ds.train_images)
  fakes = samples(alae_lib.sample, exp, alae_params, n_fake, _image_shape(ds), "train")
  x = quantize(np.concatenate([ds.train_images, fakes]))
  y = np.concatenate([np.zeros(len(ds.train_images), np.int32), np.ones(n_fake, np.int32)])
  return x, y


@dataclasses.dataclass(frozen=True)
class _Take:
  """Batch `step`: the images and labels at IndexBatches' indices (host arrays, for the host augmentation)."""
  index: training.IndexBatches
  x: np.ndarray = dataclasses.field(compare=False, repr=False)
  y: np.ndarray = dataclasses.field(compare=False, repr=False)

  def __call__(self, step: int):
    idx = self.index(step)
    return self.x[idx], self.y[idx]


def train_all(exp: Experiment, workdir: str, stop_at: int | None = None, retrain: bool = False,
              ds: data_lib.Dataset | None = None) -> dict[str, Any]:
  """Train (or resume, or skip) ALAE, then one detector per augmentation p; returns ALAE's params and the
  detectors' params by variant."""
  workdir = files.prepare_workdir(workdir)
  ds = ds or data_lib.load_dataset(exp.data)
  records = {"alae": alae_record(exp, ds), "dcgan": dcgan_record(exp, ds)}
  records.update({f"detector_{variant_name(p)}": detector_record(exp, ds, p) for p in exp.detector.augment_p})
  checkpoints.replace_stale({os.path.join(workdir, "checkpoints", name): r for name, r in records.items()}, retrain)
  files.write_json_atomic(os.path.join(workdir, "config.json"), exp.config)
  metrics = MetricsLog(os.path.join(workdir, "metrics.jsonl"))
  shape = _image_shape(ds)

  step = alae_step(exp)
  xy = (jnp.asarray(ds.train_images), jnp.asarray(ds.train_labels), None)
  batches = training.IndexBatches(step.seed, len(ds.train_images), exp.alae.batch_size)
  alae_state = _fit(step, lambda: step.init(shape), batches, exp.alae.steps, workdir, "alae", records["alae"], xy,
                    metrics, exp, stop_at)
  out = {"alae": alae_state.params}
  gstep = dcgan_step(exp)
  batches = training.IndexBatches(gstep.seed, len(ds.train_images), exp.dcgan.batch_size)
  out["dcgan"] = _fit(gstep, lambda: gstep.init(shape), batches, exp.dcgan.steps, workdir, "dcgan", records["dcgan"],
                      xy, metrics, exp, stop_at).params

  x, y = detector_training_set(exp, ds, alae_state.params)
  d = exp.detector
  model = detector_lib.Detector(d.widths)
  for p in d.augment_p:
    name = f"detector_{variant_name(p)}"
    seed = training.stable_seed(exp.seed, name)
    dstep = detector_lib.DetectorStep(model, training.OptimizerSpec("adam", d.learning_rate))
    batches = training.HostTransform(_Take(training.IndexBatches(seed, len(x), d.batch_size), x, y), d.augment(p),
                                     seed)
    ts = _fit(dstep, lambda: dstep.init(detector_lib.init_params(model, seed, shape)), batches, d.steps, workdir,
              name, records[name], (), metrics, exp, stop_at)
    out[name] = ts.params
  return out


def load_trained(exp: Experiment, workdir: str, ds: data_lib.Dataset) -> dict[str, Any]:
  """ALAE's and every detector's params from finished checkpoints made from this config."""
  shape = _image_shape(ds)
  step = alae_step(exp)
  model = detector_lib.Detector(exp.detector.widths)
  dstep = detector_lib.DetectorStep(model, training.OptimizerSpec("adam", exp.detector.learning_rate))
  gstep = dcgan_step(exp)
  wanted = {"alae": (alae_record(exp, ds), lambda: step.init(shape), exp.alae.steps),
            "dcgan": (dcgan_record(exp, ds), lambda: gstep.init(shape), exp.dcgan.steps)}
  for p in exp.detector.augment_p:
    wanted[f"detector_{variant_name(p)}"] = (
        detector_record(exp, ds, p), lambda: dstep.init(detector_lib.init_params(model, 0, shape)), exp.detector.steps)
  return {name: checkpoints.restore_finished(os.path.join(os.path.abspath(workdir), "checkpoints", name), record,
                                            jax.eval_shape(init), num_steps, name).params
          for name, (record, init, num_steps) in wanted.items()}


# --- evaluation ------------------------------------------------------------------------------------------

def evaluate(exp: Experiment, workdir: str, train_missing: bool = True, retrain: bool = False) -> dict[str, Any]:
  """AP and accuracy of every detector variant on every source, robustness to blur and JPEG; writes the files."""
  workdir = files.prepare_workdir(workdir)
  ds = data_lib.load_dataset(exp.data)
  try:
    params = load_trained(exp, workdir, ds)
  except VQDefenseError:
    if not train_missing:
      raise
    params = train_all(exp, workdir, retrain=retrain, ds=ds)  # a mismatch without --retrain is raised there
  reals = quantize(ds.test_images)
  n_fake = exp.eval.num_fakes or len(reals)
  fakes = {"alae_samples": quantize(samples(alae_lib.sample, exp, params["alae"], n_fake, _image_shape(ds), "test")),
           "alae_reconstructions": quantize(alae_reconstructions(params["alae"], ds.test_images[:n_fake])),
           "dcgan_samples": quantize(samples(dcgan_lib.sample, exp, params["dcgan"], n_fake, _image_shape(ds),
                                             "dcgan"))}
  model = detector_lib.Detector(exp.detector.widths)
  result = dict(sources=list(SOURCES), variants=list(exp.variants), num_real=int(len(reals)), num_fakes=n_fake,
                threshold=exp.eval.threshold, ap={}, accuracy={}, real_accuracy={}, fake_accuracy={},
                ap_blur={}, ap_jpeg={}, detector_params=detector_lib.num_params(params[f"detector_{exp.variants[0]}"]))
  labels = lambda n_real, n_fake: np.concatenate([np.zeros(n_real, np.int32), np.ones(n_fake, np.int32)])
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
    both = np.concatenate([reals, fakes["alae_samples"]])
    y = labels(len(reals), len(fakes["alae_samples"]))
    n = len(both)
    result["ap_blur"][v] = {f"{sigma:g}": metrics_lib.average_precision(
        score(augment.blur(both, np.full(n, sigma))), y) for sigma in exp.eval.blur_sigmas}
    result["ap_jpeg"][v] = {str(q): metrics_lib.average_precision(score(augment.jpeg(both, np.full(n, q))), y)
                            for q in exp.eval.jpeg_qualities}
  result["config"] = exp.config
  _write(result, fakes, workdir)
  return result


def _write(result: dict[str, Any], fakes: dict[str, np.ndarray], workdir: str) -> None:
  variants, sources = result["variants"], result["sources"]
  with files.staged(workdir) as target:
    with open(target("detection.json"), "w") as f:
      json.dump(result, f, indent=2)
    info = (f"{result['num_real']} real test images against {result['num_fakes']} fakes per source; accuracy at "
            f"threshold {result['threshold']}")
    columns = [f"ap_{s}" for s in sources] + [f"acc_{s}" for s in sources] + ["real_acc"] + [
        f"fake_acc_{s}" for s in sources]
    rows = [[result["ap"][v][s] for s in sources] + [result["accuracy"][v][s] for s in sources]
            + [result["real_accuracy"][v]] + [result["fake_accuracy"][v][s] for s in sources] for v in variants]
    draw.table(target, "table_detection", "Detection: average precision and accuracy per source (Wang et al. "
               "2020, Table 2)", info, ["variant"], [[v] for v in variants], rows, columns)
    rob_cols = [f"blur_{k}" for k in result["ap_blur"][variants[0]]] + [f"jpeg_{k}" for k in
                                                                       result["ap_jpeg"][variants[0]]]
    rob = [list(result["ap_blur"][v].values()) + list(result["ap_jpeg"][v].values()) for v in variants]
    draw.table(target, "table_robustness", "AP on alae_samples when every test image is blurred or JPEG-compressed",
               info, ["variant"], [[v] for v in variants], rob, rob_cols)
    fig, (ax,) = draw.panels(1)
    width = 0.8 / len(variants)
    for i, v in enumerate(variants):
      ax.bar(np.arange(len(sources)) + i * width, [result["ap"][v][s] for s in sources], width, label=v)
    ax.set_xticks(np.arange(len(sources)) + 0.4 - width / 2, sources)
    ax.set_ylim(0, 1.05)
    draw.finish(fig, [ax], "detector AP per source of fakes", target("fig_detection_ap.png"), "source", "AP")
    k = min(8, len(fakes["alae_samples"]))
    grid = np.stack([fakes[s][:k] for s in sources])[None]
    draw.image_grid(grid, list(sources), [""], "fakes of every source", target("fakes.png"))


def format_result(r: dict[str, Any]) -> str:
  lines = [f"{r['num_real']} real test images, {r['num_fakes']} fakes per source; detector: {r['detector_params']} "
           "parameters", "", f"{'variant':<10}" + "".join(f"{'AP ' + s:>26}" for s in r["sources"])
           + f"{'real acc':>10}" + "".join(f"{'fake acc ' + s:>32}" for s in r["sources"])]
  for v in r["variants"]:
    lines.append(f"{v:<10}" + "".join(f"{r['ap'][v][s]:>26.4f}" for s in r["sources"])
                 + f"{r['real_accuracy'][v]:>10.4f}" + "".join(f"{r['fake_accuracy'][v][s]:>32.4f}"
                                                             for s in r["sources"]))
  return "\n".join(lines)
