"""The restorer as a purifier: its (FGSM, clean) pairs, its place in the grid under grey- and
white-box attacks, its results, tables and figure, and its record."""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from support import tiny
from vqdefense_jax.core import attacks, classifier, parallel
from vqdefense_jax.core.errors import VQDefenseError
from vqdefense_jax.purify import experiment, grid, report
from vqdefense_jax.purify.results import GridResult
from vqdefense_jax.restore import gan
from vqdefense_jax.restore import purifier as restore_purifier

EPS = (0.1, 0.2, 0.3)


def with_restorer(data_dir: str):
  """The tiny config with a tiny restorer as one more purifier, and a white-box attack."""
  c = tiny(data_dir)
  c.eval.purifiers = ("none", "no_split", "restorer")
  c.attack.names = ("fgsm", "ste_fgsm")
  c.restorer.width = 4
  c.restorer.blocks = 1
  c.restorer.d_width = 4
  c.restorer.batch_size = 16
  c.restorer.steps = 6
  c.restorer.epsilons = EPS
  return c


def _random_classifier(seed: int = 0):
  return classifier.init_params(seed, 16, classifier.Classifier())


@pytest.mark.slow
def test_pairs_stay_in_their_eps_ball_and_are_fgsm_at_each_images_eps(data_dir):
  rng = np.random.default_rng(0)
  x = rng.uniform(0, 1, (20, 16, 16, 1)).astype(np.float32)
  y = rng.integers(0, 10, 20).astype(np.int32)
  cls, model = _random_classifier(), classifier.Classifier()
  x_adv = restore_purifier.adversarial_pairs(cls, model, x, y, EPS, seed=5)
  eps_N = restore_purifier.pair_epsilons(EPS, 20, 5)
  assert {round(float(e), 4) for e in eps_N} <= set(EPS) and len(set(eps_N.tolist())) > 1
  delta_N = np.abs(x_adv - x).reshape(20, -1).max(1)
  assert np.all(delta_N <= eps_N + 1e-6) and np.all(delta_N > 0)
  # Image i is FGSM at its own ε: the same as attacks.fgsm at that ε.
  every = np.asarray(attacks.fgsm(classifier.logits_fn(cls, model), jnp.asarray(x), jnp.asarray(y),
                                  jnp.asarray(EPS, jnp.float32)))                  # (E, N, ...)
  expected = every[[EPS.index(round(float(e), 4)) for e in eps_N], np.arange(20)]
  np.testing.assert_allclose(x_adv, expected, atol=1e-6)
  # From the seed alone: batching changes nothing, another seed draws other ε.
  np.testing.assert_array_equal(x_adv, restore_purifier.adversarial_pairs(cls, model, x, y, EPS, seed=5, batch=7))
  assert not np.array_equal(eps_N, restore_purifier.pair_epsilons(EPS, 20, 6))


@pytest.mark.slow
def test_module_purifier_is_its_generator_and_equal_by_value(data_dir):
  exp = experiment.Experiment.from_config(with_restorer(data_dir))
  state = exp.network.spec.init(16)
  pur = experiment.network_purifier(exp)
  assert pur == experiment.network_purifier(exp) and hash(pur) == hash(experiment.network_purifier(exp))
  assert pur.label == "restorer" and pur.gate is None
  x = jnp.asarray(np.random.default_rng(1).uniform(0, 1, (3, 16, 16, 1)), jnp.float32)
  expected = gan.restore(state.params, x)
  np.testing.assert_allclose(pur(state.params.generator, x), expected, atol=1e-6)
  np.testing.assert_allclose(pur.differentiable(state.params.generator, x), expected, atol=1e-6)
  # White-box: the attacker differentiates through G (a gradient that is not zero).
  g = jax.grad(lambda v: pur.differentiable(state.params.generator, v).sum())(x)
  assert float(jnp.abs(g).max()) > 0


BAD = [
    ("c.restorer.width = 0", "restorer.width"),
    ("c.restorer.blocks = -1", "restorer.width"),
    ("c.restorer.d_layers = 9", "d_layers"),
    ("c.restorer.steps = 0", "restorer.steps"),
    ("c.restorer.epsilons = ()", "restorer.epsilons"),
    ("c.restorer.epsilons = (0.2, 1.5)", "restorer.epsilons"),
    ("c.eval.purifiers = ('none', 'restorer')", "besides 'none' and 'restorer'"),
]


@pytest.mark.parametrize("change,message", BAD)
def test_bad_restorer_configs_are_one_clear_error(data_dir, change, message):
  c = with_restorer(data_dir)
  exec(change, {"c": c})  # pylint: disable=exec-used
  with pytest.raises(VQDefenseError, match=message.replace("(", r"\(")):
    experiment.Experiment.from_config(c)


def test_without_it_nothing_of_the_restorer_is_built(data_dir):
  exp = experiment.Experiment.from_config(tiny(data_dir))
  assert exp.network is None
  assert "restorer" not in grid.make_purifiers(exp.vq, ("none", "no_split", "restorer"))
  assert [p.name for p in grid.make_purifiers(exp.vq, ("none", "no_split", "restorer"))] == ["no_split"]


@pytest.mark.slow
def test_the_restorer_is_one_more_row_of_the_grid(trained, tmp_path):
  c = with_restorer(trained.config.data.cache_dir)
  exp = experiment.Experiment.from_config(c)
  workdir = trained.copy(tmp_path / "run")
  ds = trained.ds
  # Only the restorer is new: the tiny run's classifier and VQ-VAEs are reused.
  assert experiment.missing_checkpoints(exp, workdir, ds) == ["restorer"]
  result = experiment.evaluate(exp, workdir)
  assert experiment.missing_checkpoints(exp, workdir, ds) == []
  assert result.attack == ("fgsm", "ste_fgsm", "worst_case") and result.purifier == ("no_split",)
  acc_AxE = result.restorer.accuracy
  assert acc_AxE.shape == (3, len(exp.attack.epsilons))

  # Each row, computed by hand: attack, restore with G, classify.
  cls, model = trained.cls, exp.classifier_model
  g = experiment.load_network(exp, workdir, ds)
  pur = experiment.network_purifier(exp)
  f = classifier.logits_fn(cls, model)
  x, y = jnp.asarray(ds.test_images), jnp.asarray(ds.test_labels)
  eps = jnp.asarray(exp.attack.epsilons, jnp.float32)
  restore = lambda v: pur(g, v)
  grey = attacks.fgsm(f, x, y, eps)                                                  # (E, N, ...)
  white = attacks.fgsm(lambda v: f(restore(v)), x, y, eps)                           # through G
  right = lambda adv: np.asarray(jax.vmap(lambda a: jnp.argmax(f(restore(a)), -1) == y)(adv))  # (E, N)
  r_grey, r_white = right(grey), right(white)
  np.testing.assert_allclose(acc_AxE[0], r_grey.mean(1), atol=1e-6)
  np.testing.assert_allclose(acc_AxE[1], r_white.mean(1), atol=1e-6)
  np.testing.assert_allclose(acc_AxE[2], (r_grey & r_white).mean(1), atol=1e-6)      # worst case per image
  assert not np.array_equal(r_grey, r_white)  # the white-box attack is another attack
  # The undefended row does not move; the VQ-VAE rows equal those of the grid without the restorer.
  plain = grid.run_grid(exp.vq, exp.attack, exp.grid, "map", exp.seed, cls,
                        grid.vqvae_defences(exp.vq, ("none", "no_split"), trained.stacks), ds.test_images,
                        ds.test_labels, parallel.make_mesh(1), grid.Measure(model))
  np.testing.assert_array_equal(result.accuracy, plain.accuracy)
  np.testing.assert_array_equal(result.undefended, plain.undefended)
  assert plain.restorer is None

  # Files: round trip, its table, the text summary and the figure's last row.
  loaded = GridResult.load(workdir)
  np.testing.assert_array_equal(loaded.restorer.accuracy, acc_AxE)
  table = open(os.path.join(workdir, "table_restorer.md")).read()
  assert "ste_fgsm" in table and "white-box" in table and f"{acc_AxE[1, -1]:.3f}" in table
  text = report.format_grid(loaded)
  assert any(line.startswith("restorer ") and f"{acc_AxE[0, -1]:.3f}" in line for line in text.splitlines())
  assert result.figure.rows[-1] == "restorer" and result.figure.images.shape[1] == len(result.figure.rows)
  np.testing.assert_allclose(result.figure.images[:, -1], np.asarray(jax.vmap(restore)(result.figure.images[:, 1])),
                             atol=1e-5)
  with pytest.raises(VQDefenseError, match="restorer"):
    dataclasses.replace(loaded, restorer=dataclasses.replace(loaded.restorer, accuracy=acc_AxE[:, :1]))

  # Its record knows the pairs it was trained on: another ε list is another restorer.
  c.restorer.epsilons = (0.1,)
  other = experiment.Experiment.from_config(c)
  assert experiment.missing_checkpoints(other, workdir, ds) == ["restorer"]
  made_by_another = r"checkpoints/restorer were made by another config \(pairs.epsilons: \[0.1, 0.2, 0.3\] -> \[0.1\]"
  with pytest.raises(VQDefenseError, match=made_by_another):
    experiment.evaluate(other, workdir, train_missing=False)
