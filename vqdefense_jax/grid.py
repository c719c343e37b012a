"""The whole attack × ε × codebook size × purifier grid as ONE compiled computation.

`grid_counts` takes the classifier, the stacked variables of every codebook
size of both VQ-VAE kinds (leading model axis M; codebooks padded to K_max),
the whole test set, the ε vector and the attacks, and returns the number of
correct predictions for every (model, attack, purifier, ε) plus the undefended
row of every attack. Inside:

  scan over test-set chunks (memory stays bounded by one chunk)
    every grey-box attack once per chunk, over the whole ε vector
      (FGSM: one gradient serves every ε; PGD: all ε advance in one batch)
    over_models (lax.map or vmap, see parallel.py) over the M models
      grey-box: every purifier; shared first stages computed once (apply_all)
      white-box: per purifier, the attack through it, then the purifier

It runs under `shard_map` on a ('model', 'batch') mesh: each device gets a
slice of the models and of every chunk, and the counts are summed over the
'batch' axis. With one device the mesh is 1×1.

Pipelines pair model i of the No-Split stack with model i of the Split stack.
`grid.pairing = 'best'` instead pairs the best No-Split size with the best
Split size (best = highest mean accuracy over ε <= grid.best_eps_max, the
paper's criterion in Sec. 3.2): a second compiled call on one-model stacks;
the per-size rows then hold no_split and split only.

`run_grid` stacks clean- and adversarially trained VQ-VAEs on the model axis
of the same call, and runs one more call per extra tile count k
(vqvae.split_ks), whose tiles have another shape.
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


def grid_counts_fn(purifiers: tuple[Purifier, ...], attack_list: tuple[attacks.Attack, ...], model_axis: str,
                   mesh: Mesh, cls_params, no_split_M, split_M, x_CxBxHxWx1, y_CxB, w_CxB, index_CxB, eps_E, seed):
  """Correct-prediction counts: undefended (A, E) and defended (M, A, P, E) over all chunks C.

  `w_CxB` is 1 for real test images and 0 for padding; `index_CxB` is each
  image's index in the test set (PGD's random start is drawn from it and
  `seed`). M must be a multiple of the mesh's 'model' size and B of its 'batch'
  size (`run_counts` pads both). Grey-box attacks are computed once per chunk
  and shared by every model and purifier; white-box attacks are computed per
  model and purifier, through that purifier.
  """

  def local(cls_params, no_split_M, split_M, x_CxBxHxWx1, y_CxB, w_CxB, index_CxB, eps_E, seed):
    f = lambda x: Classifier().apply({"params": cls_params}, x)
    key = jax.random.key(seed)
    e, m, p, a = eps_E.shape[0], parallel.num_models(no_split_M), len(purifiers), len(attack_list)

    def chunk(carry, batch):
      x_BxHxWx1, y_B, w_B, index_B = batch
      flat = lambda x_ExB: x_ExB.reshape((-1,) + x_BxHxWx1.shape[1:])
      attack = lambda atk, purify=None: flat(attacks.run(atk, f, x_BxHxWx1, y_B, eps_E, purify=purify, key=key,
                                                         index_B=index_B))

      def correct_E(images):
        pred_ExB = jnp.argmax(f(images), -1).reshape(e, -1)
        return jnp.sum((pred_ExB == y_B[None]) * w_B[None], axis=1, dtype=jnp.int32)

      # Attacks on the classifier alone: computed once, shared by every model and purifier.
      grey = {atk: attack(atk) for atk in dict.fromkeys(atk.grey_box() for atk in attack_list)}

      def one_model(no_split, split):
        rows = []
        for atk in attack_list:
          if atk.white_box:
            outs = [pur(no_split, split, attack(atk, functools.partial(pur, no_split, split))) for pur in purifiers]
          else:
            outs = apply_all(purifiers, no_split, split, grey[atk])
          rows.append(jnp.stack([correct_E(out) for out in outs]))
        return jnp.stack(rows)                                      # (A, P, E)

      undefended_AxE, defended_MxAxPxE = carry
      defended = parallel.over_models(one_model, model_axis)(no_split_M, split_M)
      jax.debug.callback(_chunk_done, defended[0, 0, 0, 0])  # after this chunk's results exist
      undefended = jnp.stack([correct_E(grey[atk.grey_box()]) for atk in attack_list])
      return (undefended_AxE + undefended, defended_MxAxPxE + defended), None

    init = (jnp.zeros((a, e), jnp.int32), jnp.zeros((m, a, p, e), jnp.int32))
    (undefended, defended), _ = jax.lax.scan(chunk, init, (x_CxBxHxWx1, y_CxB, w_CxB, index_CxB))
    return jax.lax.psum(undefended, "batch"), jax.lax.psum(defended, "batch")

  batch = P(None, "batch")
  sharded = jax.shard_map(local, mesh=mesh,
                          in_specs=(P(), P("model"), P("model"), batch, batch, batch, batch, P(), P()),
                          out_specs=(P(), P("model")), check_vma=False)
  return sharded(cls_params, no_split_M, split_M, x_CxBxHxWx1, y_CxB, w_CxB, index_CxB, eps_E, seed)


grid_counts = jax.jit(grid_counts_fn, static_argnums=(0, 1, 2, 3))


def default_chunk_size() -> int:
  """Test images per scan step when grid.chunk_size is 0 (each step runs chunk × E images per model).

  On a 2-core CPU, 8 images (128 per forward pass at 16 ε) ran 1.3x faster
  than 64 and 1.4x faster than 250 (benchmarks/README.md): the activations
  stay in cache. Accelerators want large batches; 256 is a starting point,
  not a measured optimum.
  """
  return 8 if jax.default_backend() == "cpu" else 256


def balanced_chunk(n: int, chunk: int, multiple: int = 1) -> int:
  """The chunk size ≤ `chunk` (rounded up to `multiple`) that splits n images with the least padding."""
  num = -(-n // max(1, min(chunk, n)))
  return -(-(-(-n // num)) // multiple) * multiple


def chunked(images: np.ndarray, labels: np.ndarray, chunk: int):
  """(N, ...) -> (C, chunk, ...) with zero padding; the weights that mask it and each image's index."""
  n = len(images)
  c = -(-n // chunk)
  pad = c * chunk - n
  x = np.concatenate([images, np.zeros((pad,) + images.shape[1:], images.dtype)])
  y = np.concatenate([labels, np.zeros(pad, labels.dtype)])
  w = np.concatenate([np.ones(n, np.int32), np.zeros(pad, np.int32)])
  index = np.arange(c * chunk, dtype=np.int32)
  return tuple(a.reshape((c, chunk) + a.shape[1:]) for a in (x, y, w, index))


def purifiers_of(c, names: tuple[str, ...] | None = None) -> tuple[Purifier, ...]:
  """The configured purifiers except 'none' (the undefended row is always computed)."""
  model = experiment.vqvae_model(c)
  names = tuple(n for n in (c.eval.purifiers if names is None else names) if n != "none")
  return tuple(make_purifier(n, model, model, c.vqvae.split_k) for n in names)


def attacks_of(c) -> tuple[attacks.Attack, ...]:
  a = c.attack
  return tuple(attacks.Attack(n, a.pgd_steps, a.pgd_step_size, a.pgd_random_start) for n in a.names)


def run_counts(purifiers, model_axis: str, mesh: Mesh, cls_params, no_split_M, split_M, images: np.ndarray,
               labels: np.ndarray, epsilons, chunk_size: int, attack_list=(attacks.Attack("fgsm"),),
               seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict]:
  """Pad and place the inputs, compile, run: accuracy (A, E), (M, A, P, E) and timings."""
  m = parallel.num_models(no_split_M)
  if parallel.num_models(split_M) != m:
    raise VQDefenseError(f"the No-Split and Split stacks hold {m} and {parallel.num_models(split_M)} models")
  if not purifiers:
    raise VQDefenseError("the grid needs at least one purifier besides 'none' in eval.purifiers")
  n_model, n_batch = mesh.shape["model"], mesh.shape["batch"]
  x, y, w, index = chunked(images, labels, balanced_chunk(len(images), chunk_size or default_chunk_size(), n_batch))
  replicated, models, batch = (NamedSharding(mesh, spec) for spec in (P(), P("model"), P(None, "batch")))
  args = (cls_params, parallel.pad_models(no_split_M, n_model), parallel.pad_models(split_M, n_model), x, y, w,
          index, np.asarray(epsilons, np.float32), np.asarray(seed, np.uint32))
  args = tuple(parallel.put(a, s) for a, s in
               zip(args, (replicated, models, models, batch, batch, batch, batch, replicated, replicated)))
  t0 = time.perf_counter()
  compiled = grid_counts.lower(purifiers, tuple(attack_list), model_axis, mesh, *args).compile()
  t1 = time.perf_counter()
  # One tick per chunk and device; the whole grid is still one call.
  _progress["bar"] = tqdm(total=len(x) * mesh.size, desc="grid", unit="chunk", dynamic_ncols=True)
  try:
    undefended_AxE, defended_MxAxPxE = jax.block_until_ready(compiled(*args))
  finally:
    _progress["bar"].close()
    _progress["bar"] = None
  t2 = time.perf_counter()
  n = len(images)
  timing = dict(compile_s=t1 - t0, run_s=t2 - t1, chunk_size=x.shape[1], num_chunks=len(x))
  return np.asarray(undefended_AxE) / n, np.asarray(defended_MxAxPxE)[:m] / n, timing


def run_grid(c, cls_params, stacks: dict[str, Any], images: np.ndarray, labels: np.ndarray,
             mesh: Mesh | None = None) -> dict[str, Any]:
  """The full grid for config `c`; returns the named-axes results (what grid.json holds).

  accuracy[attack, training, purifier, codebook size, ε] comes from one
  compiled call: the clean- and adversarially trained stacks (`vqvae.training`)
  are concatenated on the model axis. Best sizes use the first attack on the
  clean-trained models. Each tile count of `vqvae.split_ks` other than 1 and
  vqvae.split_k (whose rows the main call already has) is one more compiled
  call, because its tiles have another shape: split_k.accuracy[attack, k,
  codebook size, ε] for the Split purifier.
  """
  mesh = parallel.make_mesh(c.parallel.model_devices) if mesh is None else mesh
  eps = [float(e) for e in c.attack.epsilons]
  sizes = [int(s) for s in c.vqvae.codebook_sizes]
  modes = list(c.vqvae.training)
  attack_list = attacks_of(c)
  purifiers = purifiers_of(c)
  pipelines = tuple(p for p in purifiers if len(p.stages) > 1)
  # 'best' needs both single-model purifiers to pick the sizes, whatever eval.purifiers lists.
  per_size = purifiers if c.grid.pairing == "same" else purifiers_of(c, ("no_split", "split"))
  run = functools.partial(run_counts, model_axis=c.parallel.grid_model_axis, mesh=mesh, cls_params=cls_params,
                          images=images, labels=labels, epsilons=eps, chunk_size=c.grid.chunk_size,
                          attack_list=attack_list, seed=c.seed)
  both = {kind: parallel.concat([stacks[experiment.kind_name(kind, mode)] for mode in modes])
          for kind in ("no_split", "split")}
  log.info("grid: %d test images × %d ε × %d codebook sizes × %d training modes × %d purifiers × %d attacks "
           "+ undefended, one computation on %s (mesh model=%d batch=%d, model axis %s)", len(images), len(eps),
           len(sizes), len(modes), len(per_size), len(attack_list), jax.devices()[0].device_kind,
           mesh.shape["model"], mesh.shape["batch"], c.parallel.grid_model_axis)
  undefended, acc_MxAxPxE, timing = run(per_size, no_split_M=both["no_split"], split_M=both["split"])
  log.info("grid: compiled in %.1f s, ran in %.1f s", timing["compile_s"], timing["run_s"])
  acc_AxTxPxSxE = acc_MxAxPxE.reshape(len(modes), len(sizes), *acc_MxAxPxE.shape[1:]).transpose(2, 0, 3, 1, 4)
  first_clean = {p.name: acc_AxTxPxSxE[0, 0, i] for i, p in enumerate(per_size)}
  best = {kind: sizes[report.best_index(first_clean[kind], eps, c.grid.best_eps_max)]
          for kind in ("no_split", "split") if kind in first_clean}
  results = dict(
      axes=dict(attack=[a.name for a in attack_list], training=modes, purifier=[p.name for p in per_size],
                codebook_size=sizes, epsilon=eps),
      accuracy=acc_AxTxPxSxE.tolist(), undefended=undefended.tolist(),
      threat_model={a.name: attacks.describe(a) for a in attack_list},
      pairing=c.grid.pairing, best_eps_max=float(c.grid.best_eps_max), best_size=best,
      timing=[dict(what="grid", **timing)])
  if c.grid.pairing == "best" and pipelines:
    pick = lambda kind: np.asarray([t * len(sizes) + sizes.index(best[kind]) for t in range(len(modes))])
    _, acc_TxAxPxE, t = run(pipelines, no_split_M=parallel.take(both["no_split"], pick("no_split")),
                            split_M=parallel.take(both["split"], pick("split")))
    log.info("grid: best pair No-Split K=%d + Split K=%d: %.1f s", best["no_split"], best["split"],
             t["compile_s"] + t["run_s"])
    results["paired"] = dict(no_split_size=best["no_split"], split_size=best["split"],
                             purifier=[p.name for p in pipelines],
                             accuracy=acc_TxAxPxE.transpose(1, 0, 2, 3).tolist())   # (A, T, P, E)
    results["timing"].append(dict(what="best pair", **t))
  if c.vqvae.split_ks:
    known = {p.name: acc_AxTxPxSxE[:, 0, i] for i, p in enumerate(per_size) if p.name in ("no_split", "split")}
    results["split_k"] = _split_k_grid(c, stacks, run, known)
    results["timing"] += results["split_k"].pop("timing")
  return results


def _split_k_grid(c, stacks, run, known: dict[str, np.ndarray]) -> dict[str, Any]:
  """The Split purifier with k×k tiles for every k of vqvae.split_ks (clean-trained): (A, K, M, E).

  k = 1 is the No-Split VQ-VAE and k = vqvae.split_k the Split one: their rows
  come from `known` (kind -> (A, M, E) of the main call) when it has them.
  """
  model = experiment.vqvae_model(c)
  rows, timing = [], []
  for k in c.vqvae.split_ks:
    kind = experiment.split_kind(c, k)
    if kind in known:
      rows.append(known[kind])
      continue
    _, acc_MxAx1xE, t = run((make_purifier("split", model, model, k),), no_split_M=stacks[kind],
                            split_M=stacks[kind])
    log.info("grid: Split purifier with %dx%d tiles (%s): %.1f s", k, k, kind, t["compile_s"] + t["run_s"])
    rows.append(acc_MxAx1xE[:, :, 0].transpose(1, 0, 2))
    timing.append(dict(what=f"split k={k}", **t))
  return dict(k=list(c.vqvae.split_ks), accuracy=np.stack(rows, axis=1).tolist(), timing=timing)
