"""Beyond the paper, in the grid: attack axis (grey- and white-box), adversarially trained purifiers, finer splits."""

import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import synthetic_mnist, tiny
from vqdefense_jax import attacks
from vqdefense_jax import data as data_lib
from vqdefense_jax import experiment, grid, parallel, split
from vqdefense_jax.models import Classifier
from vqdefense_jax.purifiers import make_purifier

ATTACKS = ("fgsm", "pgd", "bpda_fgsm", "ste_pgd")


@pytest.fixture(scope="module")
def beyond(tmp_path_factory):
  """The tiny config with every extension on, trained once: (config, workdir, classifier, stacks, dataset)."""
  d = tmp_path_factory.mktemp("data")
  np.savez(d / "mnist_uint8.npz", **synthetic_mnist())
  c = tiny(str(d))
  c.vqvae.training = ("clean", "adversarial")
  c.vqvae.split_ks = (1, 2, 4)       # 16x16 images: tiles of 16, 8 and 4 pixels
  c.attack.names = ATTACKS
  c.attack.pgd_steps = 3
  workdir = str(tmp_path_factory.mktemp("run"))
  experiment.train_all(c, workdir)
  ds = data_lib.load_dataset(c.data)
  cls, stacks = experiment.load_trained(c, workdir, len(ds.train_images))
  return c, workdir, cls, stacks, ds


@pytest.fixture(scope="module")
def results(beyond):
  c, _, cls, stacks, ds = beyond
  c = c.copy_and_resolve_references()
  c.grid.chunk_size = len(ds.test_images)   # one chunk: the same batch shapes as the direct computation below
  return grid.run_grid(c, cls, stacks, ds.test_images, ds.test_labels)


def test_every_kind_is_trained_as_one_sweep_checkpoint(beyond):
  c, workdir, _, stacks, _ = beyond
  assert experiment.kinds_of(c) == ["no_split", "split", "no_split_adv", "split_adv", "split_k4"]
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == sorted(
      ["classifier"] + [f"vqvae_{k}_sweep_K4-6" for k in experiment.kinds_of(c)])
  # k = 1 is the No-Split VQ-VAE and k = 2 the 4-Split one: nothing is trained twice.
  assert experiment.split_kind(c, 1) == "no_split" and experiment.split_kind(c, 2) == "split"
  assert experiment.missing_checkpoints(c, workdir, 240) == []
  # The adversarial kinds learned something else than the clean ones from the same initial weights.
  diff = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), stacks["split"]["params"],
                      stacks["split_adv"]["params"])
  assert max(jax.tree.leaves(diff)) > 1e-3


def test_adversarial_training_pairs_differ_from_the_clean_images_by_at_most_eps(beyond):
  c, workdir, cls, _, ds = beyond
  loss = experiment.vqvae_task(c, "split_adv", len(ds.train_images)).loss
  x, y = jnp.asarray(ds.train_images[:32]), jnp.asarray(ds.train_labels[:32])
  x_in, target, eps_B = loss.pairs(x, y, jax.random.key(3), cls)
  np.testing.assert_array_equal(target, x)                          # the target is the clean image
  delta_B = np.abs(np.asarray(x_in - x)).reshape(32, -1).max(1)
  assert np.all(delta_B <= np.asarray(eps_B) + 1e-6) and delta_B.max() > 0.1
  assert {round(float(e), 4) for e in eps_B} <= set(c.vqvae.adversarial_epsilons)
  # Against the classifier: the attacked inputs are misclassified more often.
  f = lambda v: Classifier().apply({"params": cls}, v)
  assert jnp.mean(jnp.argmax(f(x_in), -1) == y) < jnp.mean(jnp.argmax(f(x), -1) == y)
  # Clean training: input = target, no attack.
  x_in, target, eps_B = experiment.vqvae_task(c, "split", 240).loss.pairs(x, y, jax.random.key(3), cls)
  assert x_in is x and target is x and not np.any(eps_B)


def test_grid_axes_and_shapes(beyond, results):
  c, *_ = beyond
  axes = results["axes"]
  assert axes["attack"] == list(ATTACKS) and axes["training"] == ["clean", "adversarial"]
  chex.assert_shape(np.asarray(results["accuracy"]), (4, 2, 4, 2, 3))
  chex.assert_shape(np.asarray(results["undefended"]), (4, 3))
  chex.assert_shape(np.asarray(results["split_k"]["accuracy"]), (4, 3, 2, 3))
  assert results["threat_model"]["fgsm"].startswith("grey-box")
  assert results["threat_model"]["ste_pgd"].startswith("white-box")
  # Against no purifier, a white-box attack is its grey-box version.
  und = np.asarray(results["undefended"])
  np.testing.assert_array_equal(und[2], und[0])                     # bpda_fgsm = fgsm


def test_split_k_rows_equal_the_split_purifier_run_with_k_tiles(beyond, results):
  """k = 1 and 2 reuse the main call's no_split and split rows; check them against explicit k-tile runs."""
  c, _, cls, stacks, ds = beyond
  by_k = np.asarray(results["split_k"]["accuracy"])                 # (A, K, M, E)
  model = experiment.vqvae_model(c)
  mesh = parallel.make_mesh(1, jax.devices()[:1])
  for j, k in enumerate(results["split_k"]["k"]):
    kind = experiment.split_kind(c, k)
    _, acc_MxAx1xE, _ = grid.run_counts((make_purifier("split", model, model, k),), "map", mesh, cls, stacks[kind],
                                        stacks[kind], ds.test_images, ds.test_labels, c.attack.epsilons,
                                        len(ds.test_images), attack_list=grid.attacks_of(c), seed=c.seed)
    np.testing.assert_allclose(by_k[:, j], acc_MxAx1xE[:, :, 0].transpose(1, 0, 2), atol=1e-12, err_msg=f"k={k}")
  assert [t["what"] for t in results["timing"]] == ["grid", "split k=4"]   # k = 1, 2: no extra call


@pytest.mark.parametrize("attack_index,training", [(2, "clean"), (3, "adversarial")])
def test_white_box_cells_equal_a_direct_attack_through_the_purifier(beyond, results, attack_index, training):
  """bpda_fgsm and ste_pgd against the 4-Split purifier of size index 1, computed outside the grid."""
  c, _, cls, stacks, ds = beyond
  t = results["axes"]["training"].index(training)
  split_vars = parallel.take(stacks[experiment.kind_name("split", training)], 1)
  model = experiment.vqvae_model(c)
  purify = lambda x: split.merge(model.reconstruct(split_vars, split.split(x, 2)), 2)
  f = lambda x: Classifier().apply({"params": cls}, x)
  attack = grid.attacks_of(c)[attack_index]
  x, y = jnp.asarray(ds.test_images), jnp.asarray(ds.test_labels)
  x_adv = attacks.run(attack, f, x, y, jnp.asarray(c.attack.epsilons), purify=purify, key=jax.random.key(c.seed),
                      index_B=jnp.arange(len(x)))
  direct_E = [float(jnp.mean(jnp.argmax(f(purify(xa)), -1) == y)) for xa in x_adv]
  in_grid = np.asarray(results["accuracy"])[attack_index, t, results["axes"]["purifier"].index("split"), 1]
  np.testing.assert_allclose(in_grid, direct_E, atol=1 / 40 + 1e-9)   # one image may flip by rounding


def test_white_box_attacks_are_at_least_as_strong_as_grey_box_on_the_purifier(results):
  acc = np.asarray(results["accuracy"])[:, 0]                       # clean training: (A, P, M, E)
  # ste_pgd (white-box PGD) against pgd (grey-box PGD, same steps) at the largest ε, summed over cells.
  assert acc[3, ..., -1].sum() <= acc[1, ..., -1].sum()
