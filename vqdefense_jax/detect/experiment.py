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
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from vqdefense_jax.core import attacks
from vqdefense_jax.core import checkpoints
from vqdefense_jax.core import classifier
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
from vqdefense_jax.detect import config as detect_config
from vqdefense_jax.detect.config import PURIFY_SOURCES, SOURCES, base_config
from vqdefense_jax.detect.results import DetectionResult
from vqdefense_jax.purify import experiment as purify_lib
from vqdefense_jax.purify import grid as grid_lib


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
    skeleton.check_schedule("alae", spec.batch_size, spec.steps)
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
    skeleton.check_schedule("dcgan", spec.batch_size, spec.steps)
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
    skeleton.check_schedule("detector", spec.batch_size, spec.steps)
    require(spec.num_fakes >= 0, "detector.num_fakes must be >= 0 (0: as many as training images)")
    require(bool(spec.augment_p) and all(0 <= p <= 1 for p in spec.augment_p)
            and len(set(spec.augment_p)) == len(spec.augment_p),
            f"detector.augment_p must be distinct probabilities in [0, 1], got {spec.augment_p}")
    require(0 <= spec.sigma_max <= 20 and 1 <= spec.quality_min <= 100,
            "detector.sigma_max must be in [0, 20] and detector.quality_min in 1..100")
    return spec

  def augment(self, p: float) -> augment.Augment:
    return augment.Augment(p_blur=p, p_jpeg=p, sigma_max=self.sigma_max, quality_min=self.quality_min)


ADVERSARIAL = "adversarial"  # the gate's own detector variant: real images vs grey-box FGSM examples of them


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


def variant_name(p: float) -> str:
  """'none' for p = 0, else 'p<p>' ('p0.1', 'p0.5'): Wang et al.'s Blur+JPEG (p) variants."""
  return "none" if p == 0 else f"p{p:g}"


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
  alae: ALAESpec
  dcgan: DCGANSpec
  detector: DetectorSpec
  eval: EvalSpec
  gate: GateSpec
  loop: training.LoopSpec
  purify: purify_lib.Experiment | None       # the classifier and VQ-VAEs, when eval or the gate needs them
  config: dict = dataclasses.field(compare=False, repr=False)

  @classmethod
  def from_config(cls, c) -> "Experiment":
    config_lib.check_types(c, base_config())
    require(0 <= c.seed < 2 ** 32, f"seed must be in 0..{2 ** 32 - 1}, got {c.seed}")
    require(not c.parallel.distributed, "the detection system runs in one process: parallel.distributed=true is "
            "for purification configs (README.md, several processes)")
    ev, detector = EvalSpec.from_config(c.eval), DetectorSpec.from_config(c.detector)
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
    return cls(seed=c.seed, data=data, alae=ALAESpec.from_config(c.alae),
               dcgan=DCGANSpec.from_config(c.dcgan),
               detector=detector, eval=ev, gate=gate,
               loop=training.LoopSpec.from_config(c.train), purify=purify, config=c.to_dict())

  @property
  def augment_of(self) -> dict[str, float]:
    """Every detector variant and its augmentation probability: one per detector.augment_p, and the gate's
    'adversarial' detector (trained without augmentation, which would wash out the perturbations)."""
    out = {variant_name(p): p for p in self.detector.augment_p}
    return out | ({ADVERSARIAL: 0.0} if self.gate.detector == ADVERSARIAL else {})

  @property
  def variants(self) -> tuple[str, ...]:
    return tuple(self.augment_of)


def quantize(x: np.ndarray) -> np.ndarray:
  """Images as an 8-bit file would store them. Every image the detector sees, real or fake, is quantised
  this way, so it cannot tell them apart by quantisation alone (generators output continuous values)."""
  return (np.rint(np.clip(x, 0.0, 1.0) * 255) / 255).astype(np.float32)


# --- records ---------------------------------------------------------------------------------------------

def _common(exp: Experiment, ds: data_lib.Dataset) -> dict[str, Any]:
  return skeleton.common_record(exp.seed, exp.data, ds)


def alae_record(exp: Experiment, ds: data_lib.Dataset) -> dict[str, Any]:
  a = dataclasses.asdict(exp.alae)
  a.pop("steps")  # a longer schedule continues a finished model
  return dict(model="alae", **_common(exp, ds), alae=a)


def dcgan_record(exp: Experiment, ds: data_lib.Dataset) -> dict[str, Any]:
  g = dataclasses.asdict(exp.dcgan)
  g.pop("steps")
  return dict(model="dcgan", **_common(exp, ds), dcgan=g)


def detector_record(exp: Experiment, ds: data_lib.Dataset, variant: str) -> dict[str, Any]:
  d = dataclasses.asdict(exp.detector)
  for key in ("steps", "augment_p"):
    d.pop(key)
  fakes_from = alae_record(exp, ds) if variant != ADVERSARIAL else dict(
      attack="fgsm", epsilons=list(exp.gate.epsilons), classifier=purify_lib.classifier_record(exp.purify, ds))
  return dict(model=f"detector_{variant}", **_common(exp, ds), detector=dict(d, p=exp.augment_of[variant]),
              fakes_from=fakes_from)


# --- training --------------------------------------------------------------------------------------------

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
  return skeleton.fit(step, init, batches, num_steps=num_steps, workdir=workdir, name=name, record=record,
                      consts=consts, metrics=metrics, loop=exp.loop, stop_at=stop_at)


def samples(sample: Callable, exp: Experiment, params, n: int, shape, purpose: str, batch: int = 1000) -> np.ndarray:
  """n samples of a generator (`alae.sample`, `dcgan.sample`), in batches, from a key of (seed, purpose):
  training fakes and test fakes differ."""
  key = jax.random.key(training.stable_seed(exp.seed, f"samples/{purpose}"))
  out = [np.asarray(sample(params, jax.random.fold_in(key, i), min(batch, n - i), tuple(shape)))
         for i in range(0, n, batch)]
  return np.concatenate(out) if out else np.zeros((0,) + tuple(shape), np.float32)


def alae_reconstructions(params, images: np.ndarray) -> np.ndarray:
  return parallel.batched(functools.partial(alae_lib.reconstruct, params), images, batch=1000)


def detector_training_set(exp: Experiment, ds: data_lib.Dataset, alae_params) -> tuple[np.ndarray, np.ndarray]:
  """Real training images (label 0) and as many ALAE samples (label 1; detector.num_fakes overrides)."""
  n_fake = exp.detector.num_fakes or len(ds.train_images)
  fakes = samples(alae_lib.sample, exp, alae_params, n_fake, skeleton.image_shape(ds), "train")
  x = quantize(np.concatenate([ds.train_images, fakes]))
  y = np.concatenate([np.zeros(len(ds.train_images), np.int32), np.ones(n_fake, np.int32)])
  return x, y


def adversarial_training_set(exp: Experiment, ds: data_lib.Dataset, cls_params) -> tuple[np.ndarray, np.ndarray]:
  """Real training images (label 0) and grey-box FGSM examples of them (label 1), each at an ε drawn from
  gate.epsilons by (seed, image index); detector.num_fakes limits the attacked images to the first n."""
  n = min(exp.detector.num_fakes or len(ds.train_images), len(ds.train_images))
  rng = np.random.default_rng(training.stable_seed(exp.seed, "detector_adversarial/epsilons"))
  eps_N = rng.choice(np.asarray(exp.gate.epsilons, np.float32), n)
  f = lambda x, y: attacks.fgsm_sign(classifier.logits_fn(cls_params, exp.purify.classifier_model), x, y)
  sign = parallel.batched(jax.jit(f), ds.train_images[:n], ds.train_labels[:n])
  adv = ds.train_images[:n] + eps_N[:, None, None, None] * sign
  x = quantize(np.concatenate([ds.train_images, adv]))
  y = np.concatenate([np.zeros(len(ds.train_images), np.int32), np.ones(n, np.int32)])
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


def purify_workdir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), "purify")


def train_all(exp: Experiment, workdir: str, stop_at: int | None = None, retrain: bool = False,
              ds: data_lib.Dataset | None = None) -> dict[str, Any]:
  """Train (or resume, or skip) the purification models (when eval needs them), ALAE, the DCGAN, then one
  detector per augmentation p; returns every model's params by name ('purify': (classifier, VQ-VAE stacks))."""
  workdir = workdir_lib.claim(workdir, "detect")
  ds = ds or data_lib.load_dataset(exp.data)
  records = {"alae": alae_record(exp, ds), "dcgan": dcgan_record(exp, ds)}
  records.update({f"detector_{v}": detector_record(exp, ds, v) for v in exp.variants})
  steps = dict(alae=exp.alae.steps, dcgan=exp.dcgan.steps, **{f"detector_{v}": exp.detector.steps for v in exp.variants})
  runs = {os.path.join(workdir, "checkpoints", name): (r, steps[name]) for name, r in records.items()}
  # The purification models' checks too, before anything of either is written.
  nested = (() if exp.purify is None else
            (purify_lib.checked_runs(purify_lib.all_runs(exp.purify, ds), purify_workdir(workdir)),))
  metrics = workdir_lib.accept(workdir, exp.config, runs, retrain, also=nested)
  if exp.purify is not None:  # its own records, config.json and metrics, in its own directory
    purify_lib.train_all(exp.purify, purify_workdir(workdir), stop_at=stop_at, retrain=retrain, ds=ds)
  shape = skeleton.image_shape(ds)

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

  if exp.purify is not None:
    out["purify"] = purify_lib.load_trained(exp.purify, purify_workdir(workdir), ds)
  d = exp.detector
  model = detector_lib.Detector(d.widths)
  sets = {}  # each training set made once: the ALAE one serves every augmentation variant
  for variant, p in exp.augment_of.items():
    name = f"detector_{variant}"
    seed = training.stable_seed(exp.seed, name)
    fakes = "fgsm" if variant == ADVERSARIAL else "alae"
    if fakes not in sets:
      sets[fakes] = (adversarial_training_set(exp, ds, out["purify"][0]) if fakes == "fgsm" else
                     detector_training_set(exp, ds, alae_state.params))
    x, y = sets[fakes]
    dstep = detector_lib.DetectorStep(model, training.OptimizerSpec("adam", d.learning_rate))
    batches = training.HostTransform(_Take(training.IndexBatches(seed, len(x), d.batch_size), x, y), d.augment(p),
                                     seed)
    ts = _fit(dstep, lambda: dstep.init(detector_lib.init_params(model, seed, shape)), batches, d.steps, workdir,
              name, records[name], (), metrics, exp, stop_at)
    out[name] = ts.params
  return out


def load_trained(exp: Experiment, workdir: str, ds: data_lib.Dataset) -> dict[str, Any]:
  """Every model's params (as `train_all` returns them) from finished checkpoints made from this config."""
  shape = skeleton.image_shape(ds)
  step = alae_step(exp)
  model = detector_lib.Detector(exp.detector.widths)
  dstep = detector_lib.DetectorStep(model, training.OptimizerSpec("adam", exp.detector.learning_rate))
  gstep = dcgan_step(exp)
  wanted = {"alae": (alae_record(exp, ds), lambda: step.init(shape), exp.alae.steps),
            "dcgan": (dcgan_record(exp, ds), lambda: gstep.init(shape), exp.dcgan.steps)}
  for v in exp.variants:
    wanted[f"detector_{v}"] = (
        detector_record(exp, ds, v), lambda: dstep.init(detector_lib.init_params(model, 0, shape)), exp.detector.steps)
  out = {name: checkpoints.restore_finished(os.path.join(os.path.abspath(workdir), "checkpoints", name), record,
                                           jax.eval_shape(init), num_steps, name).params
         for name, (record, init, num_steps) in wanted.items()}
  if exp.purify is not None:
    out["purify"] = purify_lib.load_trained(exp.purify, purify_workdir(workdir), ds)
  return out


# --- evaluation ------------------------------------------------------------------------------------------

def purify_sources(exp: Experiment, purify_models, images: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
  """The sources made by the purification experiment's models from real test images: VQ-VAE reconstructions
  (No-Split, Split) and grey-box FGSM / PGD examples against the classifier at every eval.attack_epsilons."""
  p, wanted, out = exp.purify, exp.eval.sources, {}
  cls_params, stacks = purify_models
  if {"vqvae_no_split", "vqvae_split"} & set(wanted):
    no_split, split = (parallel.take(stacks[kind], 0) for kind in p.vq.paper_kinds)
    for pur in grid_lib.make_purifiers(p.vq, [s[len("vqvae_"):] for s in wanted if s.startswith("vqvae_")]):
      out[f"vqvae_{pur.name}"] = parallel.batched(jax.jit(functools.partial(pur, no_split, split)), images)
  a = p.config["attack"]
  key = jax.random.key(training.stable_seed(exp.seed, "attack_sources"))
  eps_E = jnp.asarray(exp.eval.attack_epsilons, jnp.float32)
  for name in (n for n in ("fgsm", "pgd") if n in wanted):
    atk = attacks.Attack(name, a["pgd_steps"], a["pgd_step_size"], a["pgd_random_start"])
    run = jax.jit(lambda x, y, i, atk=atk: attacks.run(atk, classifier.logits_fn(cls_params, p.classifier_model), x,
                                                       y, eps_E, key=key, index_B=i))
    adv_ExN = parallel.batched(run, images, labels, np.arange(len(images), dtype=np.int32), axis=1)
    out.update({f"{name}_eps{e:g}": adv_ExN[i] for i, e in enumerate(exp.eval.attack_epsilons)})
  return out


def make_sources(exp: Experiment, params: dict[str, Any], ds: data_lib.Dataset, n: int) -> dict[str, np.ndarray]:
  """Every eval.sources image set (n images each, quantised to 8 bits), by source name."""
  shape = skeleton.image_shape(ds)
  out = {}
  if "alae_samples" in exp.eval.sources:
    out["alae_samples"] = samples(alae_lib.sample, exp, params["alae"], n, shape, "test")
  if "alae_reconstructions" in exp.eval.sources:
    out["alae_reconstructions"] = alae_reconstructions(params["alae"], ds.test_images[:n])
  if "dcgan_samples" in exp.eval.sources:
    out["dcgan_samples"] = samples(dcgan_lib.sample, exp, params["dcgan"], n, shape, "dcgan")
  if exp.purify is not None:
    out.update(purify_sources(exp, params["purify"], ds.test_images[:n], ds.test_labels[:n]))
  return {name: quantize(out[name]) for name in exp.eval.source_names}


def fid(exp: Experiment, params: dict[str, Any], ds: data_lib.Dataset, fakes: dict[str, np.ndarray],
        reals: np.ndarray) -> dict[str, float]:
  """Fréchet distance of every source, and of real training images (the floor), to the real test images on the
  classifier's penultimate features."""
  cls_params, _ = params["purify"]
  feats = lambda x: parallel.batched(jax.jit(lambda b: classifier.features(cls_params, b, exp.purify.classifier_model)), x)
  real = feats(reals)
  sets = dict(fakes, real_train=quantize(ds.train_images[:len(reals)]))
  return {name: alae_lib.frechet_distance(real, feats(x)) for name, x in sets.items()}


def evaluate(exp: Experiment, workdir: str, train_missing: bool = True, retrain: bool = False) -> dict[str, Any]:
  """AP and accuracy of every detector variant on every source, robustness to blur and JPEG, FID; writes the
  files."""
  workdir = workdir_lib.claim(workdir, "detect", create=train_missing)
  ds = data_lib.load_dataset(exp.data)
  params = skeleton.load_or_train(lambda: load_trained(exp, workdir, ds),
                                  lambda: train_all(exp, workdir, retrain=retrain, ds=ds), train_missing)
  reals = quantize(ds.test_images)
  n_fake = min(exp.eval.num_fakes or len(reals), len(reals))
  fakes = make_sources(exp, params, ds, n_fake)
  model = detector_lib.Detector(exp.detector.widths)
  sources = list(exp.eval.source_names)
  result = dict(sources=sources, variants=list(exp.variants), num_real=int(len(reals)), num_fakes=n_fake,
                threshold=exp.eval.threshold, ap={}, accuracy={}, real_accuracy={}, fake_accuracy={},
                ap_blur={}, ap_jpeg={}, detector_params=detector_lib.num_params(params[f"detector_{exp.variants[0]}"]))
  labels = lambda n_real, n_fake: np.concatenate([np.zeros(n_real, np.int32), np.ones(n_fake, np.int32)])
  robust_source = "alae_samples" if "alae_samples" in fakes else sources[0]
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
    result["fid"] = fid(exp, params, ds, fakes, reals)
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
    figures["alae_grid"] = samples(alae_lib.sample, exp, params["alae"], 64, skeleton.image_shape(ds), "figure")
  out = DetectionResult(**result, config=exp.config, figures=figures)
  report.write(out, workdir)
  return out


format_result, replot = report.format_result, report.replot
