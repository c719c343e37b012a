import jax
import numpy as np
import pytest

from vqdefense_jax.core import tiles
from vqdefense_jax.core.errors import VQDefenseError
from vqdefense_jax.purify.vqvae import VQVAE
from vqdefense_jax.purify.purifiers import PURIFIERS, Purifier, apply_all


def test_purifiers_apply_their_models_in_the_documented_order():
  model = VQVAE(channels=8, embedding_dim=8, k_max=6)
  x = jax.random.uniform(jax.random.key(0), (2, 16, 16, 1))
  nv = model.init(jax.random.key(1), x, 6)
  sv = model.init(jax.random.key(2), tiles.split(x, 2), 6)
  r_n = lambda v: model.reconstruct(nv, v)
  r_s = lambda v: tiles.merge(model.reconstruct(sv, tiles.split(v, 2)), 2)
  expected = {"none": x, "no_split": r_n(x), "split": r_s(x), "vae_to_split": r_n(r_s(x)),
              "split_to_vae": r_s(r_n(x))}
  out = {p: Purifier(p, model, model, 2)(nv, sv, x) for p in PURIFIERS}
  for p in PURIFIERS:
    np.testing.assert_allclose(out[p], expected[p], rtol=1e-5, atol=1e-6)
  assert not np.allclose(out["vae_to_split"], out["split_to_vae"])  # the order matters
  together = apply_all(tuple(Purifier(p, model, model, 2) for p in PURIFIERS), nv, sv, x)
  for p, y in zip(PURIFIERS, together):
    np.testing.assert_allclose(y, out[p], rtol=1e-5, atol=1e-6)


def test_apply_all_runs_each_shared_stage_once(monkeypatch):
  calls = []
  monkeypatch.setattr(Purifier, "stage", lambda self, which, nv, sv, x: calls.append(which) or x + 1)
  ps = tuple(Purifier(p, VQVAE(), VQVAE(), 2) for p in PURIFIERS)
  outs = apply_all(ps, None, None, np.zeros(1))
  assert sorted(calls) == ["N", "N", "S", "S"]  # R_N(x), T(R_S)(x), then one second stage per pipeline
  assert [float(o[0]) for o in outs] == [0, 1, 1, 2, 2]


def test_unknown_purifier_is_an_error():
  with pytest.raises(VQDefenseError, match="unknown purifier"):
    Purifier("denoise", VQVAE(), VQVAE(), 2)


def test_equal_purifiers_hash_equal_so_jit_reuses_the_compilation():
  assert Purifier("split", VQVAE(), VQVAE(), 2) == Purifier("split", VQVAE(), VQVAE(), 2)
  assert hash(Purifier("split", VQVAE(), VQVAE(), 2)) == hash(Purifier("split", VQVAE(), VQVAE(), 2))
