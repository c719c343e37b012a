import chex
import jax
import jax.numpy as jnp
import numpy as np

from vqdefense_jax import attacks
from vqdefense_jax.models import Classifier


def _setup():
  x = jax.random.uniform(jax.random.key(0), (6, 16, 16, 1))
  y = jnp.arange(6) % 10
  params = Classifier().init(jax.random.key(1), x)
  return (lambda v: Classifier().apply(params, v)), x, y


def test_fgsm_stays_in_the_eps_ball_and_in_the_unit_box():
  f, x, y = _setup()
  eps = jnp.array([0.0, 0.02, 0.1, 0.3, 1.0])
  x_adv = attacks.fgsm(f, x, y, eps)
  chex.assert_shape(x_adv, (5, 6, 16, 16, 1))
  for e, xa in zip(eps, x_adv):
    assert float(jnp.abs(xa - x).max()) <= float(e) + 1e-7
    assert float(xa.min()) >= 0.0 and float(xa.max()) <= 1.0
  np.testing.assert_array_equal(x_adv[0], x)


def test_fgsm_over_an_eps_vector_equals_fgsm_at_each_eps():
  f, x, y = _setup()
  eps = jnp.array([0.0, 0.04, 0.16, 0.3])
  together = jax.jit(lambda e: attacks.fgsm(f, x, y, e))(eps)
  for i, e in enumerate(eps):
    np.testing.assert_array_equal(together[i], attacks.fgsm(f, x, y, e[None])[0])


def test_fgsm_sign_matches_the_analytic_gradient_of_a_linear_model():
  w = jax.random.normal(jax.random.key(3), (4, 3))
  f = lambda v: v.reshape(v.shape[0], -1) @ w
  x = jax.random.uniform(jax.random.key(4), (2, 2, 2, 1))
  y = jnp.array([0, 2])
  p = jax.nn.softmax(f(x))
  grad = (p - jax.nn.one_hot(y, 3)) @ w.T          # d CE / d x for logits = x·W
  np.testing.assert_array_equal(attacks.fgsm_sign(f, x, y), jnp.sign(grad).reshape(x.shape))


def test_fgsm_raises_the_loss():
  f, x, y = _setup()
  ce = lambda v: float(jnp.mean(-jax.nn.log_softmax(f(v))[jnp.arange(6), y]))
  assert ce(attacks.fgsm(f, x, y, jnp.array([0.1]))[0]) > ce(x)
