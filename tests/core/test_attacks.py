import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vqdefense_jax.core import attacks
from vqdefense_jax.core.errors import VQDefenseError
from vqdefense_jax.core.classifier import Classifier
from vqdefense_jax.purify.vqvae import VQVAE


def _setup():
  x = jax.random.uniform(jax.random.key(0), (6, 16, 16, 1))
  y = jnp.arange(6) % 10
  params = Classifier().init(jax.random.key(1), x)
  return (lambda v: Classifier().apply(params, v)), x, y


@pytest.mark.slow
def test_fgsm_stays_in_the_eps_ball_and_in_the_unit_box():
  f, x, y = _setup()
  eps = jnp.array([0.0, 0.02, 0.1, 0.3, 1.0])
  x_adv = attacks.fgsm(f, x, y, eps)
  chex.assert_shape(x_adv, (5, 6, 16, 16, 1))
  for e, xa in zip(eps, x_adv):
    assert float(jnp.abs(xa - x).max()) <= float(e) + 1e-7
    assert float(xa.min()) >= 0.0 and float(xa.max()) <= 1.0
  np.testing.assert_array_equal(x_adv[0], x)


@pytest.mark.slow
def test_fgsm_over_an_eps_vector_equals_fgsm_at_each_eps():
  f, x, y = _setup()
  eps = jnp.array([0.0, 0.04, 0.16, 0.3])
  together = jax.jit(lambda e: attacks.fgsm(f, x, y, e))(eps)
  for i, e in enumerate(eps):
    np.testing.assert_array_equal(together[i], attacks.fgsm(f, x, y, e[None])[0])


@pytest.mark.slow
def test_fgsm_sign_matches_the_analytic_gradient_of_a_linear_model():
  w = jax.random.normal(jax.random.key(3), (4, 3))
  f = lambda v: v.reshape(v.shape[0], -1) @ w
  x = jax.random.uniform(jax.random.key(4), (2, 2, 2, 1))
  y = jnp.array([0, 2])
  p = jax.nn.softmax(f(x))
  grad = (p - jax.nn.one_hot(y, 3)) @ w.T          # d CE / d x for logits = x·W
  np.testing.assert_array_equal(attacks.fgsm_sign(f, x, y), jnp.sign(grad).reshape(x.shape))


@pytest.mark.slow
def test_fgsm_raises_the_loss():
  f, x, y = _setup()
  ce = lambda v: float(jnp.mean(-jax.nn.log_softmax(f(v))[jnp.arange(6), y]))
  assert ce(attacks.fgsm(f, x, y, jnp.array([0.1]))[0]) > ce(x)


def _purifier():
  """A random-weight VQ-VAE reconstruction (16x16 -> 16x16): a differentiable, non-identity purifier."""
  model = VQVAE(channels=8, embedding_dim=8, k_max=8, layout="per_position")
  v = model.init(jax.random.key(5), jnp.zeros((1, 16, 16, 1)), 8)
  return lambda x: model.reconstruct(v, x)


@pytest.mark.slow
def test_pgd_with_one_step_of_size_eps_and_no_random_start_is_fgsm():
  f, x, y = _setup()
  eps = jnp.array([0.0, 0.05, 0.3])
  pgd = attacks.pgd(f, x, y, eps, steps=1, step_size=1.0, random_start=False)
  np.testing.assert_array_equal(pgd, attacks.fgsm(f, x, y, eps))
  # The same through `run`, white-box included.
  p = _purifier()
  for name in ("pgd", "bpda_pgd", "ste_pgd"):
    one = attacks.Attack(name, steps=1, step_size=1.0, random_start=False)
    single = attacks.Attack(name.replace("pgd", "fgsm"))
    np.testing.assert_array_equal(attacks.run(one, f, x, y, eps, purify=p), attacks.run(single, f, x, y, eps, purify=p))


@pytest.mark.slow
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow)
                                  if "_" in n or n in attacks.ITEM_METHODS else n for n in attacks.ATTACKS])
def test_every_attack_stays_in_the_eps_ball_and_the_unit_box(name):
  f, x, _ = _setup()
  p = _purifier()
  y = jnp.argmax(f(p(x)), -1)  # right clean: the item attacks (apgdt, fabt, square, autoattack) attack every image
  eps = jnp.array([0.0, 0.03, 0.3])
  attack = attacks.Attack(name, steps=3, step_size=0.5, random_start=True)
  x_adv = jax.jit(lambda x: attacks.run(attack, f, x, y, eps, purify=p, key=jax.random.key(2)))(x)
  chex.assert_shape(x_adv, (3, 6, 16, 16, 1))
  for e, xa in zip(eps, x_adv):
    assert float(jnp.abs(xa - x).max()) <= float(e) + 1e-6
    assert float(xa.min()) >= 0.0 and float(xa.max()) <= 1.0
  np.testing.assert_array_equal(x_adv[0], x)   # ε = 0: nothing moves, random start included
  # FAB looks for the smallest perturbation that fools: it moves, but far less than ε.
  assert float(jnp.abs(x_adv[2] - x).max()) > (0.0 if attack.method == "fabt" else 0.1)


@pytest.mark.slow
def test_bpda_gradient_is_the_classifier_gradient_at_the_purified_point():
  f, x, y = _setup()
  p = _purifier()
  bpda = attacks.target_fn(attacks.Attack("bpda_fgsm"), f, p)
  np.testing.assert_allclose(attacks.loss_grad(bpda, x, y), attacks.loss_grad(f, p(x), y), rtol=1e-5, atol=1e-7)
  # Forward it is the classifier on the purified image; the true (STE) gradient is another one.
  np.testing.assert_allclose(bpda(x), f(p(x)), rtol=1e-5, atol=1e-5)
  ste = attacks.target_fn(attacks.Attack("ste_fgsm"), f, p)
  assert not np.allclose(attacks.loss_grad(ste, x, y), attacks.loss_grad(bpda, x, y), atol=1e-6)
  np.testing.assert_allclose(attacks.loss_grad(ste, x, y), jax.grad(
      lambda v: optax.softmax_cross_entropy_with_integer_labels(f(p(v)), y).sum())(x), rtol=1e-5, atol=1e-7)
  # Grey-box attacks ignore the purifier.
  assert attacks.target_fn(attacks.Attack("pgd"), f, p) is f


@pytest.mark.slow
def test_pgd_random_start_depends_on_the_image_index_not_on_the_batch():
  f, x, y = _setup()
  eps = jnp.array([0.1, 0.2])
  attack = attacks.Attack("pgd", steps=2)
  whole = attacks.run(attack, f, x, y, eps, key=jax.random.key(7), index_B=jnp.arange(6))
  part = attacks.run(attack, f, x[3:], y[3:], eps, key=jax.random.key(7), index_B=jnp.arange(3, 6))
  np.testing.assert_allclose(whole[:, 3:], part, atol=1e-6)
  other_key = attacks.run(attack, f, x, y, eps, key=jax.random.key(8), index_B=jnp.arange(6))
  assert not np.allclose(whole, other_key)


@pytest.mark.slow
def test_pgd_is_at_least_as_strong_as_fgsm_here():
  f, x, y = _setup()
  eps = jnp.array([0.1])
  ce = lambda v: float(optax.softmax_cross_entropy_with_integer_labels(f(v), y).sum())
  pgd = attacks.run(attacks.Attack("pgd", steps=10, random_start=False), f, x, y, eps)[0]
  assert ce(pgd) >= ce(attacks.fgsm(f, x, y, eps)[0])


def test_fgsm_pairs_stay_within_each_images_eps():
  f, x, y = _setup()
  choices = (0.2, 0.25, 0.3, 0.35)
  x_adv, eps_B = attacks.fgsm_pairs(f, x, y, choices, jax.random.key(0))
  assert {round(float(e), 4) for e in eps_B} <= set(choices)
  delta = np.abs(np.asarray(x_adv - x)).reshape(6, -1).max(1)
  assert np.all(delta <= np.asarray(eps_B) + 1e-6) and np.all(delta > 0.1)
  assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0


def test_bad_attacks_are_rejected():
  with pytest.raises(VQDefenseError, match="unknown attack"):
    attacks.Attack("cw")
  with pytest.raises(VQDefenseError, match="steps"):
    attacks.Attack("pgd", steps=0)
  with pytest.raises(VQDefenseError, match="PRNG key"):
    f, x, y = _setup()
    attacks.pgd(f, x, y, jnp.array([0.1]), steps=1, step_size=1.0, random_start=True)


def _linear(k=2, d=12, seed=7):
  w = jax.random.normal(jax.random.key(seed), (d, k))
  return w, (lambda v: v.reshape(v.shape[0], -1) @ w)


def test_dlr_is_the_formula_and_invariant_to_shifting_and_scaling_logits():
  z = jnp.array([[3.0, 1.0, 2.0, -1.0], [0.5, 4.0, 1.0, 0.0]])
  y = jnp.array([0, 2])
  # image 0: z_y = 3 is the largest; max other 2; sorted 3, 2, 1 -> -(3 - 2) / (3 - 1)
  # image 1: z_y = 1; max other 4; sorted 4, 1, 0.5 -> -(1 - 4) / (4 - 0.5)
  np.testing.assert_allclose(attacks.dlr(z, y), [-0.5, 3 / 3.5], rtol=1e-6)
  np.testing.assert_allclose(attacks.dlr(7.0 * z - 3.0, y), attacks.dlr(z, y), rtol=1e-5)


def test_apgd_checkpoints_follow_croce_and_hein():
  assert attacks.apgd_checkpoints(100) == (0, 22, 41, 57, 70, 80, 87, 93, 99)


@pytest.mark.slow
def test_apgd_keeps_its_best_loss_and_stays_in_the_ball_and_the_box():
  f, x, y = _setup()
  eps = jnp.array([0.05, 0.3])
  x_adv, tr = attacks.apgd(f, x, y, eps, steps=20, key=jax.random.key(0), trace=True)
  chex.assert_shape(x_adv, (2, 6, 16, 16, 1))
  best = np.asarray(tr["best_loss"])                              # (steps, E·B)
  assert best.shape == (20, 12)
  assert np.all(np.diff(best, axis=0) >= 0)                       # the best loss never decreases
  for e, xa in zip(eps, x_adv):
    assert float(jnp.abs(xa - x).max()) <= float(e) + 1e-6 and float(xa.min()) >= 0 and float(xa.max()) <= 1
  # It returns the best point: its loss is the last best loss.
  ce = attacks.per_image_loss(f(x_adv.reshape((-1,) + x.shape[1:])), jnp.tile(y, 2))
  np.testing.assert_allclose(ce, best[-1], rtol=1e-4, atol=1e-5)
  assert np.all(best[-1] >= best[0])


@pytest.mark.slow
def test_apgd_halves_its_step_only_at_checkpoints_when_progress_stalls():
  x = jax.random.uniform(jax.random.key(0), (3, 2, 2, 3))
  y = jnp.zeros(3, jnp.int32)
  flat_f = lambda v: jnp.zeros((v.shape[0], 4)) + 0.0 * v.sum()  # a loss no step can raise: every checkpoint stalls
  _, tr = attacks.apgd(flat_f, x, y, jnp.array([0.1]), steps=30, key=jax.random.key(1), trace=True)
  eta = np.asarray(tr["eta"])[:, 0]
  ckpts = [c for c in attacks.apgd_checkpoints(30) if c > 0]
  halvings = [k for k in range(1, 30) if eta[k] != eta[k - 1]]
  assert halvings == [c + 1 for c in ckpts]  # η⁽ʷ⁺¹⁾ halves after each checkpoint w, nowhere else
  np.testing.assert_allclose(eta[-1], 0.2 / 2 ** len(ckpts), rtol=1e-6)
  # A loss that keeps rising (linear in x, far from the box) never halves the step.
  w, f = _linear(k=3, d=12)
  x = jnp.full((2, 2, 2, 3), 0.5)
  _, tr = attacks.apgd(f, x, jnp.array([0, 1]), jnp.array([0.01]), steps=10, random_start=False, trace=True)
  assert np.all(np.asarray(tr["eta"])[:3] == 0.02)


@pytest.mark.slow
def test_apgd_finds_the_optimum_of_a_linear_model():
  w, f = _linear(k=2, d=12)
  x = jax.random.uniform(jax.random.key(2), (4, 2, 2, 3), minval=0.2, maxval=0.8)
  y = jnp.array([0, 1, 0, 1])
  eps = 0.1
  # CE of two linear logits grows with (w_other − w_y)·x: the optimum is the corner x + ε·sign(w_other − w_y).
  direction = jnp.sign(w[:, 1 - y] - w[:, y]).T.reshape(x.shape)
  best = jnp.clip(x + eps * direction, 0, 1)
  for loss in ("ce",):  # (DLR needs 3 or more classes)
    x_adv = attacks.apgd(f, x, y, jnp.array([eps]), steps=10, key=jax.random.key(3), loss=loss)[0]
    np.testing.assert_allclose(x_adv, best, atol=1e-6)


@pytest.mark.slow
def test_apgd_through_run_and_its_names():
  a = attacks.Attack("ste_apgd", steps=5, loss="dlr", restarts=3)
  assert a.iterative and a.white_box and a.method == "apgd" and a.grey_box().name == "apgd"
  assert "APGD, 5 steps" in attacks.describe(a) and "DLR loss, 3 restarts" in attacks.describe(a)
  f, x, y = _setup()
  x_adv = attacks.run(attacks.Attack("apgd", steps=4), f, x, y, jnp.array([0.1]), key=jax.random.key(0))
  assert float(jnp.abs(x_adv[0] - x).max()) <= 0.1 + 1e-6
  with pytest.raises(VQDefenseError, match="restarts"):
    attacks.Attack("fgsm", restarts=2)
  with pytest.raises(VQDefenseError, match="loss"):
    attacks.Attack("pgd", loss="hinge")


def test_the_attack_section_reads_restarts_loss_and_convergence_steps():
  from vqdefense_jax.core import config as core_config  # pylint: disable=g-import-not-at-top
  s = core_config.attack_section()
  s.names, s.restarts, s.loss, s.convergence_steps = ("fgsm", "ste_apgd"), 3, "dlr", (10, 50)
  spec = attacks.AttackSpec.from_config(s)
  fgsm, apgd = spec.attacks
  assert fgsm.restarts == 1 and apgd.restarts == 3 and apgd.loss == "dlr"  # one-step attacks have no restarts
  assert spec.convergence_steps == (10, 50)
  s.names = ("fgsm",)
  with pytest.raises(VQDefenseError, match="needs an iterative attack"):
    attacks.AttackSpec.from_config(s)
  s.names, s.convergence_steps = ("pgd",), (10, 10)
  with pytest.raises(VQDefenseError, match="distinct step counts"):
    attacks.AttackSpec.from_config(s)
  for bad in (("false",), (True,), (2.5,)):  # an empty default list leaves the element type to this check
    s.convergence_steps = bad
    with pytest.raises(VQDefenseError, match="distinct step counts"):
      attacks.AttackSpec.from_config(s)
