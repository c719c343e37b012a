"""A purification experiment from config to grid: typed description, training runs, evaluation.

`Experiment.from_config(c)` reads every config section once, through each section's own constructor
(which checks it), before anything is written; below it, functions take the pieces they use.

Workdir layout:
  config.json                     the resolved config of the last accepted training run
  metrics.jsonl                   training metrics, one JSON object per line
  checkpoints/classifier/         orbax CheckpointManager directories, each with record.json: what the model
                                  was made from (`classifier_record`, `vqvae_record`); another config's run
                                  that asks for the same directory is an error
  checkpoints/vqvae_<kind>_sweep_K<sizes>/   every codebook size of a kind as one stack (train.sweep)
  checkpoints/vqvae_<kind>_K<size>/          one per size (train.sweep = False)
  checkpoints/<network>/          eval.purifiers lists a network purifier (core/defence.py; 'restorer': G and D
                                  of restore/purifier.py) trained on (FGSM, clean) pairs, its record naming
                                  the classifier the pairs attack
                                  weights.source = 'torch': the same directories hold the imported models at
                                  step 0, their record naming the source file and its sha256 (interop.py)
  grid.json, grid.npz, tables, figures       `evaluate` (purify/results.py, purify/report.py)
"""

import dataclasses
import functools
import logging
import os
import time
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
from vqdefense_jax.core import tiles
from vqdefense_jax.core import training
from vqdefense_jax.core import workdir as workdir_lib
from vqdefense_jax.core.classifier import Classifier
from vqdefense_jax.core.errors import VQDefenseError
from vqdefense_jax.core.metrics import MetricsLog
from vqdefense_jax.purify import grid as grid_lib
from vqdefense_jax.purify import interop
from vqdefense_jax.purify import quantizer
from vqdefense_jax.purify import report
from vqdefense_jax.purify.config import base_config
from vqdefense_jax.purify.kinds import VQKind, VQSpec
from vqdefense_jax.core.defence import Gate, ModulePurifier
from vqdefense_jax.purify.purifiers import PURIFIERS, Purifier, apply_all
from vqdefense_jax.purify.results import Figure, GridResult
from vqdefense_jax.purify.vqvae import VQVAE

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class EvalSpec:
  """The `eval` section: which purifiers the grid measures, and the reconstruction figure."""
  purifiers: tuple[str, ...]
  figure_epsilons: tuple[float, ...]
  figure_examples: int
  counting: str = "final"
  save_predictions: bool = False

  @classmethod
  def from_config(cls, section) -> "EvalSpec":
    spec = cls(tuple(section.purifiers), tuple(section.figure_epsilons), section.figure_examples,
               section.counting, section.save_predictions)
    config_lib.require(spec.counting in grid_lib.COUNTING, f"eval.counting must be one of {grid_lib.COUNTING}, "
                       f"not {spec.counting!r}")
    networks = tuple(defence.network_purifiers())
    known = PURIFIERS + networks
    unknown = [p for p in spec.purifiers if p not in known]
    if unknown or not spec.purifiers:
      raise VQDefenseError(f"unknown purifier(s) {unknown}; expected some of {', '.join(known)} (a network purifier "
                           "such as 'restorer' is known once the config imports its module: "
                           "vqdefense_jax.restore.purifier, as configs/purify/restorer_cpu.py does)")
    if not [p for p in spec.purifiers if p != "none" and p not in networks]:
      raise VQDefenseError(f"the grid needs at least one purifier besides 'none' and {', '.join(map(repr, networks))} "
                           "(a VQ-VAE) in eval.purifiers")
    if len([p for p in spec.purifiers if p in networks]) > 1:
      raise VQDefenseError("eval.purifiers lists more than one network purifier; the grid takes one")
    for e in spec.figure_epsilons:
      if not isinstance(e, (int, float)) or not 0.0 <= float(e) <= 1.0:
        raise VQDefenseError(f"eval.figure_epsilons must lie in [0, 1], got {e}")
    if not 0 <= spec.figure_examples <= 100:
      raise VQDefenseError(f"eval.figure_examples must be in 0..100, got {spec.figure_examples}")
    return spec


@dataclasses.dataclass(frozen=True)
class Network:
  """The grid's network purifier (eval.purifiers lists it): what its system offers (core/defence.py) and its
  section, checked."""
  offer: defence.NetworkPurifier
  spec: Any

  @property
  def name(self) -> str:
    return self.offer.name

  @classmethod
  def from_config(cls, c, image_size: int) -> "Network | None":
    offers = defence.network_purifiers()
    named = [offers[p] for p in c.eval.purifiers if p in offers]
    return cls(named[0], named[0].spec(c[named[0].name], image_size, c.seed)) if named else None


@dataclasses.dataclass(frozen=True)
class Experiment:
  """Everything a purification run needs, read from the config once."""
  seed: int
  data: data_lib.DataSpec
  classifier: training.Schedule
  classifier_model: Classifier               # the classifier's input convention (classifier.input_mean/std)
  weights: interop.WeightsSpec               # train here, or import the authors' PyTorch weights
  vqvae_schedule: training.Schedule
  vq: VQSpec
  attack: attacks.AttackSpec
  eval: EvalSpec
  grid: grid_lib.GridSpec
  loop: training.LoopSpec
  parallel: parallel.ParallelSpec
  network: Network | None                    # eval.purifiers lists a network purifier ('restorer')
  config: dict = dataclasses.field(compare=False, repr=False)  # the resolved config, for the records

  @classmethod
  def from_config(cls, c) -> "Experiment":
    config_lib.check_types(c, base_config())
    if not 0 <= c.seed < 2 ** 32:
      raise VQDefenseError(f"seed must be in 0..{2 ** 32 - 1}, got {c.seed}")
    data = data_lib.DataSpec.from_config(c.data)
    config_lib.require(data.dataset == "mnist", f"purification needs MNIST's grey images and class labels, not "
                       f"data.dataset={data.dataset!r} (other datasets serve the detection system's generators)")
    attack = attacks.AttackSpec.from_config(c.attack)
    vq, weights = VQSpec.from_config(c.vqvae, data.image_size), interop.WeightsSpec.from_config(c.weights)
    if weights.imported:
      config_lib.require(vq.training == ("clean",) and not vq.split_ks and len(vq.codebook_sizes) == 1,
                         "weights.source='torch' imports one No-Split and one Split VQ-VAE: vqvae.training must "
                         "be ['clean'], vqvae.split_ks empty and vqvae.codebook_sizes one size (768 for the "
                         "authors' weights)")
    evals = EvalSpec.from_config(c.eval)
    network = Network.from_config(c, data.image_size)
    return cls(seed=c.seed, data=data, classifier=training.Schedule.from_config(c.classifier, "classifier"),
               classifier_model=classifier.from_config(c.classifier), weights=weights,
               vqvae_schedule=training.Schedule.from_config(c.vqvae, "vqvae"),
               vq=vq, attack=attack, eval=evals, grid=grid_lib.GridSpec.from_config(c.grid, attack.epsilons),
               loop=training.LoopSpec.from_config(c.train), parallel=parallel.ParallelSpec.from_config(c.parallel),
               network=network, config=c.to_dict())


# --- training runs --------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class VQVAELoss:
  """The VQ-VAE loss on whole images (k = 1) or on their k×k tiles; `state` is the codebook.

  With `adversarial_eps`, the input is FGSM-attacked against the classifier (`extra` = its params) at an
  ε drawn per image from that list, and the target is the clean image (Defense-VAE's adversarial -> clean
  pairs).
  """
  model: VQVAE
  k: int
  adversarial_eps: tuple[float, ...] = ()
  classifier: Classifier = Classifier()

  def pairs(self, x, y, rng, extra):
    """(input, target, ε per image) of one step, before tiling; ε is 0 for clean training."""
    if not self.adversarial_eps:
      return x, x, jnp.zeros(x.shape[:1], x.dtype)
    x_adv, eps_B = attacks.fgsm_pairs(classifier.logits_fn(extra, self.classifier), x, y, self.adversarial_eps,
                                      jax.random.fold_in(rng, 1))
    return jax.lax.stop_gradient(x_adv), x, eps_B

  def __call__(self, params, codebook, x, y, rng, extra=None):
    x_in, target, _ = self.pairs(x, y, rng, extra)
    cut = lambda v: tiles.split(v, self.k) if self.k > 1 else v
    return self.model.loss(params, codebook, cut(x_in), cut(target))


@dataclasses.dataclass(frozen=True)
class Run:
  """One call of `training.fit`: a model (or a stack of them) with its step, init, batches and checkpoint."""
  name: str                                  # checkpoint directory and progress-bar label
  step: Any                                  # training.SupervisedStep (a network purifier: its own step)
  init: Callable[[], Any]                    # the initial state (stacked for a sweep)
  num_steps: int
  batch_size: int
  record: dict[str, Any]                     # what defines the model: stored with its checkpoints
  sweep: training.Sweep | None = None
  needs_classifier: bool = False             # `extra` = the trained classifier (adversarial VQ-VAE training)
  imported: Callable[[], Any] | None = None  # weights.source = 'torch': the state converted from PyTorch

  def directory(self, workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), "checkpoints", self.name)

  @property
  def model_names(self) -> tuple[str, ...]:
    return (self.name,) if self.sweep is None else self.sweep.names


def _common_record(exp: Experiment, ds: data_lib.Dataset) -> dict[str, Any]:
  return skeleton.common_record(exp.seed, exp.data, ds)


def _schedule_record(s: training.Schedule) -> dict[str, Any]:
  """`epochs`/`steps` are left out: they say where training ends, not what each step does, so a longer
  schedule resumes from a finished checkpoint (bit-identically with training that long at once)."""
  return dict(optimizer=s.optimizer, learning_rate=s.learning_rate, lr_decay_per_epoch=s.lr_decay_per_epoch,
              batch_size=s.batch_size)


def _input_record(exp: Experiment) -> dict[str, float]:
  return dict(input_mean=exp.classifier_model.mean, input_std=exp.classifier_model.std)


def classifier_record(exp: Experiment, ds: data_lib.Dataset) -> dict[str, Any]:
  if exp.weights.imported:
    return dict(model="classifier", code_version=skeleton.CODE_VERSION, imported=exp.weights.record("classifier"),
                data=dict(image_size=exp.data.image_size), classifier=_input_record(exp))
  return dict(model="classifier", **_common_record(exp, ds),
              classifier=dict(_schedule_record(exp.classifier), **_input_record(exp)))


def vqvae_record(exp: Experiment, ds: data_lib.Dataset, kind: VQKind, sizes) -> dict[str, Any]:
  if exp.weights.imported:
    return dict(model=f"vqvae_{kind.name}", code_version=skeleton.CODE_VERSION, imported=exp.weights.record(_source(exp, kind)),
                data=dict(image_size=exp.data.image_size), tiles=kind.tiles, training=kind.training,
                codebook_sizes=list(sizes), vqvae=dataclasses.asdict(exp.vq.model))
  r = dict(model=f"vqvae_{kind.name}", **_common_record(exp, ds), tiles=kind.tiles, training=kind.training,
           codebook_sizes=list(sizes),
           vqvae=dict(dataclasses.asdict(exp.vq.model), **_schedule_record(exp.vqvae_schedule)))
  if kind.adversarial:  # its inputs attack the classifier
    r.update(adversarial_epsilons=list(exp.vq.adversarial_epsilons), classifier=classifier_record(exp, ds))
  return r


def _n_train(exp: Experiment, ds: data_lib.Dataset, schedule: training.Schedule) -> int:
  """Training examples per epoch; imported weights are not trained, so any valid count (one batch) will do."""
  return schedule.batch_size if exp.weights.imported else len(ds.train_images)


def classifier_run(exp: Experiment, ds: data_lib.Dataset) -> Run:
  n_train = _n_train(exp, ds, exp.classifier)
  seed = training.stable_seed(exp.seed, "classifier")
  model = exp.classifier_model
  step = training.SupervisedStep(classifier.ClassifierLoss(model), exp.classifier.optimizer_spec(n_train), seed)
  init = lambda: step.init(classifier.init_params(seed, exp.data.image_size, model), {})
  run = Run("classifier", step, init, exp.classifier.num_steps(n_train), exp.classifier.batch_size,
            classifier_record(exp, ds))
  if not exp.weights.imported:
    return run
  params = lambda: interop.classifier_params(exp.weights.state_dict("classifier"), model, exp.data.image_size,
                                             exp.weights.path("classifier"))
  return dataclasses.replace(run, num_steps=0, imported=lambda: init().replace(params=params()))


def _source(exp: Experiment, kind: VQKind) -> str:
  """The authors' file a kind is imported from (weights.source = 'torch' allows the two paper kinds only)."""
  return "no_split" if kind.tiles == 1 else "split"


def checkpoint_name(kind: VQKind, size: int) -> str:
  return f"vqvae_{kind.name}_K{size}"


def sweep_name(kind: VQKind, sizes) -> str:
  """One checkpoint for the stack of every codebook size of a kind (train.sweep)."""
  return f"vqvae_{kind.name}_sweep_K{'-'.join(str(s) for s in sizes)}"


def vqvae_step(exp: Experiment, kind: VQKind, n_train: int) -> training.SupervisedStep:
  # The seed depends on the kind only: every codebook size sees the same batches.
  eps = exp.vq.adversarial_epsilons if kind.adversarial else ()
  return training.SupervisedStep(VQVAELoss(exp.vq.model, kind.tiles, eps, exp.classifier_model),
                                 exp.vqvae_schedule.optimizer_spec(n_train), training.stable_seed(exp.seed, f"vqvae_{kind.name}"))


def vqvae_init(exp: Experiment, step: training.SupervisedStep, kind: VQKind, size: int) -> Callable[[], Any]:
  side = exp.data.image_size // kind.tiles

  def init():
    v = exp.vq.model.init(jax.random.key(step.seed), jnp.zeros((1, side, side, 1), jnp.float32), size)
    return step.init(v["params"], v["codebook"])
  return init


def vqvae_runs(exp: Experiment, kind: VQKind, ds: data_lib.Dataset) -> list[Run]:
  """The runs of a kind: one sweep over every codebook size (train.sweep), or one run per size."""
  n_train = _n_train(exp, ds, exp.vqvae_schedule)
  step = vqvae_step(exp, kind, n_train)
  sizes = exp.vq.codebook_sizes
  inits = [vqvae_init(exp, step, kind, s) for s in sizes]
  common = dict(num_steps=exp.vqvae_schedule.num_steps(n_train), batch_size=exp.vqvae_schedule.batch_size,
                needs_classifier=kind.adversarial)
  if exp.loop.sweep:
    sweep = training.Sweep(tuple(checkpoint_name(kind, s) for s in sizes), exp.parallel.train_model_axis)
    runs = [Run(sweep_name(kind, sizes), step, lambda: parallel.stack([f() for f in inits]),
                record=vqvae_record(exp, ds, kind, sizes), sweep=sweep, **common)]
  else:
    runs = [Run(checkpoint_name(kind, s), step, f, record=vqvae_record(exp, ds, kind, [s]), **common)
            for s, f in zip(sizes, inits)]
  if not exp.weights.imported:
    return runs
  (run,), (size,), (init,) = runs, sizes, inits  # Experiment.from_config allows one size

  def imported():
    which = _source(exp, kind)
    v = interop.vqvae_variables(exp.weights.state_dict(which), exp.vq.model, size, exp.weights.path(which))
    ts = init().replace(params=v["params"], state=v["codebook"])
    return parallel.stack([ts]) if run.sweep is not None else ts
  return [dataclasses.replace(run, num_steps=0, imported=imported)]


def network_record(exp: Experiment, ds: data_lib.Dataset) -> dict[str, Any]:
  """A network purifier is made from the training images, FGSM pairs against the classifier, and its section."""
  return dict(model=exp.network.name, **_common_record(exp, ds), classifier=classifier_record(exp, ds),
              **exp.network.spec.record())


def network_run(exp: Experiment, ds: data_lib.Dataset) -> Run:
  """The network purifier's run (eval.purifiers lists it): `train_all` gives it its (FGSM, clean) pairs."""
  spec = exp.network.spec
  return Run(exp.network.name, spec.step, lambda: spec.init(exp.data.image_size), spec.steps, spec.batch_size,
             network_record(exp, ds), needs_classifier=True)


def all_runs(exp: Experiment, ds: data_lib.Dataset) -> list[Run]:
  """Every run of the experiment in training order: the classifier, each VQ-VAE kind, then the network purifier."""
  return ([classifier_run(exp, ds)] + [r for kind in exp.vq.kinds for r in vqvae_runs(exp, kind, ds)]
          + ([network_run(exp, ds)] if exp.network is not None else []))


def _train_or_import(run: Run, workdir: str, train_xy, extra, metrics: MetricsLog, exp: Experiment, stop_at: int | None):
  if run.imported is not None:
    return _import(run, workdir)
  return training.fit(run.step, run.init, training.IndexBatches(run.step.seed, len(train_xy[0]), run.batch_size),
                      num_steps=run.num_steps, ckpt_dir=run.directory(workdir), name=run.name,
                      consts=(*train_xy, extra), metrics=metrics, checkpoint_every=exp.loop.checkpoint_every,
                      log_every=exp.loop.log_every, stop_at=stop_at, sweep=run.sweep, record=run.record)


def _import(run: Run, workdir: str) -> Any:
  """An imported run's state: from its checkpoint, or converted from its PyTorch file and saved (step 0)."""
  directory = run.directory(workdir)
  if checkpoints.latest_step(directory) is not None:  # train_all checked its record
    return checkpoints.restore(directory, jax.eval_shape(run.init))
  log.info("%s: importing %s (sha256 %s)", run.name, run.record["imported"]["file"], run.record["imported"]["sha256"])
  state = run.imported()
  if jax.process_index() == 0:
    checkpoints.write_record(directory, run.record)
  with checkpoints.quiet():
    mngr = checkpoints.manager(directory)
    try:
      checkpoints.save(mngr, 0, state)
      mngr.wait_until_finished()
    finally:
      mngr.close()
  return state


def _unstack(run: Run, ts) -> list[training.TrainState]:
  return [ts] if run.sweep is None else [parallel.take(ts, i) for i in range(len(run.sweep.names))]


def checked_runs(runs: list[Run], workdir: str) -> dict[str, tuple[dict[str, Any], int]]:
  """{checkpoint directory: (record, steps)} of `runs` (`all_runs`'), for core/workdir.py's checks."""
  return {r.directory(workdir): (r.record, r.num_steps) for r in runs}


def train_all(exp: Experiment, workdir: str, stop_at: int | None = None, retrain: bool = False,
              ds: data_lib.Dataset | None = None) -> dict[str, dict[str, float]]:
  """Train (or resume, or skip when finished) every model of the experiment; returns test metrics.

  Every checkpoint already in the workdir must have been made from this config (its record); otherwise
  this is an error before anything is written, or, with `retrain`, those checkpoints are deleted and
  trained again. config.json is written once the run is accepted.
  """
  workdir = workdir_lib.claim(workdir, "purify")
  ds = ds or data_lib.load_dataset(exp.data)
  runs = all_runs(exp, ds)
  lead = jax.process_index() == 0  # on several hosts, one process writes the files (orbax coordinates itself)
  metrics = workdir_lib.accept(workdir, exp.config, checked_runs(runs, workdir), retrain, lead)
  # On the device once for every model (fit would otherwise copy it per model).
  train_xy = (jnp.asarray(ds.train_images), jnp.asarray(ds.train_labels))
  summary = {}

  run = runs[0]
  cls_params = _train_or_import(run, workdir, train_xy, None, metrics, exp, stop_at).params
  acc = classifier.accuracy(cls_params, ds.test_images, ds.test_labels, model=exp.classifier_model)
  summary["classifier"] = {"test_accuracy": acc}
  log.info("classifier: clean test accuracy %.4f (%d test images)", acc, len(ds.test_images))

  for run in runs[1:]:
    if exp.network is not None and run.name == exp.network.name:
      summary[run.name] = _train_network(exp, run, workdir, ds, cls_params, metrics, stop_at)
      continue
    extra = cls_params if run.needs_classifier else None  # the classifier its training inputs attack
    states = _unstack(run, _train_or_import(run, workdir, train_xy, extra, metrics, exp, stop_at))
    for name, ts in zip(run.model_names, states):
      m = vqvae_test_metrics(exp.vq.model, {"params": ts.params, "codebook": ts.state}, run.record["tiles"],
                             ds.test_images)
      summary[name] = m
      log.info("%s: test recon MSE %.5f (clean input), perplexity %.1f, dead codes %.1f%%", name,
               m["recon_mse"], m["perplexity"], 100 * m["dead_code_share"])
  metrics.rewrite(lambda row: not (row.get("subset") == "test" and row.get("model") in summary))  # a re-run's
  metrics.write([{"model": name, "subset": "test", **m} for name, m in summary.items()])
  return summary


def _pairs_seed(exp: Experiment, split: str) -> int:
  return training.stable_seed(exp.seed, f"{exp.network.name}/pairs/{split}")


def _train_network(exp: Experiment, run: Run, workdir: str, ds: data_lib.Dataset, cls_params, metrics: MetricsLog,
                   stop_at: int | None) -> dict[str, float]:
  """Train the network purifier on (FGSM against the classifier, clean) pairs; its test MSEs to the clean images."""
  spec = exp.network.spec
  attacked = lambda images, labels, split: exp.network.offer.pairs(
      cls_params, exp.classifier_model, images, labels, spec.epsilons, _pairs_seed(exp, split))
  consts = (jnp.asarray(attacked(ds.train_images, ds.train_labels, "train")), jnp.asarray(ds.train_images))
  state = training.fit(run.step, run.init, training.IndexBatches(run.step.seed, len(ds.train_images), run.batch_size),
                       num_steps=run.num_steps, ckpt_dir=run.directory(workdir), name=run.name, consts=consts,
                       metrics=metrics, checkpoint_every=exp.loop.checkpoint_every, log_every=exp.loop.log_every,
                       stop_at=stop_at, record=run.record)
  x_adv = attacked(ds.test_images, ds.test_labels, "test")
  mse = lambda a: float(np.mean((a - ds.test_images) ** 2))
  restore = functools.partial(_purify, network_purifier(exp), exp.network.offer.params(state))
  m = dict(attacked_mse=mse(x_adv), restored_mse=mse(parallel.batched(restore, x_adv)),
           clean_restored_mse=mse(parallel.batched(restore, ds.test_images)))
  log.info("%s: test MSE to the clean images: attacked %.5f, restored %.5f; clean inputs restored %.5f", run.name,
           m["attacked_mse"], m["restored_mse"], m["clean_restored_mse"])
  return m


def network_purifier(exp: Experiment) -> ModulePurifier:
  """The network purifier (the restorer: its generator) as a purifier of the grid."""
  return exp.network.offer.purifier(exp.network.spec)


@functools.partial(jax.jit, static_argnums=0)
def _purify(pur: ModulePurifier, params, x):
  return pur(params, None, x)


def load_network(exp: Experiment, workdir: str, ds: data_lib.Dataset) -> Any:
  """The network purifier's params from its finished checkpoint, which must match this config's record."""
  return exp.network.offer.params(_load(network_run(exp, ds), os.path.abspath(workdir)))


def vqvae_test_metrics(model: VQVAE, variables, k: int, images: np.ndarray, batch: int = 500) -> dict[str, float]:
  """Reconstruction MSE over the test set, and code usage over all its tiles."""

  @jax.jit
  def run(x):
    x = tiles.split(x, k) if k > 1 else x
    x_hat, aux = model.forward(variables["params"], variables["codebook"], x)
    return jnp.sum((x_hat - x) ** 2), jnp.bincount(aux["idx"], length=model.k_max)

  sq, count_K = 0.0, np.zeros(model.k_max, np.int64)
  for i in range(0, len(images), batch):
    s, cnt = run(images[i:i + batch])
    sq, count_K = sq + float(s), count_K + np.asarray(cnt)
  u = quantizer.usage_from_counts(jnp.asarray(count_K), variables["codebook"]["size"])
  return dict(recon_mse=sq / images[..., 0].size, perplexity=float(u["perplexity"]),
              dead_code_share=float(u["dead_code_share"]))


def _load(run: Run, workdir: str) -> training.TrainState:
  """A finished run's state from its checkpoint, which must have been made from the run's record."""
  return checkpoints.restore_finished(run.directory(workdir), run.record, jax.eval_shape(run.init), run.num_steps,
                                      run.name)


def load_trained(exp: Experiment, workdir: str, ds: data_lib.Dataset) -> tuple[Any, dict[VQKind, Any]]:
  """Classifier params and {kind: stacked variables of every codebook size} from finished checkpoints.

  The training set `ds` fixes the step counts the checkpoints must have reached, and is part of their record.
  """
  workdir = os.path.abspath(workdir)
  cls_params = _load(classifier_run(exp, ds), workdir).params
  stacks = {}
  for kind in exp.vq.kinds:
    states = [_load(run, workdir) for run in vqvae_runs(exp, kind, ds)]
    ts = states[0] if exp.loop.sweep else parallel.stack(states)
    stacks[kind] = {"params": ts.params, "codebook": ts.state}
  return cls_params, stacks


def missing_checkpoints(exp: Experiment, workdir: str, ds: data_lib.Dataset) -> list[str]:
  """Names of the checkpoints `load_trained` needs that are absent, unfinished or made by another config."""
  return [r.name for r in all_runs(exp, ds)
          if checkpoints.latest_step(r.directory(workdir)) != r.num_steps  # else it holds checkpoints
          or checkpoints.record_diff(r.directory(workdir), r.record)]


# --- evaluation -----------------------------------------------------------------------------------------

def evaluate(exp: Experiment, workdir: str, train_missing: bool = True, retrain: bool = False,
             gate: tuple[Gate, Any] | None = None) -> GridResult:
  """Train what is missing (with `train_missing`; `retrain` as in `train_all`), run the grid, write
  grid.json/npz, tables and figures. With `gate` = (Gate, detector params), every purifier is also measured as
  detect, then purify (the detection experiment passes its detector)."""
  workdir = workdir_lib.claim(workdir, "purify", create=train_missing)
  ds = data_lib.load_dataset(exp.data)
  missing = missing_checkpoints(exp, workdir, ds)
  if missing and train_missing:
    log.warning("grid: checkpoints missing, unfinished or made by another config in %s: %s; training them first",
                workdir, ", ".join(missing))
    train_all(exp, workdir, retrain=retrain, ds=ds)
  cls_params, stacks = load_trained(exp, workdir, ds)  # before anything is written
  return grid_report(exp, workdir, ds, cls_params, stacks, gate)


def format_result(result: GridResult) -> str:
  """The grid as evaluate.py prints it."""
  return report.format_grid(result)


def replot(workdir: str) -> list[str]:
  """The tables and figures again from grid.json and grid.npz (evaluate.py --plot-only)."""
  return report.render(GridResult.load(workdir), workdir)


def grid_report(exp: Experiment, workdir: str, ds: data_lib.Dataset, cls_params, stacks: dict[VQKind, Any],
                gate: tuple[Gate, Any] | None = None) -> GridResult:
  """The grid of loaded models (`load_trained`'s) on `ds`'s test set, and its files in `workdir`."""
  images, labels = ds.test_images, ds.test_labels
  mesh = parallel.make_mesh(exp.parallel.model_devices)
  # The network purifier (eval.purifiers lists it) from its finished checkpoint, before anything is computed.
  network = None if exp.network is None else (network_purifier(exp), load_network(exp, workdir, ds))
  t0 = time.perf_counter()
  result = grid_lib.run_grid(exp.vq, exp.attack, exp.eval.purifiers, exp.grid, exp.parallel.grid_model_axis,
                             exp.seed, cls_params, stacks, images, labels, mesh,
                             grid_lib.Measure(exp.classifier_model, exp.eval.counting, exp.eval.save_predictions),
                             gate=gate, network=network)
  wall = time.perf_counter() - t0
  pair = {kind: result.best_size.get(kind, exp.vq.codebook_sizes[0]) for kind in ("no_split", "split")}
  result = dataclasses.replace(
      result, num_test_images=int(len(images)),
      classifier_clean_accuracy=classifier.accuracy(cls_params, images, labels, model=exp.classifier_model),
      figure=reconstruction_figure(exp, cls_params, stacks, pair, images, labels, network),
      run=dict(grid_wall_time_s=round(wall, 2), device=str(jax.devices()[0].device_kind),
               backend=jax.default_backend(), num_devices=jax.device_count(), mesh=dict(mesh.shape),
               model_axis=exp.parallel.grid_model_axis, jax_version=jax.__version__),
      config=exp.config)
  if jax.process_index() == 0:  # on several hosts, one process writes the outputs
    report.save(result, workdir)
  return result


@functools.partial(jax.jit, static_argnums=(0, 1))
def _figure_rows(purifiers: tuple[Purifier, ...], cls_model: classifier.Classifier, cls_params, no_split_vars,
                 split_vars, x, y, eps_F):
  x_adv = attacks.fgsm(classifier.logits_fn(cls_params, cls_model), x, y, eps_F)   # (F, n, H, W, 1)
  purified = apply_all(purifiers, no_split_vars, split_vars, x_adv.reshape((-1,) + x.shape[1:]))
  rows = [jnp.broadcast_to(x[None], x_adv.shape), x_adv] + [p.reshape(x_adv.shape) for p in purified]
  return jnp.stack(rows, axis=1)                                        # (F, rows, n, H, W, 1)



def reconstruction_figure(exp: Experiment, cls_params, stacks, pair: dict[str, int], images, labels,
                          network: tuple[ModulePurifier, Any] | None = None) -> Figure | None:
  """The first eval.figure_examples test images: clean, grey-box FGSM at eval.figure_epsilons, each purifier's
  output, with the No-Split and Split sizes of `pair`, and the `network` purifier's (the restorer) last. None
  when the config asks for no figure."""
  n = min(exp.eval.figure_examples, len(images))
  if not n or not exp.eval.figure_epsilons:
    return None
  sizes = list(exp.vq.codebook_sizes)
  no_split, split = (parallel.take(stacks[kind], sizes.index(pair[name]))
                     for kind, name in zip(exp.vq.paper_kinds, ("no_split", "split")))
  purifiers = grid_lib.make_purifiers(exp.vq, exp.eval.purifiers)
  images_F = _figure_rows(purifiers, exp.classifier_model, cls_params, no_split, split, images[:n], labels[:n],
                          jnp.asarray(exp.eval.figure_epsilons, jnp.float32))
  rows = ("clean", "adversarial") + tuple(p.name for p in purifiers)
  if network is not None:
    pur, params = network
    adv = images_F[:, 1]                                                 # (F, n, H, W, 1)
    restored = _purify(pur, params, adv.reshape((-1,) + adv.shape[2:])).reshape(adv.shape)
    images_F, rows = jnp.concatenate([images_F, restored[:, None]], axis=1), rows + (pur.label,)
  return Figure(rows, exp.eval.figure_epsilons, pair["no_split"], pair["split"], np.asarray(images_F))
