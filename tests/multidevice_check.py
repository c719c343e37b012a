"""Run by test_multidevice.py in a subprocess with 4 CPU devices (XLA_FLAGS must be set before jax starts).

Trains the tiny config's sweep on a 1-device mesh and on a 4-device 'model' mesh, runs the grid on meshes
(model × batch) 1×1, 1×4, 2×2 and 4×1, and prints the largest differences as JSON.
Usage: python tests/multidevice_check.py DATA_DIR WORKDIR
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from conftest import tiny  # noqa: E402
from vqdefense_jax import data as data_lib  # noqa: E402
from vqdefense_jax import attacks, experiment, grid, parallel, training  # noqa: E402


def main(data_dir: str, workdir: str) -> None:
  devices = jax.devices()
  c = tiny(data_dir)
  c.vqvae.codebook_sizes = (3, 4, 6, 8)
  ds = data_lib.load_dataset(c.data)
  task = experiment.vqvae_task(c, "split", len(ds.train_images))
  inits = [experiment.vqvae_init(c, task, "split", s) for s in c.vqvae.codebook_sizes]
  names = tuple(str(s) for s in c.vqvae.codebook_sizes)
  swept = {}
  for n_dev in (1, 4):
    mesh = parallel.make_mesh(n_dev, devices[:n_dev])
    ts = training.train(task, inits, ds.train_images, ds.train_labels, ckpt_dir=os.path.join(workdir, f"sweep{n_dev}"),
                        name=f"sweep on {n_dev}", sweep=training.Sweep(names, "map", mesh))
    swept[n_dev] = jax.device_get(ts)
    shards = {len(leaf.sharding.device_set) for leaf in jax.tree.leaves(ts)}
    assert shards == {n_dev}, (n_dev, shards)
  train_diff = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(swept[1]), jax.tree.leaves(swept[4]))
                   if np.issubdtype(np.asarray(a).dtype, np.floating))

  experiment.train_all(c, os.path.join(workdir, "run"))
  cls, stacks = experiment.load_trained(c, os.path.join(workdir, "run"), len(ds.train_images))
  purifiers = grid.purifiers_of(c)
  # A white-box PGD with a random start: its draws depend on image indices, not on how devices split chunks.
  attack_list = (attacks.Attack("fgsm"), attacks.Attack("ste_pgd", steps=2))
  out = {}
  for model, batch in ((1, 1), (1, 4), (2, 2), (4, 1)):
    mesh = parallel.make_mesh(model, devices[:model * batch])
    und, acc, timing = grid.run_counts(purifiers, "map", mesh, cls, stacks["no_split"], stacks["split"],
                                       ds.test_images, ds.test_labels, c.attack.epsilons, 16,
                                       attack_list=attack_list, seed=3)
    out[f"{model}x{batch}"] = dict(undefended=und.tolist(), accuracy=acc.tolist(), chunk=timing["chunk_size"])
  print(json.dumps(dict(device_count=jax.device_count(), train_max_abs_diff=train_diff, grid=out)))


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2])
