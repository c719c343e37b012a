"""The whole ε × codebook size × purifier grid as ONE compiled computation.

`grid_counts` takes the classifier, the stacked variables of every codebook
size of both VQ-VAE kinds (leading model axis M; codebooks padded to K_max),
the whole test set and the ε vector, and returns the number of correct
predictions for every (model, purifier, ε) plus the undefended row. Inside:

  scan over test-set chunks (memory stays bounded by one chunk)
    one FGSM gradient per chunk serves every ε (the sign does not depend on ε)
    over_models (lax.map or vmap, see parallel.py) over the M models
      every purifier; shared first stages are computed once (apply_all)

It runs under `shard_map` on a ('model', 'batch') mesh: each device gets a
slice of the models and of every chunk, and the counts are summed over the
'batch' axis. With one device the mesh is 1×1.

Pipelines pair model i of the No-Split stack with model i of the Split stack.
`grid.pairing = 'best'` instead pairs the best No-Split size with the best
Split size (best = highest mean accuracy over ε <= grid.best_eps_max, the
paper's criterion in Sec. 3.2): a second compiled call on one-model stacks;
the per-size rows then hold no_split and split only.
"""

import functools
import logging
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from tqdm.auto import tqdm

from vqdefense_jax import attacks
from vqdefense_jax import experiment
from vqdefense_jax import parallel
from vqdefense_jax import report
from vqdefense_jax.errors import VQDefenseError
from vqdefense_jax.models import Classifier
from vqdefense_jax.purifiers import Purifier, apply_all, make_purifier

log = logging.getLogger(__name__)
# The progress bar of the running grid; the compiled scan reports each finished chunk to it (host callback).
_progress: dict[str, Any] = {"bar": None}


def _chunk_done(_) -> None:
  if _progress["bar"] is not None:
    _progress["bar"].update(1)


def grid_counts_fn(purifiers: tuple[Purifier, ...], model_axis: str, mesh: Mesh, cls_params, no_split_M,
                   split_M, x_CxBxHxWx1, y_CxB, w_CxB, eps_E):
  """Correct-prediction counts: undefended (E,) and defended (M, P, E) over all chunks C.

  `w_CxB` is 1 for real test images and 0 for padding. M must be a multiple of
  the mesh's 'model' size and B of its 'batch' size (`run_grid` pads both).
  """

  def local(cls_params, no_split_M, split_M, x_CxBxHxWx1, y_CxB, w_CxB, eps_E):
    f = lambda x: Classifier().apply({"params": cls_params}, x)
    e, m, p = eps_E.shape[0], parallel.num_models(no_split_M), len(purifiers)

    def chunk(carry, xyw):
      x_BxHxWx1, y_B, w_B = xyw
      x_adv_ExB = attacks.fgsm(f, x_BxHxWx1, y_B, eps_E)
      flat = x_adv_ExB.reshape((-1,) + x_BxHxWx1.shape[1:])

      def correct_E(images):
        pred_ExB = jnp.argmax(f(images), -1).reshape(x_adv_ExB.shape[:2])
        return jnp.sum((pred_ExB == y_B[None]) * w_B[None], axis=1, dtype=jnp.int32)

      def one_model(no_split, split):
        return jnp.stack([correct_E(out) for out in apply_all(purifiers, no_split, split, flat)])

      undefended_E, defended_MxPxE = carry
      defended = parallel.over_models(one_model, model_axis)(no_split_M, split_M)
      jax.debug.callback(_chunk_done, defended[0, 0, 0])  # after this chunk's results exist
      return (undefended_E + correct_E(flat), defended_MxPxE + defended), None

    init = (jnp.zeros((e,), jnp.int32), jnp.zeros((m, p, e), jnp.int32))
    (undefended_E, defended_MxPxE), _ = jax.lax.scan(chunk, init, (x_CxBxHxWx1, y_CxB, w_CxB))
    return jax.lax.psum(undefended_E, "batch"), jax.lax.psum(defended_MxPxE, "batch")

  batch = P(None, "batch")
  sharded = jax.shard_map(local, mesh=mesh, in_specs=(P(), P("model"), P("model"), batch, batch, batch, P()),
                          out_specs=(P(), P("model")), check_vma=False)
  return sharded(cls_params, no_split_M, split_M, x_CxBxHxWx1, y_CxB, w_CxB, eps_E)


grid_counts = jax.jit(grid_counts_fn, static_argnums=(0, 1, 2))


def default_chunk_size() -> int:
  """Test images per scan step when grid.chunk_size is 0 (each step runs chunk × E images per model).

  On a 2-core CPU, 8 images (128 per forward pass at 16 ε) ran 2.7x faster
  than 250 (benchmarks/README.md): the activations stay in cache. Accelerators
  want large batches; 256 is a starting point, not a measured optimum.
  """
  return 8 if jax.default_backend() == "cpu" else 256


def balanced_chunk(n: int, chunk: int, multiple: int = 1) -> int:
  """The chunk size ≤ `chunk` (rounded up to `multiple`) that splits n images with the least padding."""
  num = -(-n // max(1, min(chunk, n)))
  return -(-(-(-n // num)) // multiple) * multiple


def chunked(images: np.ndarray, labels: np.ndarray, chunk: int):
  """(N, ...) -> (C, chunk, ...) with zero padding, and the weights that mask it."""
  n = len(images)
  c = -(-n // chunk)
  pad = c * chunk - n
  x = np.concatenate([images, np.zeros((pad,) + images.shape[1:], images.dtype)])
  y = np.concatenate([labels, np.zeros(pad, labels.dtype)])
  w = np.concatenate([np.ones(n, np.int32), np.zeros(pad, np.int32)])
  return (x.reshape((c, chunk) + images.shape[1:]), y.reshape(c, chunk), w.reshape(c, chunk))


def purifiers_of(c, names: tuple[str, ...] | None = None) -> tuple[Purifier, ...]:
  """The configured purifiers except 'none' (the undefended row is always computed)."""
  model = experiment.vqvae_model(c)
  names = tuple(n for n in (c.eval.purifiers if names is None else names) if n != "none")
  return tuple(make_purifier(n, model, model, c.vqvae.split_k) for n in names)


def run_counts(purifiers, model_axis: str, mesh: Mesh, cls_params, no_split_M, split_M, images: np.ndarray,
               labels: np.ndarray, epsilons, chunk_size: int) -> tuple[np.ndarray, np.ndarray, dict]:
  """Pad and place the inputs, compile, run: accuracy (E,), (M, P, E) and timings."""
  m = parallel.num_models(no_split_M)
  if parallel.num_models(split_M) != m:
    raise VQDefenseError(f"the No-Split and Split stacks hold {m} and {parallel.num_models(split_M)} models")
  n_model, n_batch = mesh.shape["model"], mesh.shape["batch"]
  x, y, w = chunked(images, labels, balanced_chunk(len(images), chunk_size or default_chunk_size(), n_batch))
  replicated, models, batch = (NamedSharding(mesh, spec) for spec in (P(), P("model"), P(None, "batch")))
  args = (cls_params, parallel.pad_models(no_split_M, n_model), parallel.pad_models(split_M, n_model), x, y, w,
          np.asarray(epsilons, np.float32))
  args = tuple(parallel.put(a, s) for a, s in
               zip(args, (replicated, models, models, batch, batch, batch, replicated)))
  if not purifiers:
    raise VQDefenseError("the grid needs at least one purifier besides 'none' in eval.purifiers")
  t0 = time.perf_counter()
  compiled = grid_counts.lower(purifiers, model_axis, mesh, *args).compile()
  t1 = time.perf_counter()
  # One tick per chunk and device; the whole grid is still one call.
  _progress["bar"] = tqdm(total=len(x) * mesh.size, desc="grid", unit="chunk", dynamic_ncols=True)
  try:
    undefended_E, defended_MxPxE = jax.block_until_ready(compiled(*args))
  finally:
    _progress["bar"].close()
    _progress["bar"] = None
  t2 = time.perf_counter()
  n = len(images)
  timing = dict(compile_s=t1 - t0, run_s=t2 - t1, chunk_size=x.shape[1], num_chunks=len(x))
  return np.asarray(undefended_E) / n, np.asarray(defended_MxPxE)[:m] / n, timing


def run_grid(c, cls_params, stacks: dict[str, Any], images: np.ndarray, labels: np.ndarray,
             mesh: Mesh | None = None) -> dict[str, Any]:
  """The full grid for config `c`; returns the named-axes results (what grid.json holds)."""
  mesh = parallel.make_mesh(c.parallel.model_devices) if mesh is None else mesh
  eps = [float(e) for e in c.attack.epsilons]
  sizes = [int(s) for s in c.vqvae.codebook_sizes]
  purifiers = purifiers_of(c)
  pipelines = tuple(p for p in purifiers if len(p.stages) > 1)
  # 'best' needs both single-model purifiers to pick the sizes, whatever eval.purifiers lists.
  per_size = purifiers if c.grid.pairing == "same" else purifiers_of(c, ("no_split", "split"))
  run = functools.partial(run_counts, model_axis=c.parallel.grid_model_axis, mesh=mesh, cls_params=cls_params,
                          images=images, labels=labels, epsilons=eps, chunk_size=c.grid.chunk_size)
  log.info("grid: %d test images × %d ε × %d codebook sizes × %d purifiers + undefended, one computation on %s "
           "(mesh model=%d batch=%d, model axis %s)", len(images), len(eps), len(sizes), len(per_size),
           jax.devices()[0].device_kind, mesh.shape["model"], mesh.shape["batch"], c.parallel.grid_model_axis)
  undefended, acc_MxPxE, timing = run(per_size, no_split_M=stacks["no_split"], split_M=stacks["split"])
  log.info("grid: compiled in %.1f s, ran in %.1f s", timing["compile_s"], timing["run_s"])
  acc = {p.name: acc_MxPxE[:, i] for i, p in enumerate(per_size)}
  best = {kind: sizes[report.best_index(acc[kind], eps, c.grid.best_eps_max)] for kind in ("no_split", "split")
          if kind in acc}
  results = dict(
      axes=dict(purifier=[p.name for p in per_size], codebook_size=sizes, epsilon=eps),
      accuracy=np.stack([acc[p.name] for p in per_size]).tolist(),
      undefended=undefended.tolist(), pairing=c.grid.pairing, best_eps_max=float(c.grid.best_eps_max),
      best_size=best, timing=[dict(what="grid", **timing)])
  if c.grid.pairing == "best" and pipelines:
    pick = {kind: sizes.index(best[kind]) for kind in ("no_split", "split")}
    take = lambda kind: parallel.take(stacks[kind], slice(pick[kind], pick[kind] + 1))
    _, acc_1xPxE, t = run(pipelines, no_split_M=take("no_split"), split_M=take("split"))
    log.info("grid: best pair No-Split K=%d + Split K=%d: %.1f s", best["no_split"], best["split"],
             t["compile_s"] + t["run_s"])
    results["paired"] = dict(no_split_size=best["no_split"], split_size=best["split"],
                             accuracy={p.name: acc_1xPxE[0, i].tolist() for i, p in enumerate(pipelines)})
    results["timing"].append(dict(what="best pair", **t))
  return results
