"""Benchmark: the attacks in the grid against the PyTorch reference implementations, on the same work.

  python benchmarks/attack_speed.py                                 # PGD, 500 images, chunk 8
  python benchmarks/attack_speed.py --workload square               # Square, 100 images, ε = 0.1, 5000 queries
  python benchmarks/attack_speed.py --workload autoattack           # AutoAttack's standard suite, 100 images
  python benchmarks/attack_speed.py --workload autoattack --side-by-side --rounds 2

The paper authors' classifier and 768-code No-Split and 4-Split VQ-VAEs (imported into a temporary workdir from
../shared/authors; random weights of the same shape with --random), the first --num-images test images:
  pgd         ε = 0.1, 0.2, 0.3; grey-box PGD, BPDA-PGD and straight-through PGD (10 steps of 0.25·ε, one random
              start); 500 images; one grid call per --chunks value (all must count the same: checked)
  square      Square (Andriushchenko et al. 2020: 5,000 queries, p_init 0.8) against the undefended classifier
              and both purifiers; ε = 0.1, 100 images
  autoattack  AutoAttack's standard L∞ suite (Croce & Hein 2020) with the straight-through gradient, against
              the undefended classifier and both purifiers; ε = 0.1, 100 images
Each is one `grid.run_counts` call; its time counts compilation. With --side-by-side the same workload also
runs on the PyTorch reference (benchmarks/side_by_side.sh: torchattacks' PGD, the AutoAttack authors' Square
and AutoAttack, in a throwaway venv) right after ours, --rounds times in turn, and the script prints each
time and the ratio reference / ours (above 1: ours is faster). The last line is the record as JSON.
Results: benchmarks/README.md.
"""

import argparse
import dataclasses
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from vqdefense_jax.core import attacks, parallel  # noqa: E402
from vqdefense_jax.core import config as config_lib  # noqa: E402
from vqdefense_jax.core import data as data_lib  # noqa: E402
from vqdefense_jax.core import experiment as skeleton  # noqa: E402
from vqdefense_jax.purify import experiment, grid  # noqa: E402
from vqdefense_jax.purify.purifiers import VQParams  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
WORKLOADS = {
    "pgd": dict(num_images=500, eps=(0.1, 0.2, 0.3),
                attacks=tuple(attacks.Attack(n, steps=10) for n in ("pgd", "bpda_pgd", "ste_pgd"))),
    "square": dict(num_images=100, eps=(0.1,), attacks=(attacks.Attack("square", queries=5000, p_init=0.8),)),
    "autoattack": dict(num_images=100, eps=(0.1,), attacks=(attacks.Attack("autoattack", steps=100),)),
}


def load(num_images: int, random: bool):
  """(experiment, dataset, classifier params, No-Split stack, Split stack)."""
  c = config_lib.load(os.path.join(HERE, "..", "configs", "purify", "authors.py"))
  c.data.test_subset = num_images
  c.grid.best_eps_max = 0.3
  c.weights.torch_dir = os.path.join(HERE, "..", "..", "shared", "authors")
  if random:
    c.weights.source = "train"
  exp = experiment.Experiment.from_config(c)
  ds = data_lib.load_dataset(exp.data)
  if random:
    from benchmarks.grid_vs_loop import random_weights  # pylint: disable=g-import-not-at-top
    cls, stacks = random_weights(exp, exp.vq.codebook_sizes)
    return exp, ds, cls, *(stacks[kind] for kind in exp.vq.paper_kinds)
  with tempfile.TemporaryDirectory() as workdir:
    for run in experiment.all_runs(exp, ds):
      skeleton.fit_run(run, workdir, (), None, exp.loop, None)  # imported: converted and saved, not trained
    cls, models = experiment.load_trained(exp, workdir, ds)
  return exp, ds, cls, *(models[kind] for kind in exp.vq.paper_kinds)


def workload_attacks(workload: str, queries: int | None):
  """The workload's attacks, Square's query budget (alone or in the suite) set to `queries` when given."""
  atks = WORKLOADS[workload]["attacks"]
  return atks if queries is None else tuple(dataclasses.replace(a, queries=queries) for a in atks)


def ours(workload: str, num_images: int, eps, chunks, random: bool, queries: int | None = None) -> dict:
  """One grid call per chunk size; seconds (compile + run) and accuracy per purifier and ε."""
  w = dict(WORKLOADS[workload], attacks=workload_attacks(workload, queries))
  exp, ds, cls, no_split, split = load(num_images, random)
  purifiers = grid.make_purifiers(exp.vq, ("no_split", "split"))
  mesh = parallel.make_mesh(1, jax.devices()[:1])
  rows, first = [], None
  for chunk in chunks:
    res = grid.run_counts(purifiers, "map", mesh, cls, VQParams(no_split, split), ds.test_images, ds.test_labels,
                          eps, chunk,
                          attack_list=w["attacks"], seed=0, measure=grid.Measure(exp.classifier_model))
    if first is None:
      first = res
    elif not (np.array_equal(res.undefended, first.undefended) and np.array_equal(res.defended, first.defended)):
      sys.exit(f"chunk {chunk} counted differently from chunk {rows[0]['chunk']}")
    t = res.timing
    rows.append(dict(chunk=t["chunk_size"], compile_s=round(t["compile_s"], 1), run_s=round(t["run_s"], 1),
                     total_s=round(t["compile_s"] + t["run_s"], 1)))
    print(f"ours  {workload}: chunk {t['chunk_size']:>4}: compile {t['compile_s']:.1f} s, run {t['run_s']:.1f} s",
          flush=True)
  names = grid.attack_names(w["attacks"])
  accuracy = {f"{atk}/none": np.round(first.undefended[a], 3).tolist() for a, atk in enumerate(names)}
  accuracy.update({f"{atk}/{p.label}": np.round(first.defended[0, a, i], 3).tolist()
                   for a, atk in enumerate(names) for i, p in enumerate(purifiers)})
  return dict(rows=rows, accuracy=accuracy, seconds=rows[0]["total_s"])


def reference(workload: str, num_images: int, eps, queries: int | None = None) -> dict:
  """benchmarks/side_by_side.sh on the same workload; its JSON record."""
  cmd = ["bash", os.path.join(HERE, "side_by_side.sh"), "--workload", workload, "--num-images", str(num_images),
         "--eps", ",".join(f"{e:g}" for e in eps)] + ([] if queries is None else ["--queries", str(queries)])
  t0 = time.perf_counter()
  out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
  wall = time.perf_counter() - t0
  record = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
  print(f"torch {workload}: {record['total_s']:.1f} s (attacks; {wall:.0f} s with start-up and checks)", flush=True)
  return dict(seconds=record["total_s"], accuracy=record.get("accuracy"), record=record)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--workload", choices=sorted(WORKLOADS), default="pgd")
  p.add_argument("--num-images", type=int, help="default: 500 for pgd, 100 otherwise")
  p.add_argument("--eps", help="comma-separated ε (default: pgd 0.1,0.2,0.3, others 0.1)")
  p.add_argument("--chunks", default="", help="test images per scan step, comma-separated (default: pgd 8; "
                                              "square and autoattack: the grid's default)")
  p.add_argument("--queries", type=int, help="Square's queries per image, alone or in the suite (default: 5000, "
                                             "AutoAttack's standard)")
  p.add_argument("--random", action="store_true", help="random weights of the same shape (no authors' folder)")
  p.add_argument("--side-by-side", action="store_true", help="also run the PyTorch reference, in turn with ours")
  p.add_argument("--rounds", type=int, default=1, help="with --side-by-side: ours then the reference, this often")
  args = p.parse_args()
  w = WORKLOADS[args.workload]
  n = args.num_images or w["num_images"]
  eps = tuple(float(e) for e in args.eps.split(",")) if args.eps else w["eps"]
  chunks = [int(v) for v in args.chunks.split(",")] if args.chunks else ([8] if args.workload == "pgd" else [0])
  runs = []
  for r in range(args.rounds if args.side_by_side else 1):
    mine = ours(args.workload, n, eps, chunks, args.random, args.queries)
    theirs = reference(args.workload, n, eps, args.queries) if args.side_by_side else None
    runs.append(dict(ours_s=mine["seconds"], rows=mine["rows"], accuracy=mine["accuracy"],
                     **(dict(reference_s=theirs["seconds"], reference_accuracy=theirs["accuracy"],
                             reference_record=theirs["record"]) if theirs else {})))
    if theirs:
      print(f"round {r + 1}: ours {mine['seconds']:.1f} s, reference {theirs['seconds']:.1f} s, "
            f"ratio reference/ours {theirs['seconds'] / mine['seconds']:.2f}", flush=True)
  record = dict(date=datetime.date.today().isoformat(), device=jax.devices()[0].device_kind,
                backend=jax.default_backend(), jax=jax.__version__, workload=args.workload, num_images=n,
                eps=list(eps), queries=args.queries or 5000, weights="random" if args.random else "authors", runs=runs)
  if args.side_by_side:
    ratios = [run["reference_s"] / run["ours_s"] for run in runs]
    record["ratio_reference_over_ours"] = dict(each=[round(x, 2) for x in ratios],
                                               median=round(float(np.median(ratios)), 2))
  print(json.dumps(record))


if __name__ == "__main__":
  main()
