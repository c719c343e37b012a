"""A purification experiment from config to grid: typed description, training runs, evaluation.

`Experiment.from_config(c)` reads every config section once, through each section's own constructor
(which checks it), before anything is written; below it, functions take the pieces they use.

Workdir layout:
  config.json                     the resolved config of the last accepted training run
  metrics.jsonl                   training metrics, one JSON object per line
  checkpoints/classifier/         orbax CheckpointManager directories, each with record.json: what the model
                                  was made from (purify/runs.py's records); another config's run
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
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vqdefense_jax.core import attacks
from vqdefense_jax.core import classifier
from vqdefense_jax.core import config as config_lib
from vqdefense_jax.core import data as data_lib
from vqdefense_jax.core import defence
from vqdefense_jax.core import experiment as skeleton
from vqdefense_jax.core import parallel
from vqdefense_jax.core import training
from vqdefense_jax.core import workdir as workdir_lib
from vqdefense_jax.core.classifier import Classifier
from vqdefense_jax.core.errors import VQDefenseError
from vqdefense_jax.purify import grid as grid_lib
from vqdefense_jax.purify import interop
from vqdefense_jax.purify import network as network_lib
from vqdefense_jax.purify import report
from vqdefense_jax.purify import runs as runs_lib
from vqdefense_jax.purify.config import base_config
from vqdefense_jax.purify.kinds import VQKind, VQSpec
from vqdefense_jax.core.defence import Gate, ModulePurifier
from vqdefense_jax.purify.purifiers import Purifier, VQParams, apply_all
from vqdefense_jax.purify.results import Figure, GridResult

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
    known = tuple(defence.registered())  # purification's purifiers, then what other systems' imported modules offer
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
  network: network_lib.Network | None        # eval.purifiers lists a network purifier ('restorer')
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
    network = network_lib.Network.from_config(c, data.image_size)
    return cls(seed=c.seed, data=data, classifier=training.Schedule.from_config(c.classifier, "classifier"),
               classifier_model=classifier.from_config(c.classifier), weights=weights,
               vqvae_schedule=training.Schedule.from_config(c.vqvae, "vqvae"),
               vq=vq, attack=attack, eval=evals, grid=grid_lib.GridSpec.from_config(c.grid, attack.epsilons),
               loop=training.LoopSpec.from_config(c.train), parallel=parallel.ParallelSpec.from_config(c.parallel),
               network=network, config=c.to_dict())


# --- training runs --------------------------------------------------------------------------------------

# The runs' records and builders are purify/runs.py's; these names stay importable from here.
_common_record, classifier_record = runs_lib.common_record, runs_lib.classifier_record
classifier_run, vqvae_runs = runs_lib.classifier_run, runs_lib.vqvae_runs
vqvae_step, vqvae_init, checkpoint_name = runs_lib.vqvae_step, runs_lib.vqvae_init, runs_lib.checkpoint_name
network_purifier, load_network = network_lib.network_purifier, network_lib.load_network


def all_runs(exp: Experiment, ds: data_lib.Dataset) -> list[skeleton.Run]:
  """Every run of the experiment in training order: the classifier, each VQ-VAE kind, then the network purifier."""
  return ([classifier_run(exp, ds)] + [r for kind in exp.vq.kinds for r in vqvae_runs(exp, kind, ds)]
          + ([network_lib.network_run(exp, ds)] if exp.network is not None else []))


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
  metrics = skeleton.prepare(workdir, exp.config, runs, retrain, lead)
  # On the device once for every model (fit would otherwise copy it per model).
  train_xy = (jnp.asarray(ds.train_images), jnp.asarray(ds.train_labels))
  summary = {}

  run = runs[0]
  cls_params = skeleton.fit_run(run, workdir, (*train_xy, None), metrics, exp.loop, stop_at).params
  acc = classifier.accuracy(cls_params, ds.test_images, ds.test_labels, model=exp.classifier_model)
  summary["classifier"] = {"test_accuracy": acc}
  log.info("classifier: clean test accuracy %.4f (%d test images)", acc, len(ds.test_images))

  for run in runs[1:]:
    if exp.network is not None and run.name == exp.network.name:
      summary[run.name] = network_lib.train_network(exp, run, workdir, ds, cls_params, metrics, stop_at)
      continue
    extra = cls_params if "classifier" in run.needs else None  # the classifier its training inputs attack
    states = runs_lib.unstack(run, skeleton.fit_run(run, workdir, (*train_xy, extra), metrics, exp.loop, stop_at))
    for name, ts in zip(run.model_names, states):
      m = runs_lib.vqvae_test_metrics(exp.vq.model, {"params": ts.params, "codebook": ts.state},
                                      run.record["tiles"], ds.test_images)
      summary[name] = m
      log.info("%s: test recon MSE %.5f (clean input), perplexity %.1f, dead codes %.1f%%", name,
               m["recon_mse"], m["perplexity"], 100 * m["dead_code_share"])
  metrics.rewrite(lambda row: not (row.get("subset") == "test" and row.get("model") in summary))  # a re-run's
  metrics.write([{"model": name, "subset": "test", **m} for name, m in summary.items()])
  return summary


def load_trained(exp: Experiment, workdir: str, ds: data_lib.Dataset) -> tuple[Any, dict[VQKind, Any]]:
  """Classifier params and {kind: stacked variables of every codebook size} from finished checkpoints.

  The training set `ds` fixes the step counts the checkpoints must have reached, and is part of their record.
  """
  workdir = os.path.abspath(workdir)
  cls_params = skeleton.load(classifier_run(exp, ds), workdir).params
  stacks = {}
  for kind in exp.vq.kinds:
    states = [skeleton.load(run, workdir) for run in vqvae_runs(exp, kind, ds)]
    ts = states[0] if exp.loop.sweep else parallel.stack(states)
    stacks[kind] = {"params": ts.params, "codebook": ts.state}
  return cls_params, stacks


def missing_checkpoints(exp: Experiment, workdir: str, ds: data_lib.Dataset) -> list[str]:
  """Names of the checkpoints `load_trained` needs that are absent, unfinished or made by another config."""
  return skeleton.unfinished(all_runs(exp, ds), workdir)


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
  the_gate, gate_params = gate if gate is not None else (None, None)
  defences = grid_lib.vqvae_defences(exp.vq, exp.eval.purifiers, stacks, the_gate) + ([network] if network else [])
  t0 = time.perf_counter()
  result = grid_lib.run_grid(exp.vq, exp.attack, exp.grid, exp.parallel.grid_model_axis, exp.seed, cls_params,
                             defences, images, labels, mesh,
                             grid_lib.Measure(exp.classifier_model, exp.eval.counting, exp.eval.save_predictions),
                             gate_params=gate_params)
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
def _figure_rows(purifiers: tuple[Purifier, ...], cls_model: classifier.Classifier, cls_params, params: VQParams,
                 x, y, eps_F):
  x_adv = attacks.fgsm(classifier.logits_fn(cls_params, cls_model), x, y, eps_F)   # (F, n, H, W, 1)
  purified = apply_all(purifiers, params, x_adv.reshape((-1,) + x.shape[1:]))
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
  images_F = _figure_rows(purifiers, exp.classifier_model, cls_params, VQParams(no_split, split), images[:n],
                          labels[:n], jnp.asarray(exp.eval.figure_epsilons, jnp.float32))
  rows = ("clean", "adversarial") + tuple(p.name for p in purifiers)
  if network is not None:
    pur, params = network
    adv = images_F[:, 1]                                                 # (F, n, H, W, 1)
    restored = network_lib.purify_with(pur, params, adv.reshape((-1,) + adv.shape[2:])).reshape(adv.shape)
    images_F, rows = jnp.concatenate([images_F, restored[:, None]], axis=1), rows + (pur.label,)
  return Figure(rows, exp.eval.figure_epsilons, pair["no_split"], pair["split"], np.asarray(images_F))
