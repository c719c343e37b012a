"""Benchmark: the one-computation grid against a straightforward loop, on the same data and weights.

  python benchmarks/grid_vs_loop.py                                  # paper model, 3 sizes, 500 images
  python benchmarks/grid_vs_loop.py --sizes 100,200,300,400,500,600,700,800,900,1000 --num-images 10000
  python benchmarks/grid_vs_loop.py --workdir runs/paper --num-images 10000   # trained checkpoints

(a) grid: `grid.grid_counts`, ONE compiled call over every ε, codebook size,
    purifier and test chunk (once per --model-axis strategy);
(b) loop: one jitted call per (codebook size, ε, test batch), each computing
    FGSM at that ε, every purifier and the undefended prediction.
Both must give identical counts (checked). Prints, per variant: compile time,
run time, wall time (compile + run), images × configurations per second
(configurations = ε × (codebook sizes × purifiers + undefended)) and peak
memory (device peak on GPU/TPU; process peak RSS on CPU). Without --workdir the
weights are random (each size its own init), which costs the same as trained
weights. The last line is the whole record as JSON.
"""

import argparse
import datetime
import functools
import json
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from vqdefense_jax.core import attacks, classifier, parallel  # noqa: E402
from vqdefense_jax.core import config as config_lib  # noqa: E402
from vqdefense_jax.core import data as data_lib  # noqa: E402
from vqdefense_jax.purify import experiment, grid  # noqa: E402
from vqdefense_jax.purify.purifiers import VQParams, apply_all  # noqa: E402


@functools.partial(jax.jit, static_argnums=0)
def loop_step(purifiers, cls_params, no_split, split, x_BxHxWx1, y_B, w_B, eps):
  """One (codebook size, ε, batch) cell: FGSM at this ε, the undefended and every purifier's counts."""
  f = classifier.logits_fn(cls_params)
  x_adv = attacks.fgsm(f, x_BxHxWx1, y_B, eps[None])[0]
  correct = lambda images: jnp.sum((jnp.argmax(f(images), -1) == y_B) * w_B)
  return correct(x_adv), jnp.stack([correct(out) for out in apply_all(purifiers, VQParams(no_split, split), x_adv)])


def peak_memory_mb() -> tuple[float, str]:
  stats = jax.devices()[0].memory_stats() if jax.default_backend() != "cpu" else None
  if stats and "peak_bytes_in_use" in stats:
    return stats["peak_bytes_in_use"] / 2**20, "device peak_bytes_in_use"
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process peak RSS (includes everything so far)"


def random_weights(exp, sizes):
  """Classifier and stacks of both kinds, one init per size (different seeds), as trained ones would be shaped."""
  side = exp.data.image_size
  cls = classifier.init_params(0, side)
  example = lambda kind: jnp.zeros((1, side // kind.tiles, side // kind.tiles, 1), jnp.float32)
  stacks = {kind: parallel.stack([exp.vq.model.init(jax.random.key(1 + i), example(kind), s)
                                  for i, s in enumerate(sizes)]) for kind in exp.vq.paper_kinds}
  return cls, stacks


def main(argv):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", default="configs/purify/paper.py")
  p.add_argument("--workdir", default="", help="trained checkpoints of --config (default: random weights)")
  p.add_argument("--sizes", default="100,500,1000", help="codebook sizes (ignored with --workdir)")
  p.add_argument("--num-images", type=int, default=500, help="first n test images")
  p.add_argument("--model-axis", default="map,vmap", help="grid strategies to time")
  p.add_argument("--chunk-size", type=int, default=0, help="grid chunk (default: config, else per backend)")
  p.add_argument("--loop-batch", type=int, default=250, help="loop batch")
  p.add_argument("--skip-loop", action="store_true", help="time the grid only")
  args = p.parse_args(argv)

  overrides = [] if args.workdir else [f"vqvae.codebook_sizes={args.sizes}"]
  c = config_lib.load(args.config, tuple(overrides) + (f"data.test_subset={args.num_images}",))
  exp = experiment.Experiment.from_config(c)
  ds = data_lib.load_dataset(exp.data)
  images, labels = ds.test_images, ds.test_labels
  sizes = list(exp.vq.codebook_sizes)
  if args.workdir:
    cls, stacks = experiment.load_trained(exp, args.workdir, ds)
  else:
    cls, stacks = random_weights(exp, sizes)
  params = VQParams(stacks[exp.vq.kind(1)], stacks[exp.vq.kind(exp.vq.split_k)])
  eps = list(exp.attack.epsilons)
  purifiers = grid.make_purifiers(exp.vq, exp.eval.purifiers)
  n, e, m, pn = len(images), len(eps), len(sizes), len(purifiers)
  configs = e * (m * pn + 1)
  record = dict(date=datetime.date.today().isoformat(), device=jax.devices()[0].device_kind,
                backend=jax.default_backend(), device_count=jax.device_count(), jax_version=jax.__version__,
                command="python benchmarks/grid_vs_loop.py " + " ".join(argv), num_images=n, epsilons=e,
                codebook_sizes=sizes, purifiers=[q.name for q in purifiers], configurations=configs,
                weights="trained" if args.workdir else "random", variants=[])
  print(f"{n} images × {e} ε × ({m} sizes × {pn} purifiers + undefended) = {n * configs:,} image×configurations on "
        f"{record['device']} ({record['backend']})", flush=True)

  mesh = parallel.make_mesh(1, jax.devices()[:1])
  chunk = args.chunk_size or exp.grid.chunk_size  # 0: grid.default_chunk_size() for this backend
  reference = None
  for axis in args.model_axis.split(","):
    und_AxE, acc_MxAxPxE, t, _, _ = grid.run_counts(purifiers, axis, mesh, cls, params, images, labels, eps,
                                                    chunk)  # the paper's attack only: A = 1
    und, acc = und_AxE[0], acc_MxAxPxE[:, 0]
    wall = t["compile_s"] + t["run_s"]
    mem, mem_kind = peak_memory_mb()
    record["variants"].append(dict(name=f"grid ({axis})", compile_s=round(t["compile_s"], 2),
                                   run_s=round(t["run_s"], 2), wall_s=round(wall, 2), chunk=t["chunk_size"],
                                   rate=round(n * configs / t["run_s"], 1),
                                   rate_incl_compile=round(n * configs / wall, 1), peak_mb=round(mem), mem=mem_kind))
    print(json.dumps(record["variants"][-1]), flush=True)
    if reference is None:
      reference = (und, acc)
    else:
      np.testing.assert_allclose(acc, reference[1], atol=2 / n, err_msg=f"grid ({axis}) differs")

  if not args.skip_loop:
    bs = grid.balanced_chunk(n, args.loop_batch)  # no more padding than needed
    correct_u, correct_MxPxE = np.zeros(e), np.zeros((m, pn, e))
    t0 = time.perf_counter()
    first = None
    for i in range(m):
      no_split, split = parallel.take(params.no_split, i), parallel.take(params.split, i)
      for j, eps_j in enumerate(eps):
        for start in range(0, n, bs):
          x, y, w, _ = (a[0] for a in grid.chunked(images[start:start + bs], labels[start:start + bs], bs))
          u, cp = loop_step(purifiers, cls, no_split, split, x, y, w, jnp.float32(eps_j))
          u, cp = np.asarray(u), np.asarray(cp)  # wait for each call, as a loop collecting results would
          if first is None:
            first = time.perf_counter() - t0
          correct_MxPxE[i, :, j] += cp
          if i == 0:
            correct_u[j] += u
    wall = time.perf_counter() - t0
    mem, mem_kind = peak_memory_mb()
    record["variants"].append(dict(name="loop", compile_s=round(first, 2), run_s=round(wall - first, 2),
                                   wall_s=round(wall, 2), batch=bs, calls=m * e * -(-n // bs),
                                   rate=round(n * configs / (wall - first), 1),
                                   rate_incl_compile=round(n * configs / wall, 1), peak_mb=round(mem), mem=mem_kind))
    print(json.dumps(record["variants"][-1]), flush=True)
    np.testing.assert_allclose(correct_u / n, reference[0], atol=2 / n, err_msg="loop and grid differ (undefended)")
    np.testing.assert_allclose(correct_MxPxE / n, reference[1], atol=2 / n, err_msg="loop and grid differ")
    record["loop_equals_grid"] = True

  print(f"\n{'variant':<14}{'compile s':>10}{'run s':>9}{'wall s':>9}{'img×cfg/s':>11}{'incl. compile':>15}"
        f"{'peak MB':>9}")
  for v in record["variants"]:
    print(f"{v['name']:<14}{v['compile_s']:>10.1f}{v['run_s']:>9.1f}{v['wall_s']:>9.1f}{v['rate']:>11,.0f}"
          f"{v['rate_incl_compile']:>15,.0f}{v['peak_mb']:>9,}")
  print(json.dumps(record))


if __name__ == "__main__":
  main(sys.argv[1:])
