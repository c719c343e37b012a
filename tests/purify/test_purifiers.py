import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vqdefense_jax.core import defence
from vqdefense_jax.core import tiles
from vqdefense_jax.core.errors import VQDefenseError
from vqdefense_jax.purify.vqvae import VQVAE
from vqdefense_jax.core.defence import Gate
from vqdefense_jax.purify.purifiers import PURIFIERS, STAGES, Pipeline, Purifier, VQParams, apply_all


@pytest.mark.slow
def test_purifiers_apply_their_models_in_the_documented_order():
  model = VQVAE(channels=8, embedding_dim=8, k_max=6)
  x = jax.random.uniform(jax.random.key(0), (2, 16, 16, 1))
  nv = model.init(jax.random.key(1), x, 6)
  sv = model.init(jax.random.key(2), tiles.split(x, 2), 6)
  r_n = lambda v: model.reconstruct(nv, v)
  r_s = lambda v: tiles.merge(model.reconstruct(sv, tiles.split(v, 2)), 2)
  expected = {"none": x, "no_split": r_n(x), "split": r_s(x), "vae_to_split": r_n(r_s(x)),
              "split_to_vae": r_s(r_n(x))}
  out = {p: Purifier(p, model, model, 2)(VQParams(nv, sv), x) for p in PURIFIERS}
  for p in PURIFIERS:
    np.testing.assert_allclose(out[p], expected[p], rtol=1e-5, atol=1e-6)
  assert not np.allclose(out["vae_to_split"], out["split_to_vae"])  # the order matters
  together = apply_all(tuple(Purifier(p, model, model, 2) for p in PURIFIERS), VQParams(nv, sv), x)
  for p, y in zip(PURIFIERS, together):
    np.testing.assert_allclose(y, out[p], rtol=1e-5, atol=1e-6)


def test_apply_all_runs_each_shared_stage_once(monkeypatch):
  calls = []
  monkeypatch.setattr(Purifier, "stage", lambda self, which, params, x: calls.append(which) or x + 1)
  ps = tuple(Purifier(p, VQVAE(), VQVAE(), 2) for p in PURIFIERS)
  outs = apply_all(ps, None, np.zeros(1))
  assert sorted(calls) == ["N", "N", "S", "S"]  # R_N(x), T(R_S)(x), then one second stage per pipeline
  assert [float(o[0]) for o in outs] == [0, 1, 1, 2, 2]


def test_purification_registers_each_purifier_and_a_name_belongs_to_one_system():
  offers = defence.registered(Pipeline)
  assert tuple(offers) == PURIFIERS and all(offers[n].stages == STAGES[n] for n in PURIFIERS)
  defence.register("purify", offers["split"])                          # a reloaded module registers again
  with pytest.raises(VQDefenseError, match="'split' is registered already, by purify"):
    defence.register("restore", Pipeline("split", ()))
  assert defence.registered()["split"] is offers["split"]


def test_unknown_purifier_is_an_error():
  with pytest.raises(VQDefenseError, match="unknown purifier"):
    Purifier("denoise", VQVAE(), VQVAE(), 2)


def test_equal_purifiers_hash_equal_so_jit_reuses_the_compilation():
  assert Purifier("split", VQVAE(), VQVAE(), 2) == Purifier("split", VQVAE(), VQVAE(), 2)
  assert hash(Purifier("split", VQVAE(), VQVAE(), 2)) == hash(Purifier("split", VQVAE(), VQVAE(), 2))


class Brightness(nn.Module):
  """A hand-made "detector": logit = scale · (mean pixel − offset), its params the two numbers."""

  @nn.compact
  def __call__(self, x):
    scale = self.param("scale", lambda _: jnp.asarray(10.0))
    offset = self.param("offset", lambda _: jnp.asarray(0.5))
    return scale * (jnp.mean(x, axis=(1, 2, 3)) - offset)


def _gated_setup():
  model = VQVAE(channels=8, embedding_dim=8, k_max=6)
  dark = jnp.full((1, 16, 16, 1), 0.2)
  bright = jnp.full((1, 16, 16, 1), 0.8)
  x = jnp.concatenate([dark, bright]) + 0.05 * jax.random.uniform(jax.random.key(0), (2, 16, 16, 1))
  nv = model.init(jax.random.key(1), x, 6)
  sv = model.init(jax.random.key(2), tiles.split(x, 2), 6)
  det = Brightness()
  return model, x, VQParams(nv, sv), Gate(det), det.init(jax.random.key(0), x)["params"]


@pytest.mark.slow
def test_a_gated_purifier_purifies_only_the_flagged_images():
  model, x, vqp, gate, params = _gated_setup()
  np.testing.assert_array_equal(gate.flags(params, x), [False, True])  # only the bright image is flagged
  plain = Purifier("no_split", model, model, 2)
  gated = dataclasses.replace(plain, gate=gate)
  assert gated.label == "detect_no_split" and plain.label == "no_split"
  out = gated(vqp, x, params)
  np.testing.assert_array_equal(out[0], x[0])                          # passed through unchanged
  np.testing.assert_allclose(out[1], plain(vqp, x)[1], rtol=1e-6)     # purified
  together = apply_all((plain, gated, dataclasses.replace(Purifier("split", model, model, 2), gate=gate)), vqp, x,
                       params)
  np.testing.assert_allclose(together[1], out, rtol=1e-6)
  np.testing.assert_array_equal(together[2][0], x[0])
  # A threshold nothing reaches passes everything through; one everything exceeds purifies everything.
  np.testing.assert_array_equal(dataclasses.replace(gated, gate=Gate(gate.detector, 0.99))(vqp, x, params), x)
  np.testing.assert_allclose(dataclasses.replace(gated, gate=Gate(gate.detector, 0.01))(vqp, x, params),
                             plain(vqp, x), rtol=1e-6)
  with pytest.raises(VQDefenseError, match="no detector"):
    Purifier("none", model, model, 2, gate=gate)


@pytest.mark.slow
def test_a_white_box_attacker_differentiates_through_the_detector():
  model, x, vqp, gate, params = _gated_setup()
  gated = Purifier("no_split", model, model, 2, gate=gate)
  # Its value is the hard-gated purifier's ...
  np.testing.assert_allclose(gated.differentiable(vqp, x, params), gated(vqp, x, params), rtol=1e-5, atol=1e-7)
  # ... its gradient the soft gate's: through the detector, so it depends on the detector's offset.
  loss = lambda p, v: jnp.sum(gated.differentiable(vqp, v, p) ** 2)
  g = jax.grad(loss, argnums=(0, 1))(params, x)
  assert float(jnp.abs(g[0]["offset"])) > 0  # the gate's soft decision moves with the detector
  g_hard = jax.grad(lambda v: jnp.sum(gated(vqp, v, params) ** 2))(x)
  assert not np.allclose(g[1], g_hard)


@pytest.mark.slow
def test_the_gate_sees_images_as_8_bit_files():
  _, x, _, gate, params = _gated_setup()
  x8 = jnp.round(x * 255) / 255
  np.testing.assert_allclose(gate.logits(params, x8 + 0.4 / 255), gate.logits(params, x8 - 0.4 / 255), rtol=1e-6)
  np.testing.assert_allclose(gate.logits(params, x), Brightness().apply({"params": params}, x8), rtol=1e-6)
