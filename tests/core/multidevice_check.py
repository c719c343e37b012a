"""Run by test_multidevice.py in a subprocess with 4 CPU devices (XLA_FLAGS must be set before jax starts).

Trains the tiny config's sweep on a 1-device mesh and on a 4-device 'model' mesh, a classifier data-parallel on 1
and on 4 devices, runs the grid on meshes (model × batch) 1×1, 1×4, 2×2 and 4×1, and prints the largest differences
as JSON.
Usage: python tests/multidevice_check.py DATA_DIR WORKDIR
"""

import json
import os
import sys

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [TESTS, os.path.dirname(TESTS)]  # conftest, and the repository

import jax  # noqa: E402
import numpy as np  # noqa: E402

from support import tiny  # noqa: E402
from vqdefense_jax.core import data as data_lib  # noqa: E402
from vqdefense_jax.core import attacks, classifier, parallel, training  # noqa: E402
from vqdefense_jax.purify import experiment, grid  # noqa: E402
from vqdefense_jax.purify.purifiers import VQParams  # noqa: E402


def main(data_dir: str, workdir: str) -> None:
  devices = jax.devices()
  c = tiny(data_dir)
  c.vqvae.codebook_sizes = (3, 4, 6, 8)
  exp = experiment.Experiment.from_config(c)
  ds = data_lib.load_dataset(exp.data)
  n = len(ds.train_images)
  kind = exp.vq.kind(2)
  step = experiment.vqvae_step(exp, kind, n)
  inits = [experiment.vqvae_init(exp, step, kind, s) for s in exp.vq.codebook_sizes]
  names = tuple(str(s) for s in exp.vq.codebook_sizes)
  swept = {}
  for n_dev in (1, 4):
    mesh = parallel.make_mesh(n_dev, devices[:n_dev])
    ts = training.fit(step, lambda: parallel.stack([f() for f in inits]),
                      training.IndexBatches(step.seed, n, exp.vqvae_schedule.batch_size),
                      num_steps=exp.vqvae_schedule.num_steps(n), ckpt_dir=os.path.join(workdir, f"sweep{n_dev}"),
                      name=f"sweep on {n_dev}", consts=(ds.train_images, ds.train_labels, None),
                      sweep=training.Sweep(names, "map", mesh))
    swept[n_dev] = jax.device_get(ts)
    shards = {len(leaf.sharding.device_set) for leaf in jax.tree.leaves(ts)}
    assert shards == {n_dev}, (n_dev, shards)
  train_diff = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(swept[1]), jax.tree.leaves(swept[4]))
                   if np.issubdtype(np.asarray(a).dtype, np.floating))

  # Data-parallel training (every run of detection and restoration): each batch split over 4 devices, against
  # the same run on one. The classifier's dropout draws must not depend on the split (partitionable threefry).
  cls_step = training.SupervisedStep(classifier.ClassifierLoss(exp.classifier_model),
                                     training.OptimizerSpec("adam", 1e-3), seed=5)
  data = {}
  for mesh in (parallel.data_mesh(16, devices[:1]), parallel.data_mesh(16)):
    ts = training.fit(cls_step, lambda: cls_step.init(classifier.init_params(5, exp.data.image_size), {}),
                      training.IndexBatches(5, n, 16), num_steps=8, ckpt_dir=os.path.join(workdir, f"dp{mesh.size}"),
                      name=f"data-parallel on {mesh.size}", consts=(ds.train_images, ds.train_labels, None),
                      data_parallel=mesh)
    data[mesh.shape["batch"]] = jax.device_get(ts)
  data_diff = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(data[1]), jax.tree.leaves(data[4]))
                  if np.issubdtype(np.asarray(a).dtype, np.floating))

  experiment.train_all(exp, os.path.join(workdir, "run"))
  cls, stacks = experiment.load_trained(exp, os.path.join(workdir, "run"), ds)
  params = VQParams(stacks[exp.vq.kind(1)], stacks[exp.vq.kind(2)])
  purifiers = grid.make_purifiers(exp.vq, exp.eval.purifiers)
  # A white-box PGD with a random start: its draws depend on image indices, not on how devices split chunks.
  attack_list = (attacks.Attack("fgsm"), attacks.Attack("ste_pgd", steps=2))
  out = {}
  for model, batch in ((1, 1), (1, 4), (2, 2), (4, 1)):
    mesh = parallel.make_mesh(model, devices[:model * batch])
    und, acc, timing, (clean, pred_und, pred), _ = grid.run_counts(
        purifiers, "map", mesh, cls, params, ds.test_images, ds.test_labels,
        c.attack.epsilons, 16, attack_list=attack_list, seed=3,
        measure=grid.Measure(counting="clean_and_final", predictions=True))
    out[f"{model}x{batch}"] = dict(undefended=und.tolist(), accuracy=acc.tolist(), chunk=timing["chunk_size"],
                                   labels=ds.test_labels.tolist(), clean=clean.tolist(),
                                   pred_undefended=pred_und.tolist(), predictions=pred.tolist())
  print(json.dumps(dict(device_count=jax.device_count(), train_max_abs_diff=train_diff,
                        data_parallel_max_abs_diff=data_diff, data_parallel_devices=sorted(data), grid=out)))


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2])
