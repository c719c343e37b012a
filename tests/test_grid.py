"""The one-computation grid: compiled once, equal to the per-size evaluation, pairing, chunking."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import synthetic_mnist, tiny
from vqdefense_jax import data as data_lib
from vqdefense_jax import attacks, evaluation, experiment, grid, parallel, report


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """The tiny config trained once for this module: (config, classifier params, stacks, dataset)."""
  d = tmp_path_factory.mktemp("data")
  np.savez(d / "mnist_uint8.npz", **synthetic_mnist())
  c = tiny(str(d))
  workdir = str(tmp_path_factory.mktemp("run"))
  experiment.train_all(c, workdir)
  ds = data_lib.load_dataset(c.data)
  cls, stacks = experiment.load_trained(c, workdir, len(ds.train_images))
  return c, cls, stacks, ds


def _per_size(c, cls, stacks, ds, i_no_split, i_split):
  return evaluation.accuracy_table(c, cls, parallel.take(stacks["no_split"], i_no_split),
                                   parallel.take(stacks["split"], i_split), ds.test_images, ds.test_labels)


def test_grid_equals_per_size_evaluation(trained):
  c, cls, stacks, ds = trained
  c = c.copy_and_resolve_references()
  c.grid.chunk_size = c.eval.batch_size
  res = grid.run_grid(c, cls, stacks, ds.test_images, ds.test_labels)
  chex.assert_shape(np.asarray(res["accuracy"]), (1, 1, 4, len(c.vqvae.codebook_sizes), len(c.attack.epsilons)))
  acc_PxMxE = np.asarray(res["accuracy"])[0, 0]   # fgsm, clean training
  undefended = np.asarray(res["undefended"])[0]
  names = res["axes"]["purifier"]
  assert names == [p for p in c.eval.purifiers if p != "none"]
  chex.assert_shape(acc_PxMxE, (len(names), len(c.vqvae.codebook_sizes), len(c.attack.epsilons)))
  for m in range(len(c.vqvae.codebook_sizes)):
    table_PxE = _per_size(c, cls, stacks, ds, m, m)  # rows: c.eval.purifiers, 'none' first
    rows = {p: table_PxE[j] for j, p in enumerate(c.eval.purifiers)}
    np.testing.assert_allclose(undefended, rows["none"], atol=1e-12)
    for j, p in enumerate(names):
      np.testing.assert_allclose(acc_PxMxE[j, m], rows[p], atol=1e-12, err_msg=f"{p}, model {m}")
  # Something was actually measured: the attack hurts the undefended classifier.
  assert undefended[-1] < undefended[0]


def test_grid_compiles_once_across_sizes_data_and_epsilons(trained):
  c, cls, stacks, ds = trained
  purifiers = grid.purifiers_of(c)
  mesh = parallel.make_mesh(1, jax.devices()[:1])
  counted = jax.jit(chex.assert_max_traces(grid.grid_counts_fn, n=1), static_argnums=(0, 1, 2, 3))
  x, y, w, i = grid.chunked(ds.test_images, ds.test_labels, 16)
  eps = jnp.asarray(c.attack.epsilons, jnp.float32)
  attack_list = (attacks.Attack("fgsm"), attacks.Attack("pgd", steps=2), attacks.Attack("bpda_pgd", steps=2))
  seed = jnp.uint32(0)
  counted(purifiers, attack_list, "map", mesh, cls, stacks["no_split"], stacks["split"], x, y, w, i, eps, seed)
  # Other codebook sizes (data, not shape), other weights, other images, other ε: no new trace.
  resized = lambda s: {**s, "codebook": {**s["codebook"], "size": s["codebook"]["size"] - 1}}
  other = jax.tree.map(lambda a: a * 1.01 if a.dtype == jnp.float32 else a, resized(stacks["split"]))
  counted(purifiers, attack_list, "map", mesh, cls, resized(stacks["no_split"]), other, x[::-1], y[::-1], w, i,
          eps / 2, seed + 1)


def test_chunk_size_and_padding_do_not_change_the_result(trained):
  c, cls, stacks, ds = trained
  purifiers = grid.purifiers_of(c)
  mesh = parallel.make_mesh(1, jax.devices()[:1])
  runs = [grid.run_counts(purifiers, "map", mesh, cls, stacks["no_split"], stacks["split"], ds.test_images,
                          ds.test_labels, c.attack.epsilons, chunk) for chunk in (7, 40)]
  assert runs[0][2]["num_chunks"] == 6 and runs[1][2]["num_chunks"] == 1  # 40 images: 6×7 with 2 padded
  np.testing.assert_allclose(runs[0][0], runs[1][0], atol=1e-12)
  np.testing.assert_allclose(runs[0][1], runs[1][1], atol=1e-12)


def test_vmap_and_map_over_models_agree(trained):
  c, cls, stacks, ds = trained
  purifiers = grid.purifiers_of(c)
  mesh = parallel.make_mesh(1, jax.devices()[:1])
  out = {axis: grid.run_counts(purifiers, axis, mesh, cls, stacks["no_split"], stacks["split"], ds.test_images,
                               ds.test_labels, c.attack.epsilons, 40)[1] for axis in ("map", "vmap")}
  # Grouped and plain convolutions may round differently; allow one image of the 40 to flip.
  np.testing.assert_allclose(out["map"], out["vmap"], atol=1 / 40 + 1e-9)


def test_best_pairing_uses_the_best_size_of_each_kind(trained):
  c, cls, stacks, ds = trained
  c = c.copy_and_resolve_references()
  c.grid.pairing = "best"
  c.grid.best_eps_max = 0.1
  res = grid.run_grid(c, cls, stacks, ds.test_images, ds.test_labels)
  assert res["axes"]["purifier"] == ["no_split", "split"]
  acc_PxMxE = np.asarray(res["accuracy"])[0, 0]
  low = np.asarray(c.attack.epsilons) <= 0.1
  sizes = list(c.vqvae.codebook_sizes)
  expected = {kind: sizes[int(np.argmax(acc_PxMxE[j][:, low].mean(1)))] for j, kind in enumerate(("no_split", "split"))}
  assert res["best_size"] == expected
  paired = res["paired"]
  assert (paired["no_split_size"], paired["split_size"]) == (expected["no_split"], expected["split"])
  table_PxE = _per_size(c, cls, stacks, ds, sizes.index(expected["no_split"]), sizes.index(expected["split"]))
  for p in ("vae_to_split", "split_to_vae"):
    np.testing.assert_allclose(paired["accuracy"][0][0][paired["purifier"].index(p)],
                               table_PxE[list(c.eval.purifiers).index(p)], atol=1e-12)


def test_best_index_criterion():
  acc_MxE = np.array([[0.9, 0.8, 0.1], [0.95, 0.7, 0.9], [0.9, 0.85, 0.0]])
  assert report.best_index(acc_MxE, [0.0, 0.05, 0.3], 0.08) == 2  # mean over ε <= 0.08 only: 0.875
  assert report.best_index(acc_MxE, [0.0, 0.05, 0.3], 0.3) == 1
