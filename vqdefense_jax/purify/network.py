"""The purification grid's network purifier: a trained network that another system offers (core/defence.py's
registry; the restorer), trained here on (FGSM against the classifier, clean) pairs and
measured in the grid as one more defence with its own parameters.

Nothing here names the system that offers it: `eval.purifiers` lists it, and its module registered it on import.
"""

import dataclasses
import functools
import logging
import os
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from vqdefense_jax.core import data as data_lib
from vqdefense_jax.core import defence
from vqdefense_jax.core import experiment as skeleton
from vqdefense_jax.core import parallel
from vqdefense_jax.core import training
from vqdefense_jax.core.defence import ModulePurifier
from vqdefense_jax.core.metrics import MetricsLog
from vqdefense_jax.purify import runs as runs_lib

if TYPE_CHECKING:  # experiment.py builds the network's run here
  from vqdefense_jax.purify.experiment import Experiment

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Network:
  """The grid's network purifier (eval.purifiers lists it): what its system offers (core/defence.py) and its
  section, checked."""
  offer: defence.NetworkPurifier
  spec: Any

  @property
  def name(self) -> str:
    return self.offer.name

  @classmethod
  def from_config(cls, c, image_size: int) -> "Network | None":
    offers = defence.network_purifiers()
    named = [offers[p] for p in c.eval.purifiers if p in offers]
    return cls(named[0], named[0].spec(c[named[0].name], image_size, c.seed)) if named else None


def network_record(exp: "Experiment", ds: data_lib.Dataset) -> dict[str, Any]:
  """A network purifier is made from the training images, FGSM pairs against the classifier, and its section."""
  return dict(model=exp.network.name, **runs_lib.common_record(exp, ds),
              classifier=runs_lib.classifier_record(exp, ds), **exp.network.spec.record())


def network_run(exp: "Experiment", ds: data_lib.Dataset) -> skeleton.Run:
  """The network purifier's run (eval.purifiers lists it): its batches index the training images, whose
  (FGSM, clean) pairs `train_network` makes once the classifier is trained."""
  spec, n = exp.network.spec, len(ds.train_images)
  return skeleton.Run(exp.network.name, spec.step, lambda: spec.init(exp.data.image_size), spec.steps,
                      spec.batch_size, network_record(exp, ds), needs=("classifier",),
                      batches=skeleton.index_batches(exp.network.name, spec.step.seed, n, spec.batch_size))


def _pairs_seed(exp: "Experiment", split: str) -> int:
  return training.stable_seed(exp.seed, f"{exp.network.name}/pairs/{split}")


def train_network(exp: "Experiment", run: skeleton.Run, workdir: str, ds: data_lib.Dataset, cls_params,
                  metrics: MetricsLog, stop_at: int | None) -> dict[str, float]:
  """Train the network purifier on (FGSM against the classifier, clean) pairs; its test MSEs to the clean images."""
  spec = exp.network.spec
  attacked = lambda images, labels, split: exp.network.offer.pairs(
      cls_params, exp.classifier_model, images, labels, spec.epsilons, _pairs_seed(exp, split))
  consts = (jnp.asarray(attacked(ds.train_images, ds.train_labels, "train")), jnp.asarray(ds.train_images))
  state = skeleton.fit_run(run, workdir, consts, metrics, exp.loop, stop_at)
  x_adv = attacked(ds.test_images, ds.test_labels, "test")
  mse = lambda a: float(np.mean((a - ds.test_images) ** 2))
  restore = functools.partial(purify_with, network_purifier(exp), exp.network.offer.params(state))
  m = dict(attacked_mse=mse(x_adv), restored_mse=mse(parallel.batched(restore, x_adv)),
           clean_restored_mse=mse(parallel.batched(restore, ds.test_images)))
  log.info("%s: test MSE to the clean images: attacked %.5f, restored %.5f; clean inputs restored %.5f", run.name,
           m["attacked_mse"], m["restored_mse"], m["clean_restored_mse"])
  return m


def network_purifier(exp: "Experiment") -> ModulePurifier:
  """The network purifier (the restorer: its generator) as a purifier of the grid."""
  return exp.network.offer.purifier(exp.network.spec)


@functools.partial(jax.jit, static_argnums=0)
def purify_with(pur: ModulePurifier, params, x):
  return pur(params, x)


def load_network(exp: "Experiment", workdir: str, ds: data_lib.Dataset) -> Any:
  """The network purifier's params from its finished checkpoint, which must match this config's record."""
  return exp.network.offer.params(skeleton.load(network_run(exp, ds), os.path.abspath(workdir)))
