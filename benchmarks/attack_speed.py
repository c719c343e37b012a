"""Benchmark: multi-step attacks in the grid, on issue 15's workload, by test-chunk size.

  python benchmarks/attack_speed.py                           # the authors' weights (../shared/authors)
  python benchmarks/attack_speed.py --chunks 8,32 --num-images 500

The workload issue 15 timed against a reference library (59 s on a 2-core CPU): the paper authors' classifier
and 768-code No-Split and 4-Split VQ-VAEs (imported into a temporary workdir; random weights of the same shape
with --random), the first --num-images test images at ε = 0.1, 0.2, 0.3, grey-box PGD, BPDA-PGD and
straight-through PGD (10 steps of 0.25·ε, one random start), the No-Split and 4-Split purifiers: one
`grid.run_counts` call per chunk size. Prints compile and run seconds per chunk size; all chunk sizes must
count the same (checked). The last line is the record as JSON. Results: benchmarks/README.md.
"""

import argparse
import datetime
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from vqdefense_jax.core import attacks, parallel  # noqa: E402
from vqdefense_jax.core import config as config_lib  # noqa: E402
from vqdefense_jax.core import data as data_lib  # noqa: E402
from vqdefense_jax.purify import experiment, grid  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--chunks", default="8,32", help="test images per scan step, comma-separated")
  p.add_argument("--num-images", type=int, default=500)
  p.add_argument("--random", action="store_true", help="random weights of the same shape (no authors' folder)")
  args = p.parse_args()
  c = config_lib.load(os.path.join(HERE, "..", "configs", "purify", "authors.py"))
  c.data.test_subset = args.num_images
  c.attack.epsilons = (0.1, 0.2, 0.3)
  c.grid.best_eps_max = 0.3
  c.weights.torch_dir = os.path.join(HERE, "..", "..", "shared", "authors")
  if args.random:
    c.weights.source = "train"
  exp = experiment.Experiment.from_config(c)
  ds = data_lib.load_dataset(exp.data)
  if args.random:
    from benchmarks.grid_vs_loop import random_weights  # pylint: disable=g-import-not-at-top
    cls, stacks = random_weights(exp, exp.vq.codebook_sizes)
    no_split, split = (stacks[kind] for kind in exp.vq.paper_kinds)
  else:
    with tempfile.TemporaryDirectory() as workdir:
      for run in experiment.all_runs(exp, ds):
        experiment._import(run, workdir)  # pylint: disable=protected-access
      cls, models = experiment.load_trained(exp, workdir, ds)
    no_split, split = (models[kind] for kind in exp.vq.paper_kinds)
  attack_list = tuple(attacks.Attack(n, steps=10) for n in ("pgd", "bpda_pgd", "ste_pgd"))
  purifiers = grid.make_purifiers(exp.vq, ("no_split", "split"))
  mesh = parallel.make_mesh(1, jax.devices()[:1])
  rows, first = [], None
  for chunk in (int(v) for v in args.chunks.split(",")):
    und, acc, t, _ = grid.run_counts(purifiers, "map", mesh, cls, no_split, split, ds.test_images, ds.test_labels,
                                     c.attack.epsilons, chunk, attack_list=attack_list, seed=0,
                                     measure=grid.Measure(exp.classifier_model))
    if first is None:
      first = (und, acc)
    elif not (np.array_equal(und, first[0]) and np.array_equal(acc, first[1])):
      sys.exit(f"chunk {chunk} counted differently from chunk {rows[0]['chunk']}")
    rows.append(dict(chunk=chunk, compile_s=round(t["compile_s"], 1), run_s=round(t["run_s"], 1)))
    print(f"chunk {chunk:>4}: compile {t['compile_s']:.1f} s, run {t['run_s']:.1f} s", flush=True)
  print(json.dumps(dict(date=datetime.date.today().isoformat(), device=jax.devices()[0].device_kind,
                        backend=jax.default_backend(), jax=jax.__version__, num_images=args.num_images,
                        weights="random" if args.random else "authors", rows=rows,
                        accuracy_worst_case_eps0_2=dict(zip(("no_split", "split"),
                                                            np.round(first[1][0, -1, :, 1], 3).tolist())))))


if __name__ == "__main__":
  main()
