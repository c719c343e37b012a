"""What a purification experiment trains: the VQ-VAE loss, every checkpoint's record, and the runs (core/experiment.py)
of the classifier and of every VQ-VAE kind, one per codebook size or one sweep over them all.

A record holds what defines its model and nothing of where training ends (`epochs`, `steps`), so a longer schedule
resumes a finished checkpoint. With weights.source = 'torch' the runs import the authors' PyTorch weights
(interop.py) instead of training, and their records name the source file and its sha256.
"""

import dataclasses
from typing import TYPE_CHECKING, Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from vqdefense_jax.core import attacks
from vqdefense_jax.core import classifier
from vqdefense_jax.core import data as data_lib
from vqdefense_jax.core import experiment as skeleton
from vqdefense_jax.core import parallel
from vqdefense_jax.core import tiles
from vqdefense_jax.core import training
from vqdefense_jax.core.classifier import Classifier
from vqdefense_jax.purify import interop
from vqdefense_jax.purify import quantizer
from vqdefense_jax.purify.kinds import VQKind
from vqdefense_jax.purify.vqvae import VQVAE

if TYPE_CHECKING:  # experiment.py builds its runs here
  from vqdefense_jax.purify.experiment import Experiment


@dataclasses.dataclass(frozen=True)
class VQVAELoss:
  """The VQ-VAE loss on whole images (k = 1) or on their k×k tiles; `state` is the codebook.

  With `adversarial_eps`, the input is FGSM-attacked against the classifier (`extra` = its params) at an
  ε drawn per image from that list, and the target is the clean image (Defense-VAE's adversarial -> clean
  pairs).
  """
  model: VQVAE
  k: int
  adversarial_eps: tuple[float, ...] = ()
  classifier: Classifier = Classifier()

  def pairs(self, x, y, rng, extra):
    """(input, target, ε per image) of one step, before tiling; ε is 0 for clean training."""
    if not self.adversarial_eps:
      return x, x, jnp.zeros(x.shape[:1], x.dtype)
    x_adv, eps_B = attacks.fgsm_pairs(classifier.logits_fn(extra, self.classifier), x, y, self.adversarial_eps,
                                      jax.random.fold_in(rng, 1))
    return jax.lax.stop_gradient(x_adv), x, eps_B

  def __call__(self, params, codebook, x, y, rng, extra=None):
    x_in, target, _ = self.pairs(x, y, rng, extra)
    cut = lambda v: tiles.split(v, self.k) if self.k > 1 else v
    return self.model.loss(params, codebook, cut(x_in), cut(target))


# --- records ---------------------------------------------------------------------------------------------

def common_record(exp: "Experiment", ds: data_lib.Dataset) -> dict[str, Any]:
  return skeleton.common_record(exp.seed, exp.data, ds)


def _input_record(exp: "Experiment") -> dict[str, float]:
  return dict(input_mean=exp.classifier_model.mean, input_std=exp.classifier_model.std)


def classifier_record(exp: "Experiment", ds: data_lib.Dataset) -> dict[str, Any]:
  if exp.weights.imported:
    return dict(model="classifier", code_version=skeleton.CODE_VERSION, imported=exp.weights.record("classifier"),
                data=dict(image_size=exp.data.image_size), classifier=_input_record(exp))
  return dict(model="classifier", **common_record(exp, ds),
              classifier=skeleton.classifier_section(exp.classifier, exp.classifier_model))


def vqvae_record(exp: "Experiment", ds: data_lib.Dataset, kind: VQKind, sizes) -> dict[str, Any]:
  if exp.weights.imported:
    return dict(model=f"vqvae_{kind.name}", code_version=skeleton.CODE_VERSION,
                imported=exp.weights.record(_source(kind)), data=dict(image_size=exp.data.image_size),
                tiles=kind.tiles, training=kind.training, codebook_sizes=list(sizes),
                vqvae=dataclasses.asdict(exp.vq.model))
  r = dict(model=f"vqvae_{kind.name}", **common_record(exp, ds), tiles=kind.tiles, training=kind.training,
           codebook_sizes=list(sizes),
           vqvae=dict(dataclasses.asdict(exp.vq.model), **skeleton.schedule_record(exp.vqvae_schedule)))
  if kind.adversarial:  # its inputs attack the classifier
    r.update(adversarial_epsilons=list(exp.vq.adversarial_epsilons), classifier=classifier_record(exp, ds))
  return r


# --- runs ------------------------------------------------------------------------------------------------

def _n_train(exp: "Experiment", ds: data_lib.Dataset, schedule: training.Schedule) -> int:
  """Training examples per epoch; imported weights are not trained, so any valid count (one batch) will do."""
  return schedule.batch_size if exp.weights.imported else len(ds.train_images)


def classifier_run(exp: "Experiment", ds: data_lib.Dataset) -> skeleton.Run:
  model = exp.classifier_model
  run = skeleton.classifier_run(exp.classifier, model, exp.seed, exp.data.image_size, _n_train(exp, ds, exp.classifier),
                                classifier_record(exp, ds))
  if not exp.weights.imported:
    return run
  params = lambda: interop.classifier_params(exp.weights.state_dict("classifier"), model, exp.data.image_size,
                                             exp.weights.path("classifier"))
  return dataclasses.replace(run, num_steps=0, imported=lambda: run.init().replace(params=params()))


def _source(kind: VQKind) -> str:
  """The authors' file a kind is imported from (weights.source = 'torch' allows the two paper kinds only)."""
  return "no_split" if kind.tiles == 1 else "split"


def checkpoint_name(kind: VQKind, size: int) -> str:
  return f"vqvae_{kind.name}_K{size}"


def sweep_name(kind: VQKind, sizes) -> str:
  """One checkpoint for the stack of every codebook size of a kind (train.sweep)."""
  return f"vqvae_{kind.name}_sweep_K{'-'.join(str(s) for s in sizes)}"


def vqvae_step(exp: "Experiment", kind: VQKind, n_train: int) -> training.SupervisedStep:
  # The seed depends on the kind only: every codebook size sees the same batches.
  eps = exp.vq.adversarial_epsilons if kind.adversarial else ()
  return training.SupervisedStep(VQVAELoss(exp.vq.model, kind.tiles, eps, exp.classifier_model),
                                 exp.vqvae_schedule.optimizer_spec(n_train),
                                 training.stable_seed(exp.seed, f"vqvae_{kind.name}"))


def vqvae_init(exp: "Experiment", step: training.SupervisedStep, kind: VQKind, size: int) -> Callable[[], Any]:
  side = exp.data.image_size // kind.tiles

  def init():
    v = exp.vq.model.init(jax.random.key(step.seed), jnp.zeros((1, side, side, 1), jnp.float32), size)
    return step.init(v["params"], v["codebook"])
  return init


def vqvae_runs(exp: "Experiment", kind: VQKind, ds: data_lib.Dataset) -> list[skeleton.Run]:
  """The runs of a kind: one sweep over every codebook size (train.sweep), or one run per size. An adversarial
  kind needs the trained classifier (its inputs attack it)."""
  n_train = _n_train(exp, ds, exp.vqvae_schedule)
  skeleton.check_batch("vqvae", exp.vqvae_schedule.batch_size, n_train)
  step = vqvae_step(exp, kind, n_train)
  sizes = exp.vq.codebook_sizes
  inits = [vqvae_init(exp, step, kind, s) for s in sizes]
  common = dict(num_steps=exp.vqvae_schedule.num_steps(n_train), batch_size=exp.vqvae_schedule.batch_size,
                batches=training.IndexBatches(step.seed, n_train, exp.vqvae_schedule.batch_size),
                needs=("classifier",) if kind.adversarial else ())
  if exp.loop.sweep:
    sweep = training.Sweep(tuple(checkpoint_name(kind, s) for s in sizes), exp.parallel.train_model_axis)
    runs = [skeleton.Run(sweep_name(kind, sizes), step, lambda: parallel.stack([f() for f in inits]),
                         record=vqvae_record(exp, ds, kind, sizes), sweep=sweep, **common)]
  else:
    runs = [skeleton.Run(checkpoint_name(kind, s), step, f, record=vqvae_record(exp, ds, kind, [s]), **common)
            for s, f in zip(sizes, inits)]
  if not exp.weights.imported:
    return runs
  (run,), (size,), (init,) = runs, sizes, inits  # Experiment.from_config allows one size

  def imported():
    which = _source(kind)
    v = interop.vqvae_variables(exp.weights.state_dict(which), exp.vq.model, size, exp.weights.path(which))
    ts = init().replace(params=v["params"], state=v["codebook"])
    return parallel.stack([ts]) if run.sweep is not None else ts
  return [dataclasses.replace(run, num_steps=0, imported=imported)]


def unstack(run: skeleton.Run, ts) -> list[training.TrainState]:
  """A run's state per model (a sweep's stack taken apart)."""
  return [ts] if run.sweep is None else [parallel.take(ts, i) for i in range(len(run.sweep.names))]


def vqvae_test_metrics(model: VQVAE, variables, k: int, images: np.ndarray, batch: int = 500) -> dict[str, float]:
  """Reconstruction MSE over the test set, and code usage over all its tiles."""

  @jax.jit
  def run(x):
    x = tiles.split(x, k) if k > 1 else x
    x_hat, aux = model.forward(variables["params"], variables["codebook"], x)
    return jnp.sum((x_hat - x) ** 2), jnp.bincount(aux["idx"], length=model.k_max)

  sq, count_K = 0.0, np.zeros(model.k_max, np.int64)
  for i in range(0, len(images), batch):
    s, cnt = run(images[i:i + batch])
    sq, count_K = sq + float(s), count_K + np.asarray(cnt)
  u = quantizer.usage_from_counts(jnp.asarray(count_K), variables["codebook"]["size"])
  return dict(recon_mse=sq / images[..., 0].size, perplexity=float(u["perplexity"]),
              dead_code_share=float(u["dead_code_share"]))
