"""From a config to trained checkpoints: the classifier and a VQ-VAE per (kind, codebook size).

Workdir layout:
  config.json                     the resolved config
  metrics.jsonl                   training metrics, one JSON object per line
  checkpoints/classifier/         orbax CheckpointManager directories
  checkpoints/vqvae_<kind>_sweep_K<sizes>/   every size of a kind as one stack (train.sweep)
  checkpoints/vqvae_<kind>_K<size>/          one per size (train.sweep = False)

VQ-VAE kinds (`kinds_of`): 'no_split' and 'split' (k = vqvae.split_k tiles)
as in the paper; 'no_split_adv' and 'split_adv' when vqvae.training includes
'adversarial' (trained on FGSM-attacked inputs to reconstruct the clean image,
as Defense-VAE); 'split_k<k>' for every other tile count in vqvae.split_ks.
"""

import dataclasses
import json
import logging
import os
import tempfile
import zlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vqdefense_jax import attacks
from vqdefense_jax import config as config_lib
from vqdefense_jax import data as data_lib
from vqdefense_jax import parallel
from vqdefense_jax import quantizer
from vqdefense_jax import split as split_lib
from vqdefense_jax import training
from vqdefense_jax.errors import VQDefenseError
from vqdefense_jax.models import VQVAE, Classifier

log = logging.getLogger(__name__)
KINDS = ("no_split", "split")  # the paper's two


@dataclasses.dataclass(frozen=True)
class ClassifierLoss:
  """Cross-entropy with dropout on; `state` is unused (the classifier has none)."""
  model: Classifier = Classifier()

  def __call__(self, params, state, x, y, rng, extra=None):
    del extra
    logits = self.model.apply({"params": params}, x, train=True, rngs={"dropout": rng})
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss, (state, dict(accuracy=jnp.mean(jnp.argmax(logits, -1) == y)))


@dataclasses.dataclass(frozen=True)
class VQVAELoss:
  """The VQ-VAE loss on whole images (k = 1) or on their k×k tiles; `state` is the codebook.

  With `adversarial_eps`, the input is FGSM-attacked against the classifier
  (`extra` = its params) at an ε drawn per image from that list, and the
  target is the clean image (Defense-VAE's adversarial -> clean pairs).
  """
  model: VQVAE
  k: int
  adversarial_eps: tuple[float, ...] = ()

  def pairs(self, x, y, rng, extra):
    """(input, target, ε per image) of one step, before tiling; ε is 0 for clean training."""
    if not self.adversarial_eps:
      return x, x, jnp.zeros(x.shape[:1], x.dtype)
    f = lambda v: Classifier().apply({"params": extra}, v)
    x_adv, eps_B = attacks.fgsm_pairs(f, x, y, self.adversarial_eps, jax.random.fold_in(rng, 1))
    return jax.lax.stop_gradient(x_adv), x, eps_B

  def __call__(self, params, codebook, x, y, rng, extra=None):
    x_in, target, _ = self.pairs(x, y, rng, extra)
    tiles = lambda v: split_lib.split(v, self.k) if self.k > 1 else v
    return self.model.loss(params, codebook, tiles(x_in), tiles(target))


def vqvae_model(c) -> VQVAE:
  v = c.vqvae
  return VQVAE(channels=v.channels, embedding_dim=v.embedding_dim, k_max=config_lib.k_max_of(c), layout=v.layout,
               commitment_cost=v.commitment_cost, decay=v.decay, epsilon=v.epsilon)


def kind_name(kind: str, mode: str) -> str:
  """'no_split'/'split' trained in `mode` ('clean' or 'adversarial')."""
  return kind if mode == "clean" else f"{kind}_adv"


def split_kind(c, k: int) -> str:
  """The (clean) kind whose model the Split purifier uses with k×k tiles; k = 1 is the No-Split VQ-VAE."""
  return "no_split" if k == 1 else "split" if k == c.vqvae.split_k else f"split_k{k}"


def kinds_of(c) -> list[str]:
  """Every VQ-VAE kind the config trains, in training order."""
  kinds = [kind_name(kind, mode) for mode in c.vqvae.training for kind in KINDS]
  return kinds + [kind for kind in (split_kind(c, k) for k in c.vqvae.split_ks) if kind not in kinds]


def tile_k(c, kind: str) -> int:
  if kind.startswith("no_split"):
    return 1
  return int(kind[len("split_k"):]) if kind.startswith("split_k") else c.vqvae.split_k


def is_adversarial(kind: str) -> bool:
  return kind.endswith("_adv")


def _stable_seed(c, name: str) -> int:
  return int(np.uint32(c.seed) ^ np.uint32(zlib.crc32(name.encode())))


def _task(section, seed: int, loss, n_train: int) -> training.Task:
  per_epoch = n_train // section.batch_size
  if per_epoch < 1:
    raise VQDefenseError(f"batch size {section.batch_size} is larger than the {n_train} training images")
  steps = section.steps or section.epochs * per_epoch
  opt = training.OptimizerSpec(section.optimizer, section.learning_rate, section.lr_decay_per_epoch, per_epoch)
  return training.Task(loss=loss, optimizer=opt, batch_size=section.batch_size, num_steps=steps, seed=seed)


def classifier_task(c, n_train: int) -> training.Task:
  return _task(c.classifier, _stable_seed(c, "classifier"), ClassifierLoss(), n_train)


def vqvae_task(c, kind: str, n_train: int) -> training.Task:
  # The seed depends on the kind only: every codebook size sees the same batches.
  eps = tuple(float(e) for e in c.vqvae.adversarial_epsilons) if is_adversarial(kind) else ()
  return _task(c.vqvae, _stable_seed(c, f"vqvae_{kind}"), VQVAELoss(vqvae_model(c), tile_k(c, kind), eps), n_train)


def ckpt_name(kind: str, size: int) -> str:
  return f"vqvae_{kind}_K{size}"


def sweep_name(kind: str, sizes) -> str:
  """One checkpoint for the stack of every codebook size of a kind (train.sweep)."""
  return f"vqvae_{kind}_sweep_K{'-'.join(str(s) for s in sizes)}"


def sweep_of(c, kind: str, mesh=None) -> training.Sweep:
  return training.Sweep(names=tuple(ckpt_name(kind, s) for s in c.vqvae.codebook_sizes),
                        model_axis=c.parallel.train_model_axis, mesh=mesh)


def example_input(c, kind: str) -> jnp.ndarray:
  side = c.data.image_size // tile_k(c, kind)
  return jnp.zeros((1, side, side, 1), jnp.float32)


def classifier_init(c, task: training.Task):
  x = example_input(c, "no_split")
  return lambda: (Classifier().init(jax.random.key(task.seed), x)["params"], {})


def vqvae_init(c, task: training.Task, kind: str, size: int):
  def init():
    v = vqvae_model(c).init(jax.random.key(task.seed), example_input(c, kind), size)
    return v["params"], v["codebook"]
  return init


def prepare_workdir(workdir: str) -> str:
  """Create the workdir and prove it is writable before any work starts."""
  workdir = os.path.abspath(workdir)
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=workdir):
      pass
  except OSError as e:
    raise VQDefenseError(f"workdir {workdir} is not writable: {e.strerror or e}") from e
  return workdir


def write_json_atomic(path: str, obj: Any) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2)
  os.replace(tmp, path)


def train_all(c, workdir: str, stop_at: int | None = None) -> dict[str, dict[str, float]]:
  """Train (or resume, or skip when finished) every model the config names; returns test metrics."""
  config_lib.validate(c)
  workdir = prepare_workdir(workdir)
  ds = data_lib.load_dataset(c.data)
  lead = jax.process_index() == 0  # on several hosts, one process writes the files (orbax coordinates itself)
  if lead:
    write_json_atomic(os.path.join(workdir, "config.json"), c.to_dict())
  metrics_file = os.path.join(workdir, "metrics.jsonl") if lead else None
  ckpt = lambda name: os.path.join(workdir, "checkpoints", name)
  common = dict(metrics_file=metrics_file, checkpoint_every=c.train.checkpoint_every, log_every=c.train.log_every,
                stop_at=stop_at)
  n = len(ds.train_images)
  # On the device once for every model (train() would otherwise copy it per model).
  train_x, train_y = jnp.asarray(ds.train_images), jnp.asarray(ds.train_labels)
  summary = {}

  task = classifier_task(c, n)
  ts = training.train(task, classifier_init(c, task), train_x, train_y, ckpt_dir=ckpt("classifier"),
                      name="classifier", **common)
  acc = classifier_accuracy(ts["params"], ds.test_images, ds.test_labels)
  summary["classifier"] = {"test_accuracy": acc}
  log.info("classifier: clean test accuracy %.4f (%d test images)", acc, len(ds.test_images))

  model = vqvae_model(c)
  sizes = list(c.vqvae.codebook_sizes)
  cls_params = ts["params"]
  for kind in kinds_of(c):
    task = vqvae_task(c, kind, n)
    inits = [vqvae_init(c, task, kind, size) for size in sizes]
    extra = cls_params if is_adversarial(kind) else None  # the classifier its training inputs attack
    if c.train.sweep:
      name = sweep_name(kind, sizes)
      ts = training.train(task, inits, train_x, train_y, ckpt_dir=ckpt(name), name=name,
                          sweep=sweep_of(c, kind), extra=extra, **common)
      states = [parallel.take(ts, i) for i in range(len(sizes))]
    else:
      states = [training.train(task, init, train_x, train_y, ckpt_dir=ckpt(ckpt_name(kind, size)),
                               name=ckpt_name(kind, size), extra=extra, **common)
                for size, init in zip(sizes, inits)]
    for size, ts in zip(sizes, states):
      name = ckpt_name(kind, size)
      m = vqvae_test_metrics(model, {"params": ts["params"], "codebook": ts["state"]}, tile_k(c, kind),
                             ds.test_images)
      summary[name] = m
      log.info("%s: test recon MSE %.5f (clean input), perplexity %.1f, dead codes %.1f%%", name,
               m["recon_mse"], m["perplexity"], 100 * m["dead_code_share"])
  with open(metrics_file or os.devnull, "a") as f:
    for name, m in summary.items():
      f.write(json.dumps({"model": name, "subset": "test", **m}) + "\n")
  return summary


@jax.jit
def _classifier_correct(params, x, y):
  return jnp.sum(jnp.argmax(Classifier().apply({"params": params}, x), -1) == y)


def classifier_accuracy(params, images: np.ndarray, labels: np.ndarray, batch: int = 1000) -> float:
  correct = sum(int(_classifier_correct(params, images[i:i + batch], labels[i:i + batch]))
                for i in range(0, len(images), batch))
  return correct / len(images)


def vqvae_test_metrics(model: VQVAE, variables, k: int, images: np.ndarray, batch: int = 500) -> dict[str, float]:
  """Reconstruction MSE over the test set, and code usage over all its tiles."""

  @jax.jit
  def run(x):
    x = split_lib.split(x, k) if k > 1 else x
    x_hat, aux = model.forward(variables["params"], variables["codebook"], x)
    return jnp.sum((x_hat - x) ** 2), jnp.bincount(aux["idx"], length=model.k_max)

  sq, count_K = 0.0, np.zeros(model.k_max, np.int64)
  for i in range(0, len(images), batch):
    s, cnt = run(images[i:i + batch])
    sq, count_K = sq + float(s), count_K + np.asarray(cnt)
  u = quantizer.usage_from_counts(jnp.asarray(count_K), variables["codebook"]["size"])
  return dict(recon_mse=sq / images[..., 0].size, perplexity=float(u["perplexity"]),
              dead_code_share=float(u["dead_code_share"]))


def load_trained(c, workdir: str, n_train: int):
  """Classifier params and {kind: stacked variables of every codebook size} from finished checkpoints.

  `n_train` (the training-set size) fixes the step counts the checkpoints must have reached.
  """
  workdir = os.path.abspath(workdir)
  ckpt = lambda name: os.path.join(workdir, "checkpoints", name)

  def load(task, init_fn, name):
    abstract = jax.eval_shape(lambda: training.initial_state(task, init_fn))
    ts = training.restore(ckpt(name), abstract)
    step = int(np.asarray(ts["step"]).reshape(-1)[0])
    if step != task.num_steps:
      raise VQDefenseError(f"{name}: checkpoint is at step {step} of {task.num_steps}; re-run train.py "
                           "with the same config and workdir to finish training")
    return ts

  task = classifier_task(c, n_train)
  cls = load(task, classifier_init(c, task), "classifier")["params"]
  sizes = list(c.vqvae.codebook_sizes)
  vq = {}
  for kind in kinds_of(c):
    task = vqvae_task(c, kind, n_train)
    inits = [vqvae_init(c, task, kind, size) for size in sizes]
    if c.train.sweep:
      ts = load(task, inits, sweep_name(kind, sizes))
    else:
      ts = parallel.stack([load(task, init, name) for name, init in zip(vqvae_checkpoints(c, kind), inits)])
    vq[kind] = {"params": ts["params"], "codebook": ts["state"]}
  return cls, vq


def vqvae_checkpoints(c, kind: str) -> list[str]:
  """The checkpoint names of a kind: one sweep, or one per codebook size (train.sweep = False)."""
  sizes = c.vqvae.codebook_sizes
  return [sweep_name(kind, sizes)] if c.train.sweep else [ckpt_name(kind, s) for s in sizes]


def missing_checkpoints(c, workdir: str, n_train: int) -> list[str]:
  """Names of the checkpoints `load_trained` needs that are absent or unfinished."""
  workdir = os.path.abspath(workdir)
  names = {"classifier": classifier_task(c, n_train).num_steps}
  for kind in kinds_of(c):
    names.update(dict.fromkeys(vqvae_checkpoints(c, kind), vqvae_task(c, kind, n_train).num_steps))
  missing = []
  for name, steps in names.items():
    d = os.path.join(workdir, "checkpoints", name)
    mngr = training.checkpoint_manager(d) if os.path.isdir(d) else None
    try:
      if mngr is None or mngr.latest_step() != steps:
        missing.append(name)
    finally:
      if mngr is not None:
        mngr.close()
  return missing
