"""The images a detection experiment scores: every source of fakes (eval.sources), and the Fréchet distances.

Every image the detector sees, real or fake, is quantised to 8 bits (`quantize`), so it cannot tell them apart
by quantisation alone. Samples come in batches from a key of (seed, purpose), so training fakes, test fakes and
the figure's differ, and none depends on the batch size.
"""

import functools
from typing import TYPE_CHECKING, Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from vqdefense_jax.core import attacks
from vqdefense_jax.core import classifier
from vqdefense_jax.core import data as data_lib
from vqdefense_jax.core import experiment as skeleton
from vqdefense_jax.core import parallel
from vqdefense_jax.core import training
from vqdefense_jax.detect import alae as alae_lib
from vqdefense_jax.detect import dcgan as dcgan_lib
from vqdefense_jax.purify import api as purify_api

if TYPE_CHECKING:  # experiment.py makes its sources here
  from vqdefense_jax.detect.experiment import Experiment


def quantize(x: np.ndarray) -> np.ndarray:
  """Images as an 8-bit file would store them. Every image the detector sees, real or fake, is quantised
  this way, so it cannot tell them apart by quantisation alone (generators output continuous values)."""
  return (np.rint(np.clip(x, 0.0, 1.0) * 255) / 255).astype(np.float32)


def samples(sample: Callable, exp: "Experiment", params, n: int, shape, purpose: str,
            batch: int = 1000) -> np.ndarray:
  """n samples of a generator (`alae.sample`, `dcgan.sample`), in batches, from a key of (seed, purpose):
  training fakes and test fakes differ."""
  key = jax.random.key(training.stable_seed(exp.seed, f"samples/{purpose}"))
  out = [np.asarray(sample(params, jax.random.fold_in(key, i), min(batch, n - i), tuple(shape)))
         for i in range(0, n, batch)]
  return np.concatenate(out) if out else np.zeros((0,) + tuple(shape), np.float32)


def alae_reconstructions(params, images: np.ndarray) -> np.ndarray:
  return parallel.batched(functools.partial(alae_lib.reconstruct, params), images, batch=1000)


def purify_sources(exp: "Experiment", purify_models, images: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
  """The sources made by the purification experiment's models from real test images: VQ-VAE reconstructions
  (No-Split, Split) and grey-box FGSM / PGD examples against the classifier at every eval.attack_epsilons."""
  p, wanted, out = exp.purify, exp.eval.sources, {}
  cls_params, stacks = purify_models
  if {"vqvae_no_split", "vqvae_split"} & set(wanted):
    no_split, split = (parallel.take(stacks[kind], 0) for kind in p.vq.paper_kinds)
    for pur in purify_api.make_purifiers(p.vq, [s[len("vqvae_"):] for s in wanted if s.startswith("vqvae_")]):
      out[f"vqvae_{pur.name}"] = parallel.batched(jax.jit(functools.partial(pur, purify_api.VQParams(no_split, split))),
                                                  images)
  a = p.config["attack"]
  key = jax.random.key(training.stable_seed(exp.seed, "attack_sources"))
  eps_E = jnp.asarray(exp.eval.attack_epsilons, jnp.float32)
  for name in (n for n in ("fgsm", "pgd") if n in wanted):
    atk = attacks.Attack(name, a["pgd_steps"], a["pgd_step_size"], a["pgd_random_start"])
    run = jax.jit(lambda x, y, i, atk=atk: attacks.run(atk, classifier.logits_fn(cls_params, p.classifier_model), x,
                                                       y, eps_E, key=key, index_B=i))
    adv_ExN = parallel.batched(run, images, labels, np.arange(len(images), dtype=np.int32), axis=1)
    out.update({f"{name}_eps{e:g}": adv_ExN[i] for i, e in enumerate(exp.eval.attack_epsilons)})
  return out


def make_sources(exp: "Experiment", params: dict[str, Any], ds: data_lib.Dataset, n: int) -> dict[str, np.ndarray]:
  """Every eval.sources image set (n images each, quantised to 8 bits), by source name."""
  shape = skeleton.image_shape(ds)
  out = {}
  if "alae_samples" in exp.eval.sources:
    out["alae_samples"] = samples(alae_lib.sample, exp, params["alae"], n, shape, "test")
  if "alae_reconstructions" in exp.eval.sources:
    out["alae_reconstructions"] = alae_reconstructions(params["alae"], ds.test_images[:n])
  if "dcgan_samples" in exp.eval.sources:
    out["dcgan_samples"] = samples(dcgan_lib.sample, exp, params["dcgan"], n, shape, "dcgan")
  if exp.purify is not None:
    out.update(purify_sources(exp, params["purify"], ds.test_images[:n], ds.test_labels[:n]))
  return {name: quantize(out[name]) for name in exp.eval.source_names}


def fid(exp: "Experiment", params: dict[str, Any], ds: data_lib.Dataset, fakes: dict[str, np.ndarray],
        reals: np.ndarray) -> dict[str, float]:
  """Fréchet distance of every source, and of real training images (the floor), to the real test images on the
  classifier's penultimate features."""
  cls_params, _ = params["purify"]
  model = exp.purify.classifier_model
  feats = lambda x: parallel.batched(jax.jit(lambda b: classifier.features(cls_params, b, model)), x)
  real = feats(reals)
  sets = dict(fakes, real_train=quantize(ds.train_images[:len(reals)]))
  return {name: alae_lib.frechet_distance(real, feats(x)) for name, x in sets.items()}
