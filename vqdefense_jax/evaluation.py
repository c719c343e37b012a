"""Attack → purify → classify, over the whole ε vector: per codebook size, or as one grid.

`evaluate` (the core evaluation, the paper's setting: grey-box FGSM on
clean-trained VQ-VAEs): per codebook size and test batch, one jitted
call (one gradient, every ε, every purifier); the batch is padded to a fixed
size so it compiles once. Writes results.json, results.csv,
accuracy_vs_eps.png and reconstructions.png.

`evaluate_grid` (`evaluate.py --grid`): every attack (grey- and white-box),
training mode, codebook size of both kinds, purifier and ε, the whole test set
as ONE compiled computation (grid.py; finer splits add one call per k); writes
grid.json, grid.npz, tables and figures (report.py).

Outputs are written only after the whole evaluation succeeded.
"""

import csv
import functools
import logging
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from vqdefense_jax import attacks
from vqdefense_jax import config as config_lib
from vqdefense_jax import data as data_lib
from vqdefense_jax import experiment
from vqdefense_jax import grid
from vqdefense_jax import parallel
from vqdefense_jax import plots
from vqdefense_jax import report
from vqdefense_jax.errors import VQDefenseError
from vqdefense_jax.models import Classifier
from vqdefense_jax.purifiers import apply_all, make_purifier

log = logging.getLogger(__name__)
THREAT_MODEL = attacks.describe(attacks.Attack("fgsm"))  # the per-size evaluation runs the paper's attack only


def logits_fn(cls_params):
  return lambda x: Classifier().apply({"params": cls_params}, x)


@functools.partial(jax.jit, static_argnames=("purifiers",))
def eval_batch(purifiers: tuple, cls_params, no_split_vars, split_vars, x_BxHxWx1, y_B, w_B, eps_E):
  """Correct-prediction counts (P, E) for one batch: one FGSM gradient serves every ε.

  `purifiers` is a tuple of hashable `Purifier`s; `w_B` masks padding rows.
  """
  f = logits_fn(cls_params)
  x_adv = attacks.fgsm(f, x_BxHxWx1, y_B, eps_E)                # (E, B, H, W, 1)
  flat = x_adv.reshape((-1,) + x_BxHxWx1.shape[1:])
  rows = []
  for purified in apply_all(purifiers, no_split_vars, split_vars, flat):
    pred_EB = jnp.argmax(f(purified), -1).reshape(x_adv.shape[:2])
    rows.append(jnp.sum((pred_EB == y_B[None]) * w_B[None], axis=1))
  return jnp.stack(rows)


def make_purifiers(c) -> tuple:
  model = experiment.vqvae_model(c)
  return tuple(make_purifier(name, model, model, c.vqvae.split_k) for name in c.eval.purifiers)


def accuracy_table(c, cls_params, no_split_vars, split_vars, images, labels, desc="") -> np.ndarray:
  """Accuracy (P, E) over the given test images, streamed in padded batches."""
  purifiers = make_purifiers(c)
  eps = jnp.asarray(c.attack.epsilons, jnp.float32)
  bs = min(c.eval.batch_size, len(images))
  correct = np.zeros((len(purifiers), len(eps)), np.int64)
  for i in tqdm(range(0, len(images), bs), desc=desc, unit="batch", dynamic_ncols=True):
    x, y = images[i:i + bs], labels[i:i + bs]
    pad = bs - len(x)
    w = np.concatenate([np.ones(len(x), np.int32), np.zeros(pad, np.int32)])
    x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)])
    y = np.concatenate([y, np.zeros(pad, y.dtype)])
    correct += np.asarray(eval_batch(purifiers, cls_params, no_split_vars, split_vars, x, y, w, eps))
  return correct / len(images)


@functools.partial(jax.jit, static_argnames=("purifiers",))
def _figure_images(purifiers, cls_params, no_split_vars, split_vars, x, y, eps_F):
  x_adv = attacks.fgsm(logits_fn(cls_params), x, y, eps_F)   # (F, n, H, W, 1)
  shown = tuple(p for p in purifiers if p.name != "none")
  purified = apply_all(shown, no_split_vars, split_vars, x_adv.reshape((-1,) + x.shape[1:]))
  rows = [jnp.broadcast_to(x[None], x_adv.shape), x_adv] + [p.reshape(x_adv.shape) for p in purified]
  return jnp.stack(rows, axis=1)                              # (F, rows, n, H, W, 1)


def reconstruction_figure(c, cls_params, no_split_vars, split_vars, images, labels) -> np.ndarray | None:
  """The first eval.figure_examples test images: clean, grey-box FGSM at eval.figure_epsilons, each purifier's output.

  None when the config asks for no figure.
  """
  n = min(c.eval.figure_examples, len(images))
  if not n or not len(c.eval.figure_epsilons):
    return None
  eps_F = jnp.asarray(c.eval.figure_epsilons, jnp.float32)
  return np.asarray(_figure_images(make_purifiers(c), cls_params, no_split_vars, split_vars, images[:n], labels[:n],
                                   eps_F))


def evaluate(c, workdir: str) -> dict:
  """Load every checkpoint, attack, purify, classify; write results and figures; return the results."""
  config_lib.validate(c)
  beyond = [f"{key}={value}" for key, value, paper in (
      ("attack.names", tuple(c.attack.names), ("fgsm",)), ("vqvae.training", tuple(c.vqvae.training), ("clean",)),
      ("vqvae.split_ks", tuple(c.vqvae.split_ks), ())) if value != paper]
  if beyond:
    raise VQDefenseError(f"evaluate.py without --grid measures the paper's setting only (grey-box FGSM, clean "
                         f"training, split_k tiles); run `evaluate.py --grid` for {', '.join(beyond)}")
  workdir = experiment.prepare_workdir(workdir)
  ds = data_lib.load_dataset(c.data)
  cls_params, vq = experiment.load_trained(c, workdir, len(ds.train_images))  # before anything is written
  images, labels = ds.test_images, ds.test_labels
  t0 = time.time()
  sizes = list(c.vqvae.codebook_sizes)
  acc_SxPxE = np.stack([
      accuracy_table(c, cls_params, parallel.take(vq["no_split"], i), parallel.take(vq["split"], i), images,
                     labels, desc=f"eval K={size}")
      for i, size in enumerate(sizes)])
  wall = time.time() - t0
  results = dict(
      attack="fgsm", threat_model=THREAT_MODEL, epsilons=[float(e) for e in c.attack.epsilons],
      codebook_sizes=sizes, purifiers=list(c.eval.purifiers), num_test_images=int(len(images)),
      classifier_clean_accuracy=experiment.classifier_accuracy(cls_params, images, labels),
      accuracy={str(s): {p: [float(a) for a in acc_SxPxE[i, j]] for j, p in enumerate(c.eval.purifiers)}
                for i, s in enumerate(sizes)},
      eval_wall_time_s=round(wall, 2), device=str(jax.devices()[0].device_kind), backend=jax.default_backend(),
      jax_version=jax.__version__, config=c.to_dict())

  figure = reconstruction_figure(c, cls_params, parallel.take(vq["no_split"], 0), parallel.take(vq["split"], 0),
                                 images, labels)
  write_results(workdir, results, figure, c)
  return results


def evaluate_grid(c, workdir: str) -> dict:
  """`evaluate.py --grid`: train what is missing, run the whole grid as one computation, write every output."""
  config_lib.validate(c)
  workdir = experiment.prepare_workdir(workdir)
  ds = data_lib.load_dataset(c.data)
  missing = experiment.missing_checkpoints(c, workdir, len(ds.train_images))
  if missing:
    log.warning("grid: checkpoints missing or unfinished in %s: %s; training them first", workdir,
                ", ".join(missing))
    experiment.train_all(c, workdir)
  cls_params, stacks = experiment.load_trained(c, workdir, len(ds.train_images))
  images, labels = ds.test_images, ds.test_labels
  mesh = parallel.make_mesh(c.parallel.model_devices)
  t0 = time.perf_counter()
  results = grid.run_grid(c, cls_params, stacks, images, labels, mesh)
  wall = time.perf_counter() - t0
  results.update(
      num_test_images=int(len(images)),
      classifier_clean_accuracy=experiment.classifier_accuracy(cls_params, images, labels),
      grid_wall_time_s=round(wall, 2), device=str(jax.devices()[0].device_kind), backend=jax.default_backend(),
      num_devices=jax.device_count(), mesh=dict(mesh.shape), model_axis=c.parallel.grid_model_axis,
      jax_version=jax.__version__, config=c.to_dict())

  sizes = list(c.vqvae.codebook_sizes)
  pair = {kind: results["best_size"].get(kind, sizes[0]) for kind in experiment.KINDS}
  figure = reconstruction_figure(c, cls_params, parallel.take(stacks["no_split"], sizes.index(pair["no_split"])),
                                 parallel.take(stacks["split"], sizes.index(pair["split"])), images, labels)
  if figure is not None:
    results["figure"] = dict(rows=["clean", "adversarial"] + [p for p in c.eval.purifiers if p != "none"],
                             epsilons=[float(e) for e in c.eval.figure_epsilons],
                             no_split_size=pair["no_split"], split_size=pair["split"])
  if jax.process_index() == 0:  # on several hosts, one process writes the outputs
    report.save(results, figure, workdir)
  return results


def write_results(workdir: str, results: dict, figure: np.ndarray | None, c) -> None:
  """Write every output to a temporary name first, then move them all into place."""
  final = {name: os.path.join(workdir, name) for name in
           ("results.json", "results.csv", "accuracy_vs_eps.png", "reconstructions.png")}
  tmp = {k: os.path.join(workdir, ".partial-" + k) for k in final}
  try:
    experiment.write_json_atomic(tmp["results.json"], results)
    with open(tmp["results.csv"], "w", newline="") as f:
      w = csv.writer(f)
      w.writerow(["codebook_size", "purifier", "epsilon", "accuracy"])
      for size, per in results["accuracy"].items():
        for p, accs in per.items():
          for e, a in zip(results["epsilons"], accs):
            w.writerow([size, p, f"{e:g}", f"{a:.4f}"])
    plots.accuracy_vs_eps(results, tmp["accuracy_vs_eps.png"])
    if figure is not None:
      row_names = ["clean", "adversarial"] + [p for p in results["purifiers"] if p != "none"]
      plots.reconstructions(figure, row_names, list(c.eval.figure_epsilons), results["codebook_sizes"][0],
                            tmp["reconstructions.png"])
  except BaseException:
    for t in tmp.values():
      if os.path.exists(t):
        os.remove(t)
    raise
  for k, t in tmp.items():
    if os.path.exists(t):
      os.replace(t, final[k])


def format_table(results: dict) -> str:
  """A plain-text table per codebook size: rows purifiers, columns ε."""
  eps = results["epsilons"]
  lines = [f"{results['threat_model']}; {results['num_test_images']} test images; "
           f"classifier clean accuracy {results['classifier_clean_accuracy']:.4f}"]
  for size, per in results["accuracy"].items():
    lines.append(f"\ncodebook size {size}   accuracy by ε (pixel units)")
    lines.append(f"{'purifier':<14}" + "".join(f"{e:>7.2f}" for e in eps))
    for p, accs in per.items():
      lines.append(f"{p:<14}" + "".join(f"{a:>7.3f}" for a in accs))
  return "\n".join(lines)
