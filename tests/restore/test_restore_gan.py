"""The restorer's training step: each update touches only its own network and Adam, the losses are the document's
(adversarial + λ·L1, L1 in [-1, 1] pixels), L1-only ignores D, and a run resumed through `fit` is bit-identical."""

import dataclasses
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resume_check import resumes_bit_identically
from vqdefense_jax.core import training
from vqdefense_jax.core.errors import VQDefenseError
from vqdefense_jax.restore import gan, mosaic

TINY = gan.RestorerStep(width=4, blocks=1, d_width=4, d_layers=1, l1_weight=1.0, seed=0)
SHAPE = (16, 16, 1)
GROUPS = ("generator", "discriminator")


def _pairs(n=32, seed=0):
  y = jnp.asarray(np.random.default_rng(seed).uniform(0, 1, (n,) + SHAPE), jnp.float32)
  x, _ = mosaic.deidentify(mosaic.Mosaic(block=4), seed, y, jnp.arange(n))
  return x, y


@functools.lru_cache(maxsize=None)
def _updates(step: gan.RestorerStep):
  return jax.jit(step.d_update), jax.jit(step.g_update)


def _differs(a, b) -> bool:
  return any(not np.array_equal(p, q) for p, q in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _changed(before, after) -> set[str]:
  return {g for g in GROUPS if _differs(getattr(before, g), getattr(after, g))}


@pytest.mark.slow
def test_each_update_changes_only_its_own_network_and_adam_state_and_losses_are_the_documents():
  state = TINY.init(SHAPE)
  x, y = _pairs(8)
  d_update, g_update = _updates(TINY)
  d, m_d = d_update(state, x, y)
  g, m_g = g_update(state, x, y)
  assert _changed(state.params, d.params) == {"discriminator"}
  assert _changed(state.params, g.params) == {"generator"}
  assert _differs(state.opt_d, d.opt_d) and not _differs(state.opt_g, d.opt_g)
  assert _differs(state.opt_g, g.opt_g) and not _differs(state.opt_d, g.opt_d)
  # The losses, recomputed from the networks' outputs.
  p = state.params
  fake = gan.generate(p, x)
  d_real, d_fake = gan.critic(p, y), gan.critic(p, fake)
  np.testing.assert_allclose(m_d["d_loss"], 0.5 * (np.mean(np.log1p(np.exp(-d_real))) +
                                                   np.mean(np.log1p(np.exp(d_fake)))), rtol=1e-5)
  np.testing.assert_allclose(m_g["l1"], np.mean(np.abs((2 * fake - 1) - (2 * y - 1))), rtol=1e-5)
  np.testing.assert_allclose(m_g["g_adv"], np.mean(np.log1p(np.exp(-d_fake))), rtol=1e-5)
  np.testing.assert_allclose(m_g["g_loss"], m_g["g_adv"] + TINY.l1_weight * m_g["l1"], rtol=1e-6)


@pytest.mark.slow
def test_a_step_is_the_two_updates_in_turn_and_l1_only_ignores_d():
  state, (x, y) = TINY.init(SHAPE), _pairs()
  idx = np.arange(8, 16)
  new, m = training.compiled_step(TINY, state, idx, x, y)
  assert set(m) == {"loss", "d_loss", "g_loss", "g_adv", "l1"}
  chex.assert_tree_all_finite(m)
  d_update, g_update = _updates(TINY)
  s, m_d = d_update(state, x[idx], y[idx])
  s, m_g = g_update(s, x[idx], y[idx])
  chex.assert_trees_all_close(new, s.replace(step=s.step + 1), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(m["loss"], m_d["d_loss"] + m_g["g_loss"], rtol=1e-6)
  # (b) saw the D that (a) had just updated: on the initial D its adversarial loss differs.
  assert abs(float(g_update(state, x[idx], y[idx])[1]["g_adv"]) - float(m["g_adv"])) > 1e-7
  # L1 only: G's update is the same whatever D is; D still trains.
  l1 = dataclasses.replace(TINY, adversarial=False, l1_weight=100.0)
  _, g_only = _updates(l1)
  other_d = state.replace(params=state.params.replace(discriminator=jax.tree.map(lambda a: a + 1.0,
                                                                                 state.params.discriminator)))
  a, m_a = g_only(state, x, y)
  b, _ = g_only(other_d, x, y)
  chex.assert_trees_all_equal(a.params.generator, b.params.generator)
  assert float(m_a["g_adv"]) == 0 and np.isclose(m_a["g_loss"], 100 * m_a["l1"], rtol=1e-6)


def _fit(tmp_path, tag, stop_at=None):
  x, y = _pairs()
  return training.fit(TINY, lambda: TINY.init(SHAPE), training.IndexBatches(2, 32, 8), num_steps=6,
                      ckpt_dir=str(tmp_path / tag), name="restorer", consts=(x, y), checkpoint_every=3, log_every=3,
                      stop_at=stop_at)


@pytest.mark.slow
def test_fit_trains_it_and_a_resumed_run_is_bit_identical(tmp_path):
  full = resumes_bit_identically(lambda tag, stop_at=None: _fit(tmp_path, tag, stop_at))
  assert _changed(TINY.init(SHAPE).params, full.params) == set(GROUPS)


def test_bad_settings_are_clear_errors():
  with pytest.raises(VQDefenseError, match="sizes out of range"):
    gan.RestorerStep(width=0)
  with pytest.raises(VQDefenseError, match="learning_rate"):
    gan.RestorerStep(learning_rate=-1.0)
  with pytest.raises(VQDefenseError, match="> 0 without the adversarial loss"):
    gan.RestorerStep(adversarial=False, l1_weight=0.0)
  with pytest.raises(VQDefenseError, match="divisible by 4"):
    TINY.init((18, 18, 1))
