"""Beyond the paper, in the grid: attack axis (grey- and white-box), adversarially trained purifiers, finer splits."""

import dataclasses
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vqdefense_jax.core import attacks, parallel, tiles
from vqdefense_jax.core.classifier import Classifier
from vqdefense_jax.purify import experiment, grid
from vqdefense_jax.purify.purifiers import Purifier, VQParams

pytestmark = pytest.mark.slow  # trains every extension once (about a minute)

ATTACKS = ("fgsm", "pgd", "bpda_fgsm", "ste_pgd")  # as in conftest.tiny_beyond


@pytest.fixture(scope="module")
def results(trained_beyond):
  t = trained_beyond
  spec = dataclasses.replace(t.exp.grid, chunk_size=len(t.ds.test_images))  # one chunk: the direct computation's shapes
  return grid.run_grid(t.exp.vq, t.exp.attack, spec, "map", t.exp.seed, t.cls,
                       grid.vqvae_defences(t.exp.vq, t.exp.eval.purifiers, t.stacks), t.ds.test_images,
                       t.ds.test_labels, parallel.make_mesh(1))


@pytest.mark.slow
def test_every_kind_is_trained_as_one_sweep_checkpoint(trained_beyond):
  exp, workdir, stacks = trained_beyond.exp, trained_beyond.workdir, trained_beyond.stacks
  names = [kind.name for kind in exp.vq.kinds]
  assert names == ["no_split", "split", "no_split_adv", "split_adv", "split_k4"]
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == sorted(
      ["classifier"] + [f"vqvae_{k}_sweep_K4-6" for k in names])
  # k = 1 is the No-Split VQ-VAE and k = 2 the 4-Split one: nothing is trained twice.
  assert exp.vq.split_kind(1).name == "no_split" and exp.vq.split_kind(2).name == "split"
  assert experiment.missing_checkpoints(exp, workdir, trained_beyond.ds) == []
  # The adversarial kinds learned something else than the clean ones from the same initial weights.
  diff = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), stacks[exp.vq.kind(2)]["params"],
                      stacks[exp.vq.kind(2, "adversarial")]["params"])
  assert max(jax.tree.leaves(diff)) > 1e-3


@pytest.mark.slow
def test_adversarial_training_pairs_differ_from_the_clean_images_by_at_most_eps(trained_beyond):
  c, exp, cls, ds = trained_beyond.config, trained_beyond.exp, trained_beyond.cls, trained_beyond.ds
  loss = experiment.vqvae_step(exp, exp.vq.kind(2, "adversarial"), len(ds.train_images)).loss
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
  x_in, target, eps_B = experiment.vqvae_step(exp, exp.vq.kind(2), 240).loss.pairs(x, y, jax.random.key(3), cls)
  assert x_in is x and target is x and not np.any(eps_B)


def test_grid_axes_and_shapes(results):
  assert results.attack == ATTACKS + ("worst_case",) and results.training == ("clean", "adversarial")
  # White-box attacks see the purifier: ε = 0.5 joins the config's three as the chance check.
  assert results.epsilon == (0.0, 0.1, 0.3, 0.5) and results.chance_epsilons == (0.5,)
  chex.assert_shape(results.accuracy, (5, 2, 4, 2, 4))
  chex.assert_shape(results.undefended, (5, 4))
  chex.assert_shape(results.split_k.accuracy, (5, 3, 2, 4))
  assert results.threat_model["fgsm"].startswith("grey-box")
  assert results.threat_model["ste_pgd"].startswith("white-box")
  assert results.threat_model["worst_case"].startswith("per image, the worst case over fgsm, pgd")
  # Against no purifier, a white-box attack is its grey-box version.
  und = results.undefended
  np.testing.assert_array_equal(und[2], und[0])                     # bpda_fgsm = fgsm
  # The worst case is never above any single attack.
  assert np.all(results.accuracy[4] <= results.accuracy[:4].min(axis=0) + 1e-12)
  assert np.all(und[4] <= und[:4].min(axis=0) + 1e-12)


@pytest.mark.slow
def test_split_k_rows_equal_the_split_purifier_run_with_k_tiles(trained_beyond, results):
  """k = 1 and 2 reuse the main call's no_split and split rows; check them against explicit k-tile runs."""
  exp, cls, stacks, ds = trained_beyond.exp, trained_beyond.cls, trained_beyond.stacks, trained_beyond.ds
  by_k = results.split_k.accuracy                                  # (A, K, M, E)
  model = exp.vq.model
  mesh = parallel.make_mesh(1, jax.devices()[:1])
  for j, k in enumerate(results.split_k.k):
    kind = exp.vq.split_kind(k)
    _, acc_MxAx1xE, _, _, _ = grid.run_counts((Purifier("split", model, model, k),), "map", mesh, cls,
                                        VQParams(stacks[kind], stacks[kind]), ds.test_images, ds.test_labels,
                                        exp.attack.epsilons, len(ds.test_images), attack_list=exp.attack.attacks,
                                        seed=exp.seed)
    np.testing.assert_allclose(by_k[:, j], acc_MxAx1xE[:, :, 0].transpose(1, 0, 2), atol=1e-12, err_msg=f"k={k}")
  assert [t["what"] for t in results.timing] == ["grid", "split k=4"]   # k = 1, 2: no extra call


@pytest.mark.slow
@pytest.mark.parametrize("attack_index,training", [(2, "clean"), (3, "adversarial")])
def test_white_box_cells_equal_a_direct_attack_through_the_purifier(trained_beyond, results, attack_index,
                                                                   training):
  """bpda_fgsm and ste_pgd against the 4-Split purifier of size index 1, computed outside the grid."""
  exp, cls, stacks, ds = trained_beyond.exp, trained_beyond.cls, trained_beyond.stacks, trained_beyond.ds
  t = results.training.index(training)
  split_vars = parallel.take(stacks[exp.vq.kind(2, training)], 1)
  model = exp.vq.model
  purify = lambda x: tiles.merge(model.reconstruct(split_vars, tiles.split(x, 2)), 2)
  f = lambda x: Classifier().apply({"params": cls}, x)
  attack = exp.attack.attacks[attack_index]
  x, y = jnp.asarray(ds.test_images), jnp.asarray(ds.test_labels)
  x_adv = attacks.run(attack, f, x, y, jnp.asarray(exp.attack.epsilons), purify=purify,
                      key=jax.random.key(exp.seed), index_B=jnp.arange(len(x)))
  direct_E = [float(jnp.mean(jnp.argmax(f(purify(xa)), -1) == y)) for xa in x_adv]
  in_grid = results.accuracy[attack_index, t, results.purifier.index("split"), 1]
  np.testing.assert_allclose(in_grid, direct_E, atol=1 / 40 + 1e-9)   # one image may flip by rounding


def test_white_box_attacks_are_at_least_as_strong_as_grey_box_on_the_purifier(results):
  acc = results.accuracy[:, 0]                       # clean training: (A, P, M, E)
  # ste_pgd (white-box PGD) against pgd (grey-box PGD, same steps) at the largest ε, summed over cells.
  assert acc[3, ..., -1].sum() <= acc[1, ..., -1].sum()
