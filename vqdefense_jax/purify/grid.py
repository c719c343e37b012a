"""The whole attack × ε × codebook size × purifier grid as ONE compiled computation.

`grid_counts` takes the classifier, defences (core/defence.py) that share one
parameter stack (leading model axis M: for the VQ-VAE purifiers, `VQParams` of
every codebook size of both kinds, codebooks padded to K_max), the whole test
set, the ε vector and the attacks, and returns the number of correct
predictions for every (model, attack, purifier, ε) plus the undefended row of
every attack. Inside:

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

`run_grid` takes its defences each paired with its own parameters: the VQ-VAE
purifiers with their VQ-VAE stacks, a network purifier (the restorer,
restore/purifier.py) with its params. It stacks clean- and adversarially
trained VQ-VAEs on the model axis of the same call, and runs one more call per
extra tile count k (vqvae.split_ks), whose tiles have another shape, and one
more for a network purifier (a one-model stack of its own params).
"""

import dataclasses
import functools
import logging
import time
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from tqdm.auto import tqdm

from vqdefense_jax.core import attacks
from vqdefense_jax.core import classifier
from vqdefense_jax.core import defence
from vqdefense_jax.core import parallel
from vqdefense_jax.core.attacks import AttackSpec
from vqdefense_jax.core.classifier import Classifier
from vqdefense_jax.core.errors import VQDefenseError
from vqdefense_jax.core.defence import Defence, Gate
from vqdefense_jax.purify.kinds import VQKind, VQSpec
from vqdefense_jax.purify.purifiers import Pipeline, Purifier, VQParams, apply_all
from vqdefense_jax.purify.results import Convergence, GridResult, Paired, Predictions, Restorer, SplitK, Suite

log = logging.getLogger(__name__)
# The progress bar of the running grid; the compiled scan reports each finished chunk to it (host callback).
_progress: dict[str, Any] = {"bar": None}


def _chunk_done(_) -> None:
  if _progress["bar"] is not None:
    _progress["bar"].update(1)


COUNTING = ("final", "clean_and_final")  # see `grid_counts_fn`
WORST = "worst_case"  # the attack row of the per-image worst case over every attack (when there are several)


def attack_names(attack_list) -> tuple[str, ...]:
  """The grid's attack axis: each attack, then `worst_case` when there are several."""
  names = tuple(a.name for a in attack_list)
  return names + ((WORST,) if len(names) > 1 else ())


def worst(pred_RxXxB: jnp.ndarray, y_B: jnp.ndarray) -> jnp.ndarray:
  """The per-image worst case over the leading axis (restarts or attacks): each image's first wrong prediction,
  or its first prediction when none is wrong. An image is right in the result only if it is right in every row."""
  wrong = pred_RxXxB != jnp.broadcast_to(y_B, pred_RxXxB.shape)
  first = jnp.argmax(wrong, axis=0)[None]
  return jnp.take_along_axis(pred_RxXxB, first, axis=0)[0]


def restart_key(key: jax.Array, r) -> jax.Array:
  """Restart r's key: `key` itself for r = 0 (so one restart is the attack as before), else fold_in(key, r)."""
  data = jnp.where(r == 0, jax.random.key_data(key), jax.random.key_data(jax.random.fold_in(key, r)))
  return jax.random.wrap_key_data(data)


def _each(fn, xs_RxX: jnp.ndarray) -> jnp.ndarray:
  """fn over the leading axis (lax.map), or a plain call when it has length 1 (the graph of one restart is
  the graph without restarts)."""
  return fn(xs_RxX[0])[None] if xs_RxX.shape[0] == 1 else jax.lax.map(fn, xs_RxX)


def over_restarts(atk: attacks.Attack, fn, key: jax.Array) -> jnp.ndarray:
  """fn(key of restart r) stacked over the attack's restarts: (R, ...); one compiled body (lax.map)."""
  if atk.restarts == 1:
    return fn(key)[None]
  return jax.lax.map(lambda r: fn(restart_key(key, r)), jnp.arange(atk.restarts))


@dataclasses.dataclass(frozen=True)
class Measure:
  """How the grid judges a prediction (static: each choice compiles once).

  classifier    the target model (its input convention)
  counting      'final': an image counts as correct when its final prediction is right; 'clean_and_final'
                (the paper authors' evaluation): only when the classifier is also right on the clean
                image. Both divide by every test image.
  predictions   also return every image's predictions (int8), besides the counts
  """
  classifier: Classifier = Classifier()
  counting: str = "final"
  predictions: bool = False


def grid_counts_fn(purifiers: tuple[Defence, ...], attack_list: tuple[attacks.Attack, ...], model_axis: str,
                   mesh: Mesh, measure: Measure, cls_params, params_M, x_CxBxHxWx1, y_CxB, w_CxB, index_CxB, eps_E,
                   seed, gate_params=None):
  """Correct-prediction counts: undefended (A, E) and defended (M, A, P, E) over all chunks C.

  Every purifier takes model i of `params_M` (a pytree whose leaves share the leading model axis M).

  `w_CxB` is 1 for real test images and 0 for padding; `index_CxB` is each
  image's index in the test set (PGD's random start is drawn from it and
  `seed`). M must be a multiple of the mesh's 'model' size and B of its 'batch'
  size (`run_counts` pads both). Grey-box attacks are computed once per chunk
  and shared by every model and purifier; white-box attacks are computed per
  model and purifier, through that purifier. With `measure.predictions`, a third
  output holds every image's predictions: clean (C, B), undefended (C, A, E, B)
  and defended (C, M, A, P, E, B). `gate_params` are the params of the detector of
  the purifiers that have a gate (detect, then purify), shared by every model.

  An attack with `restarts` R runs R times (random starts keyed by (seed, restart,
  image index)) and an image counts as correct only if every restart leaves it
  correct (grey-box with `restart_pick='classifier'`: the restart with the
  highest loss of the classifier alone). With several attacks, the attack axis
  ends with `worst_case` (A = attacks + 1): right only if right under every
  attack.

  The fourth output counts, for each AutoAttack suite of the attack list (S of
  them), what happened to every test image (attacks.OUTCOMES: robust, wrong
  clean, or the member that fooled it): undefended (S, E, O) and defended
  (M, S, P, E, O).
  """

  def local(cls_params, params_M, x_CxBxHxWx1, y_CxB, w_CxB, index_CxB, eps_E, seed, gate_params):
    f = classifier.logits_fn(cls_params, measure.classifier)
    key = jax.random.key(seed)
    item_batch, query_batch = default_item_batch(), default_item_batch(queries=True)
    e, m, p = eps_E.shape[0], parallel.num_models(params_M), len(purifiers)

    def chunk(carry, batch):
      x_BxHxWx1, y_B, w_B, index_B = batch
      flat = lambda x_ExB: x_ExB.reshape((-1,) + x_BxHxWx1.shape[1:])
      real_B = w_B                   # 1 for a test image, 0 for padding (outcomes count every test image)
      attack = lambda atk, purify=None, k=key: flat(attacks.run(
          atk, f, x_BxHxWx1, y_B, eps_E, purify=purify, key=k, index_B=index_B, batch=item_batch,
          query_batch=query_batch, attack_B=real_B > 0))

      def suite(atk, purify=None):   # AutoAttack: (E·B, ...) images and the outcome counts (E, O) of each ε
        x_adv, by_ExB = attacks.run(atk, f, x_BxHxWx1, y_B, eps_E, purify=purify, key=key, index_B=index_B,
                                    batch=item_batch, query_batch=query_batch, outcomes=True, attack_B=real_B > 0)
        return flat(x_adv), jax.vmap(attacks.outcome_counts, (0, None))(by_ExB, real_B)

      y_EB = jnp.tile(y_B, e)
      clean_B = jnp.argmax(f(x_BxHxWx1), -1)
      if measure.counting == "clean_and_final":  # an image the classifier gets wrong clean never counts
        w_B = w_B * (clean_B == y_B)

      def predict(images):                                       # (E·B, ...) -> (E, B)
        return jnp.argmax(f(images), -1).reshape(e, -1)

      def correct(pred_xB):                                      # (..., B) -> (...)
        at = lambda v_B: jnp.broadcast_to(v_B, pred_xB.shape)
        return jnp.sum((pred_xB == at(y_B)) * at(w_B), axis=-1, dtype=jnp.int32)

      def grey_box(atk):
        """(R, E·B, ...) adversarial images of every restart; one (the classifier's pick) with restart_pick
        'classifier'. A suite's outcome counts go to `grey_outcomes`."""
        if atk.suite:
          adv, grey_outcomes[atk] = suite(atk)
          return adv[None]
        adv_R = over_restarts(atk, lambda k: attack(atk, k=k), key)
        if atk.restarts == 1 or atk.restart_pick == "defended":
          return adv_R
        loss_RxN = jax.vmap(lambda a: attacks.per_image_loss(f(a), y_EB, atk.loss))(adv_R)
        pick = jnp.argmax(loss_RxN, axis=0).reshape((1, -1) + (1,) * (adv_R.ndim - 2))
        return jnp.take_along_axis(adv_R, pick, axis=0)

      # Attacks on the classifier alone: computed once, shared by every model and purifier.
      grey_outcomes = {}
      grey = {atk: grey_box(atk) for atk in dict.fromkeys(atk.grey_box() for atk in attack_list)}
      with_worst = lambda pred_AxXxB: (jnp.concatenate([pred_AxXxB, worst(pred_AxXxB, y_B)[None]])
                                       if len(attack_list) > 1 else pred_AxXxB)

      def one_model(params):
        def white_box(atk, pur, k):  # attack through the purifier (and a gated one's detector), then purify
          x_adv = attack(atk, functools.partial(pur.differentiable, params, gate_params=gate_params), k)
          return predict(pur(params, x_adv, gate_params))

        def grey_box_row(adv):       # every purifier on one restart's grey-box images; shared stages once
          return jnp.stack([predict(o) for o in apply_all(purifiers, params, adv, gate_params)])

        def suite_row(atk, pur):     # (E, B) predictions and (E, O) outcome counts
          x_adv, counts = suite(atk, functools.partial(pur.differentiable, params, gate_params=gate_params))
          return predict(pur(params, x_adv, gate_params)), counts

        rows, outcomes = [], []
        for atk in attack_list:      # each row (P, E, B): the worst case over the attack's restarts
          if atk.suite:
            pred_P, counts_P = zip(*[suite_row(atk, pur) for pur in purifiers])
            rows.append(jnp.stack(pred_P))
            outcomes.append(jnp.stack(counts_P))
          elif atk.white_box:
            rows.append(jnp.stack([worst(over_restarts(atk, functools.partial(white_box, atk, pur), key), y_B)
                                   for pur in purifiers]))
          else:
            rows.append(worst(_each(grey_box_row, grey[atk]), y_B))
        pred_AxPxExB = with_worst(jnp.stack(rows))
        return (correct(pred_AxPxExB), pred_AxPxExB.astype(jnp.int8) if measure.predictions else None,
                jnp.stack(outcomes) if outcomes else None)

      undefended_AxE, defended_MxAxPxE, outcomes_SxExO, outcomes_MxSxPxExO = carry
      defended, pred_M, outcomes_M = parallel.over_models(one_model, model_axis)(params_M)
      jax.debug.callback(_chunk_done, defended[0, 0, 0, 0])  # after this chunk's results exist
      pred_undefended = with_worst(jnp.stack([worst(_each(predict, grey[atk.grey_box()]), y_B)
                                              for atk in attack_list]))
      if outcomes_M is not None:
        outcomes_SxExO = outcomes_SxExO + jnp.stack([grey_outcomes[atk.grey_box()] for atk in attack_list
                                                     if atk.suite])
        outcomes_MxSxPxExO = outcomes_MxSxPxExO + outcomes_M
      carry = (undefended_AxE + correct(pred_undefended), defended_MxAxPxE + defended, outcomes_SxExO,
               outcomes_MxSxPxExO)
      preds = (clean_B.astype(jnp.int8), pred_undefended.astype(jnp.int8), pred_M) if measure.predictions else None
      return carry, preds

    a = len(attack_names(attack_list))  # the attacks, and the worst case over them when there are several
    s, o = sum(atk.suite for atk in attack_list), len(attacks.OUTCOMES)
    init = (jnp.zeros((a, e), jnp.int32), jnp.zeros((m, a, p, e), jnp.int32), jnp.zeros((s, e, o), jnp.int32),
            jnp.zeros((m, s, p, e, o), jnp.int32))
    (undefended, defended, outcomes, outcomes_M), preds = jax.lax.scan(chunk, init, (x_CxBxHxWx1, y_CxB, w_CxB,
                                                                                     index_CxB))
    total = lambda v: jax.lax.psum(v, "batch")
    return total(undefended), total(defended), preds, (total(outcomes), total(outcomes_M))

  batch = P(None, "batch")
  pred_specs = (batch, P(None, None, None, "batch"), P(None, "model", None, None, None, "batch"))
  sharded = jax.shard_map(local, mesh=mesh,
                          in_specs=(P(), P("model"), batch, batch, batch, batch, P(), P(), P()),
                          out_specs=(P(), P("model"), pred_specs if measure.predictions else None,
                                     (P(), P("model"))), check_vma=False)
  return sharded(cls_params, params_M, x_CxBxHxWx1, y_CxB, w_CxB, index_CxB, eps_E, seed, gate_params)


grid_counts = jax.jit(grid_counts_fn, static_argnums=(0, 1, 2, 3, 4))


def default_chunk_size(item_attacks: bool = False) -> int:
  """Test images per scan step when grid.chunk_size is 0 (each step runs chunk × E images per model).

  On a 2-core CPU, 8 images (128 per forward pass at 16 ε) ran 1.3x faster
  than 64 and 1.4x faster than 250 (benchmarks/README.md): the activations
  stay in cache. The item attacks (Square, APGD-T, FAB-T, AutoAttack) attack
  only the (image, ε) items still to fool within a chunk, so they want chunks
  that hold many: 64 images on CPU. Accelerators want large batches; 256 is a
  starting point, not a measured optimum.
  """
  if jax.default_backend() != "cpu":
    return 256
  return 64 if item_attacks else 8


def default_item_batch(queries: bool = False) -> int:
  """Items per batch of the item attacks when attack.batch is 0. Gradient steps (APGD-T, FAB-T, the suite's
  gradient members): 64 on CPU, where the suite's members on 50 images of the authors' No-Split purifier ran
  in 276 s against 326 s at 32 (with the finer ladder of `items.sizes`; benchmarks/README.md). Square's
  queries (`queries`), forward passes only: 128 on CPU, where a query of the authors' No-Split purifier took
  0.85 ms per item in batches of 32 and 0.59 to 0.64 ms in batches of 100 to 200 (benchmarks/README.md).
  Elsewhere every item of a chunk at once (0)."""
  if jax.default_backend() != "cpu":
    return 0
  return 128 if queries else 64


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


@dataclasses.dataclass(frozen=True)
class GridSpec:
  """The `grid` config section, checked against the ε vector it will pick the best sizes from."""
  chunk_size: int = 0          # test images per scan step; 0: default_chunk_size()
  pairing: str = "same"        # pipelines pair 'same' sizes or the 'best' size of each kind
  best_eps_max: float = 0.08   # best = highest mean accuracy over ε <= this

  @classmethod
  def from_config(cls, section, epsilons) -> "GridSpec":
    spec = cls(section.chunk_size, section.pairing, float(section.best_eps_max))
    if not 0 <= spec.chunk_size <= 2 ** 16:
      raise VQDefenseError(f"grid.chunk_size must be in 0..65536 (0: the default for the backend), "
                           f"got {spec.chunk_size}")
    if spec.pairing not in ("same", "best"):
      raise VQDefenseError(f"grid.pairing must be 'same' or 'best', not {spec.pairing!r}")
    if spec.best_eps_max < min(float(e) for e in epsilons):
      raise VQDefenseError(f"grid.best_eps_max={spec.best_eps_max} is below every ε in attack.epsilons")
    return spec


def make_purifiers(vq: VQSpec, names, k: int | None = None, gate: Gate | None = None) -> tuple[Purifier, ...]:
  """The VQ-VAE purifiers of `names` (the registered `Pipeline`s; not 'none': the undefended row is always
  computed; not a network purifier such as 'restorer'), with k×k tiles; with a `gate`, each also as detect,
  then purify (after all the ungated ones)."""
  pipelines = defence.registered(Pipeline)
  plain = tuple(Purifier(n, vq.model, vq.model, vq.split_k if k is None else k) for n in names
                if n != "none" and n in pipelines)
  return plain + (tuple(dataclasses.replace(p, gate=gate) for p in plain) if gate is not None else ())


def vqvae_defences(vq: VQSpec, names, stacks: dict[VQKind, Any], gate: Gate | None = None
                   ) -> list[tuple[Purifier, dict[VQKind, Any]]]:
  """`make_purifiers`' purifiers, each paired with its parameters for `run_grid`: the VQ-VAE stacks."""
  return [(p, stacks) for p in make_purifiers(vq, names, gate=gate)]


def best_index(acc_MxE: np.ndarray, eps, eps_max: float) -> int:
  """Row with the highest mean accuracy over ε <= eps_max (ties: the first), the paper's Sec. 3.2 criterion.

  GridSpec guarantees some ε <= grid.best_eps_max.
  """
  low = np.asarray(eps) <= eps_max + 1e-9
  return int(np.argmax(np.asarray(acc_MxE)[:, low].mean(axis=1))) if low.any() else 0


class Counts(NamedTuple):
  """What `run_counts` returns."""
  undefended: np.ndarray        # (A, E) accuracy
  defended: np.ndarray          # (M, A, P, E) accuracy
  timing: dict
  predictions: Any              # with measure.predictions: clean (N,), undefended (A, E, N), defended (M, A, P, E, N)
  outcomes: Any                 # AutoAttack outcome shares: undefended (S, E, O), defended (M, S, P, E, O)


def run_counts(purifiers, model_axis: str, mesh: Mesh, cls_params, params_M, images: np.ndarray,
               labels: np.ndarray, epsilons, chunk_size: int, attack_list=(attacks.Attack("fgsm"),),
               seed: int = 0, measure: Measure = Measure(), gate_params=None) -> Counts:
  """Pad and place the inputs, compile, run: accuracy (A, E), (M, A, P, E), timings, (with
  `measure.predictions`, else None) the predictions, and the suites' outcome shares (`Counts`). Every
  purifier takes its model of `params_M` (the VQ-VAE purifiers: `VQParams` of two stacks)."""
  m = parallel.num_models(params_M)
  if {int(leaf.shape[0]) for leaf in jax.tree.leaves(params_M)} != {m}:
    raise VQDefenseError(f"the parameter stack's leaves hold different numbers of models: "
                         f"{sorted({int(leaf.shape[0]) for leaf in jax.tree.leaves(params_M)})}")
  if not purifiers:
    raise VQDefenseError("the grid needs at least one purifier besides 'none' in eval.purifiers")
  if measure.counting not in COUNTING:
    raise VQDefenseError(f"unknown counting rule {measure.counting!r}; expected one of {', '.join(COUNTING)}")
  n_model, n_batch = mesh.shape["model"], mesh.shape["batch"]
  item_attacks = any(a.method in attacks.ITEM_METHODS for a in attack_list)
  x, y, w, index = chunked(images, labels, balanced_chunk(len(images), chunk_size or default_chunk_size(item_attacks),
                                                          n_batch))
  replicated, models, batch = (NamedSharding(mesh, spec) for spec in (P(), P("model"), P(None, "batch")))
  args = (cls_params, parallel.pad_models(params_M, n_model), x, y, w, index, np.asarray(epsilons, np.float32),
          np.asarray(seed, np.uint32), gate_params)
  args = tuple(parallel.put(a, s) for a, s in
               zip(args, (replicated, models, batch, batch, batch, batch, replicated, replicated, replicated)))
  t0 = time.perf_counter()
  compiled = grid_counts.lower(purifiers, tuple(attack_list), model_axis, mesh, measure, *args).compile()
  t1 = time.perf_counter()
  # One tick per chunk and device; the whole grid is still one call.
  _progress["bar"] = tqdm(total=len(x) * mesh.size, desc="grid", unit="chunk", dynamic_ncols=True,
                         disable=not parallel.is_lead())
  try:
    undefended_AxE, defended_MxAxPxE, preds, (outcomes_SxExO, outcomes_MxSxPxExO) = jax.block_until_ready(
        compiled(*args))
  finally:
    _progress["bar"].close()
    _progress["bar"] = None
  t2 = time.perf_counter()
  n = len(images)
  timing = dict(compile_s=t1 - t0, run_s=t2 - t1, chunk_size=x.shape[1], num_chunks=len(x))
  if preds is not None:  # chunks (C, ..., B) back to test-set order (..., N), without the padding
    in_order = lambda a: np.moveaxis(_gather(a), 0, -2).reshape(a.shape[1:-1] + (-1,))[..., :n]
    clean_N, undefended_AxExN, defended_MxAxPxExN = (in_order(a) for a in preds)
    preds = (clean_N, undefended_AxExN, defended_MxAxPxExN[:m])
  return Counts(np.asarray(undefended_AxE) / n, np.asarray(defended_MxAxPxE)[:m] / n, timing, preds,
                (np.asarray(outcomes_SxExO) / n, np.asarray(outcomes_MxSxPxExO)[:m] / n))


def _gather(a: jax.Array) -> np.ndarray:
  """A global array on the host of this process, also when other processes hold some of its shards."""
  if a.is_fully_addressable:
    return np.asarray(a)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return np.asarray(multihost_utils.process_allgather(a, tiled=True))


def run_grid(vq: VQSpec, attack: AttackSpec, spec: GridSpec, model_axis: str, seed: int, cls_params,
             defences: Sequence[tuple[Defence, Any]], images: np.ndarray, labels: np.ndarray, mesh: Mesh,
             measure: Measure = Measure(), gate_params=None) -> GridResult:
  """The full grid: accuracy[attack, training, purifier, codebook size, ε] from one compiled call.

  `defences` pairs each defence with its own parameters: each VQ-VAE `Purifier` (`vqvae_defences`, in the
  order of the purifier axis) with the VQ-VAE stacks they all share ({VQKind: variables stacked over
  codebook sizes}, `load_trained`'s), a network purifier (a `ModulePurifier`, at most one) with its params.
  The clean- and adversarially trained stacks (`vq.training`) are concatenated on the model axis. Best
  sizes use the first attack on the clean-trained models. Each tile count of `vq.split_ks` other than 1
  and vq.split_k (whose rows the main call already has) is one more compiled call, because its tiles
  have another shape. `measure` says how predictions count (and whether the main call's are kept). Gated
  purifiers (detect, then purify: one `Gate`) take the detector's `gate_params`. The network purifier runs
  under every attack in one more compiled call on a one-model stack of its params (its row has no codebook
  size and no training mode).
  """
  eps, sizes, modes = list(attack.epsilons), list(vq.codebook_sizes), list(vq.training)
  purifiers = tuple(d for d, _ in defences if isinstance(d, Purifier))
  networks = [(d, params) for d, params in defences if not isinstance(d, Purifier)]
  stacks = [params for d, params in defences if isinstance(d, Purifier)]
  if not purifiers:
    raise VQDefenseError("the grid needs at least one purifier besides 'none' in eval.purifiers")
  if any(s is not stacks[0] for s in stacks):  # they form the codebook-size axis of one compiled call
    raise VQDefenseError("the VQ-VAE purifiers of one grid share one set of VQ-VAE stacks")
  if len(networks) > 1:
    raise VQDefenseError(f"the grid takes one network purifier, not {len(networks)}: "
                         f"{', '.join(d.label for d, _ in networks)}")
  gates = {p.gate for p in purifiers if p.gate is not None}
  if len(gates) > 1:
    raise VQDefenseError("the grid's gated purifiers share one detector")
  the_gate, stacks = (gates.pop() if gates else None), stacks[0]
  pipelines = tuple(p for p in purifiers if len(p.stages) > 1)
  # 'best' needs both single-model purifiers to pick the sizes, whatever eval.purifiers lists.
  per_size = purifiers if spec.pairing == "same" else make_purifiers(vq, ("no_split", "split"), gate=the_gate)
  run = functools.partial(run_counts, model_axis=model_axis, mesh=mesh, cls_params=cls_params, images=images,
                          labels=labels, epsilons=eps, chunk_size=spec.chunk_size, attack_list=attack.attacks,
                          seed=seed, measure=dataclasses.replace(measure, predictions=False), gate_params=gate_params)
  both = {t: parallel.concat([stacks[vq.kind(t, mode)] for mode in modes]) for t in (1, vq.split_k)}
  log.info("grid: %d test images × %d ε × %d codebook sizes × %d training modes × %d purifiers × %d attacks "
           "+ undefended, one computation on %s (mesh model=%d batch=%d, model axis %s)", len(images), len(eps),
           len(sizes), len(modes), len(per_size), len(attack.attacks), jax.devices()[0].device_kind,
           mesh.shape["model"], mesh.shape["batch"], model_axis)
  undefended, acc_MxAxPxE, timing, preds, outcomes = run(per_size, params_M=VQParams(both[1], both[vq.split_k]),
                                                         measure=measure)
  log.info("grid: compiled in %.1f s, ran in %.1f s", timing["compile_s"], timing["run_s"])
  acc_AxTxPxSxE = _by_axes(acc_MxAxPxE, len(modes), len(sizes))
  first_clean = {p.label: acc_AxTxPxSxE[0, 0, i] for i, p in enumerate(per_size)}
  best = {kind: sizes[best_index(first_clean[kind], eps, spec.best_eps_max)]
          for kind in ("no_split", "split") if kind in first_clean}
  timings, paired, split_k = [dict(what="grid", **timing)], None, None
  if spec.pairing == "best" and pipelines:
    pick = lambda kind: np.asarray([t * len(sizes) + sizes.index(best[kind]) for t in range(len(modes))])
    _, acc_TxAxPxE, t, _, _ = run(pipelines, params_M=VQParams(parallel.take(both[1], pick("no_split")),
                                                               parallel.take(both[vq.split_k], pick("split"))))
    log.info("grid: best pair No-Split K=%d + Split K=%d: %.1f s", best["no_split"], best["split"],
             t["compile_s"] + t["run_s"])
    paired = Paired(best["no_split"], best["split"], tuple(p.label for p in pipelines),
                    acc_TxAxPxE.transpose(1, 0, 2, 3))
    timings.append(dict(what="best pair", **t))
  convergence = None
  if attack.convergence_steps:
    convergence, t = _convergence(attack, per_size, run, VQParams(both[1], both[vq.split_k]), len(modes),
                                  len(sizes))
    timings += t
  if vq.split_ks:
    known = {vq.split_kind(1 if p.label == "no_split" else vq.split_k): acc_AxTxPxSxE[:, 0, i]
             for i, p in enumerate(per_size) if p.label in ("no_split", "split")}
    split_k, t = _split_k_grid(vq, stacks, run, known)
    timings += t
  restorer = restorer_outcomes = None
  for pur, params in networks:
    _, acc_1xAx1xE, t, _, (_, restorer_1xSx1xExO) = run((pur,), params_M=parallel.stack([params]))
    log.info("grid: %s: %.1f s", pur.label, t["compile_s"] + t["run_s"])
    restorer, restorer_outcomes = Restorer(acc_1xAx1xE[0, :, 0]), restorer_1xSx1xExO[0, :, 0]
    timings.append(dict(what=pur.label, **t))
  suite = None
  if any(a.suite for a in attack.attacks):
    undefended_SxExO, defended_MxSxPxExO = outcomes
    suite = Suite(tuple(a.name for a in attack.attacks if a.suite), attacks.OUTCOMES, undefended_SxExO,
                  _by_axes(defended_MxSxPxExO, len(modes), len(sizes)), restorer_outcomes)
  return GridResult(attack=attack_names(attack.attacks), training=tuple(modes),
                    purifier=tuple(p.label for p in per_size), codebook_size=tuple(sizes), epsilon=tuple(eps),
                    accuracy=acc_AxTxPxSxE, undefended=undefended,
                    threat_model=threat_models(attack.attacks), pairing=spec.pairing,
                    best_eps_max=spec.best_eps_max, best_size=best, timing=tuple(timings), paired=paired,
                    split_k=split_k, counting=measure.counting, predictions=_predictions(preds, labels, len(modes)),
                    convergence=convergence, restorer=restorer, suite=suite, chance_epsilons=attack.chance_epsilons)


def _by_axes(acc_MxAxPxE: np.ndarray, num_modes: int, num_sizes: int) -> np.ndarray:
  """run_counts' (M = mode × size, A, P, E, ...) on the axes of GridResult: (A, T, P, S, E, ...)."""
  acc = acc_MxAxPxE.reshape(num_modes, num_sizes, *acc_MxAxPxE.shape[1:])
  return acc.transpose((2, 0, 3, 1) + tuple(range(4, acc.ndim)))


def _convergence(attack: AttackSpec, purifiers, run, params_M: VQParams, num_modes: int,
                 num_sizes: int) -> tuple[Convergence, list[dict]]:
  """The iterative gradient attacks (not Square, not a suite) at every attack.convergence_steps, one compiled call
  per step count."""
  iterative = tuple(a for a in attack.attacks if a.iterative and a.uses_gradient and not a.suite)
  acc, und, timing = [], [], []
  for k in attack.convergence_steps:
    at_k = tuple(dataclasses.replace(a, steps=k) for a in iterative)
    u, a, t, _, _ = run(purifiers, params_M=params_M, attack_list=at_k)
    log.info("grid: iterative attacks at %d steps: %.1f s", k, t["compile_s"] + t["run_s"])
    acc.append(_by_axes(a, num_modes, num_sizes))
    und.append(u)
    timing.append(dict(what=f"convergence steps={k}", **t))
  return Convergence(tuple(attack.convergence_steps), attack_names(iterative), np.stack(acc), np.stack(und)), timing


def threat_models(attack_list) -> dict[str, str]:
  """One line per row of the attack axis (`attack_names`)."""
  out = {a.name: attacks.describe(a) for a in attack_list}
  if len(attack_list) > 1:
    out[WORST] = (f"per image, the worst case over {', '.join(a.name for a in attack_list)}: an image counts as "
                  "robust only if no attack (and no restart) fooled it; white-box if any of them is")
  return out


def _predictions(preds, labels: np.ndarray, num_modes: int) -> Predictions | None:
  """run_counts' predictions (model axis = training mode × codebook size) on the axes of GridResult."""
  if preds is None:
    return None
  clean_N, undefended_AxExN, defended_MxAxPxExN = preds
  m, rest = defended_MxAxPxExN.shape[0], defended_MxAxPxExN.shape[1:]
  defended = defended_MxAxPxExN.reshape(num_modes, m // num_modes, *rest).transpose(2, 0, 3, 1, 4, 5)
  return Predictions(labels=np.asarray(labels, np.int8), clean=clean_N, undefended=undefended_AxExN,
                     defended=defended)


def _split_k_grid(vq: VQSpec, stacks, run, known: dict[VQKind, np.ndarray]) -> tuple[SplitK, list[dict]]:
  """The Split purifier with k×k tiles for every k of vq.split_ks (clean-trained): (A, K, M, E).

  k = 1 is the No-Split VQ-VAE and k = vq.split_k the Split one: their rows come from `known`
  (kind -> (A, M, E) of the main call) when it has them.
  """
  rows, timing = [], []
  for k in vq.split_ks:
    kind = vq.split_kind(k)
    if kind in known:
      rows.append(known[kind])
      continue
    _, acc_MxAx1xE, t, _, _ = run(make_purifiers(vq, ("split",), k), params_M=VQParams(stacks[kind], stacks[kind]))
    log.info("grid: Split purifier with %dx%d tiles (%s): %.1f s", k, k, kind.name, t["compile_s"] + t["run_s"])
    rows.append(acc_MxAx1xE[:, :, 0].transpose(1, 0, 2))
    timing.append(dict(what=f"split k={k}", **t))
  return SplitK(tuple(vq.split_ks), np.stack(rows, axis=1)), timing
