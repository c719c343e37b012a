"""The one-computation grid: compiled once, equal to the per-size evaluation, pairing, chunking."""

import dataclasses

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vqdefense_jax.core import attacks, classifier, parallel
from vqdefense_jax.core.defence import Gate, ModulePurifier
from vqdefense_jax.core.errors import VQDefenseError
from vqdefense_jax.purify import experiment, grid
from vqdefense_jax.purify.purifiers import PURIFIERS, Purifier, VQParams


def _per_size(t, i_no_split, i_split, names=PURIFIERS):
  """The test oracle: a straightforward per-size evaluation (FGSM over the ε vector, every purifier), (P, E)."""
  f = classifier.logits_fn(t.cls)
  no_split = parallel.take(t.stacks[t.exp.vq.kind(1)], i_no_split)
  split = parallel.take(t.stacks[t.exp.vq.kind(2)], i_split)
  x, y = jnp.asarray(t.ds.test_images), jnp.asarray(t.ds.test_labels)
  x_adv = attacks.fgsm(f, x, y, jnp.asarray(t.exp.attack.epsilons))        # (E, B, H, W, 1)
  flat = x_adv.reshape((-1,) + x.shape[1:])                                  # every ε in one batch, as the grid
  rows = []
  for name in names:
    purify = Purifier(name, t.exp.vq.model, t.exp.vq.model, 2)
    pred_ExB = jnp.argmax(f(purify(VQParams(no_split, split), flat)), -1).reshape(x_adv.shape[:2])
    rows.append(np.mean(np.asarray(pred_ExB == y[None]), axis=1))
  return np.asarray(rows)


def _counts_inputs(t):
  """The paper's two stacks as the purifiers' parameters, every purifier, and a one-device mesh: the inputs of
  `grid.run_counts`."""
  params = VQParams(t.stacks[t.exp.vq.kind(1)], t.stacks[t.exp.vq.kind(2)])
  return params, grid.make_purifiers(t.exp.vq, PURIFIERS), parallel.make_mesh(1, jax.devices()[:1])


def _run_grid(t, **spec):
  exp = t.exp
  g = dataclasses.replace(exp.grid, **spec)
  return grid.run_grid(exp.vq, exp.attack, g, "map", exp.seed, t.cls,
                       grid.vqvae_defences(exp.vq, exp.eval.purifiers, t.stacks), t.ds.test_images, t.ds.test_labels,
                       parallel.make_mesh(1))


@pytest.mark.slow
def test_grid_equals_per_size_evaluation(trained):
  res = _run_grid(trained, chunk_size=40)  # one chunk: the oracle's batch shapes
  sizes, eps = trained.exp.vq.codebook_sizes, trained.exp.attack.epsilons
  chex.assert_shape(res.accuracy, (1, 1, 4, len(sizes), len(eps)))
  acc_PxMxE = res.accuracy[0, 0]   # fgsm, clean training
  undefended = res.undefended[0]
  names = list(res.purifier)
  assert names == [p for p in PURIFIERS if p != "none"]
  for m in range(len(sizes)):
    table_PxE = _per_size(trained, m, m)  # rows: PURIFIERS, 'none' first
    rows = {p: table_PxE[j] for j, p in enumerate(PURIFIERS)}
    np.testing.assert_allclose(undefended, rows["none"], atol=1e-12)
    for j, p in enumerate(names):
      np.testing.assert_allclose(acc_PxMxE[j, m], rows[p], atol=1e-12, err_msg=f"{p}, model {m}")
  # Something was actually measured: the attack hurts the undefended classifier.
  assert undefended[-1] < undefended[0]


@pytest.mark.slow
def test_grid_compiles_once_across_sizes_data_and_epsilons(trained):
  c, cls, ds = trained.config, trained.cls, trained.ds
  params, purifiers, mesh = _counts_inputs(trained)
  counted = jax.jit(chex.assert_max_traces(grid.grid_counts_fn, n=1), static_argnums=(0, 1, 2, 3, 4))
  x, y, w, i = grid.chunked(ds.test_images, ds.test_labels, 16)
  eps = jnp.asarray(c.attack.epsilons, jnp.float32)
  attack_list = (attacks.Attack("fgsm"), attacks.Attack("pgd", steps=2), attacks.Attack("bpda_pgd", steps=2))
  seed = jnp.uint32(0)
  measure = grid.Measure()
  counted(purifiers, attack_list, "map", mesh, measure, cls, params, x, y, w, i, eps, seed)
  # Other codebook sizes (data, not shape), other weights, other images, other ε: no new trace.
  resized = lambda s: {**s, "codebook": {**s["codebook"], "size": s["codebook"]["size"] - 1}}
  other = jax.tree.map(lambda a: a * 1.01 if a.dtype == jnp.float32 else a, resized(params.split))
  counted(purifiers, attack_list, "map", mesh, measure, cls, VQParams(resized(params.no_split), other), x[::-1],
          y[::-1], w, i, eps / 2, seed + 1)


@pytest.mark.slow
def test_chunk_size_and_padding_do_not_change_the_result(trained):
  c, cls, ds = trained.config, trained.cls, trained.ds
  params, purifiers, mesh = _counts_inputs(trained)
  runs = [grid.run_counts(purifiers, "map", mesh, cls, params, ds.test_images, ds.test_labels, c.attack.epsilons,
                          chunk) for chunk in (7, 40)]
  assert runs[0][2]["num_chunks"] == 6 and runs[1][2]["num_chunks"] == 1  # 40 images: 6×7 with 2 padded
  np.testing.assert_allclose(runs[0][0], runs[1][0], atol=1e-12)
  np.testing.assert_allclose(runs[0][1], runs[1][1], atol=1e-12)


@pytest.mark.slow
def test_counting_rules_and_predictions_agree_with_a_direct_evaluation(trained):
  c, cls, ds = trained.config, trained.cls, trained.ds
  params, purifiers, mesh = _counts_inputs(trained)
  y = ds.test_labels.copy()
  y[:6] = (y[:6] + 1) % 10  # wrong labels: clean mistakes the two rules count differently
  run = lambda counting, labels=y: grid.run_counts(purifiers, "map", mesh, cls, params,
                                                   ds.test_images, labels, c.attack.epsilons, 16,
                                                   measure=grid.Measure(counting=counting, predictions=True))
  und_f, acc_f, _, (clean, pred_und, pred), _ = run("final")
  und_a, acc_a, _, preds_a, _ = run("clean_and_final")
  for got, want in zip(preds_a, (clean, pred_und, pred)):   # the rule changes the counts, not the predictions
    np.testing.assert_array_equal(got, want)
  f = classifier.logits_fn(cls)
  np.testing.assert_array_equal(clean, np.argmax(f(ds.test_images), -1))
  ok = clean == y
  assert 0 < ok.sum() < len(y)  # some clean mistakes, so the rules differ
  chex.assert_shape(pred, (len(trained.exp.vq.codebook_sizes), 1, len(purifiers), len(c.attack.epsilons), len(y)))
  np.testing.assert_allclose(acc_f, np.mean(pred == y, axis=-1), atol=1e-12)
  np.testing.assert_allclose(acc_a, np.mean((pred == y) & ok, axis=-1), atol=1e-12)
  np.testing.assert_allclose(und_a, np.mean((pred_und == y) & ok, axis=-1), atol=1e-12)
  # With the true labels, the grid predicts what the straightforward per-size evaluation predicts.
  _, _, _, (_, _, pred), _ = run("final", ds.test_labels)
  for m in range(pred.shape[0]):
    table_PxE = _per_size(trained, m, m)
    for j, p in enumerate(purifiers):
      np.testing.assert_allclose(np.mean(pred[m, 0, j] == ds.test_labels, axis=-1),
                                 table_PxE[PURIFIERS.index(p.name)], atol=1e-12)


@pytest.mark.slow
def test_vmap_and_map_over_models_agree(trained):
  c, cls, ds = trained.config, trained.cls, trained.ds
  params, purifiers, mesh = _counts_inputs(trained)
  out = {axis: grid.run_counts(purifiers, axis, mesh, cls, params, ds.test_images, ds.test_labels, c.attack.epsilons,
                               40)[1] for axis in ("map", "vmap")}
  # Grouped and plain convolutions may round differently; allow one image of the 40 to flip.
  np.testing.assert_allclose(out["map"], out["vmap"], atol=1 / 40 + 1e-9)


@pytest.mark.slow
def test_best_pairing_uses_the_best_size_of_each_kind(trained):
  res = _run_grid(trained, pairing="best", best_eps_max=0.1, chunk_size=40)
  assert res.purifier == ("no_split", "split")
  acc_PxMxE = res.accuracy[0, 0]
  low = np.asarray(trained.exp.attack.epsilons) <= 0.1
  sizes = list(trained.exp.vq.codebook_sizes)
  expected = {kind: sizes[int(np.argmax(acc_PxMxE[j][:, low].mean(1)))] for j, kind in enumerate(("no_split", "split"))}
  assert res.best_size == expected
  assert (res.paired.no_split_size, res.paired.split_size) == (expected["no_split"], expected["split"])
  table_PxE = _per_size(trained, sizes.index(expected["no_split"]), sizes.index(expected["split"]))
  for p in ("vae_to_split", "split_to_vae"):
    np.testing.assert_allclose(res.paired.accuracy[0, 0, res.paired.purifier.index(p)],
                               table_PxE[PURIFIERS.index(p)], atol=1e-12)


@pytest.mark.slow
def test_the_eps_vector_in_one_call_equals_one_eps_at_a_time(trained):
  params, purifiers, mesh = _counts_inputs(trained)
  run = lambda eps: grid.run_counts(purifiers, "map", mesh, trained.cls, params, trained.ds.test_images,
                                    trained.ds.test_labels, eps, 40)
  eps = trained.exp.attack.epsilons
  und, acc, _, _, _ = run(eps)
  for i, e in enumerate(eps):
    und_1, acc_1, _, _, _ = run((e,))
    np.testing.assert_array_equal(und[:, i], und_1[:, 0])
    np.testing.assert_array_equal(acc[..., i], acc_1[..., 0])


def test_the_grid_pairs_each_defence_with_its_own_parameters(tiny_config):
  """VQ-VAE purifiers share one set of stacks (the codebook-size axis of one call); a network purifier brings
  its own params. Mixtures the results cannot hold are refused before anything is computed."""
  exp = experiment.Experiment.from_config(tiny_config)
  no_split, split = grid.make_purifiers(exp.vq, ("no_split", "split"))
  net = ModulePurifier("net", nn.Dense(1))
  run = lambda defences: grid.run_grid(exp.vq, exp.attack, exp.grid, "map", 0, None, defences,
                                       np.zeros((1, 16, 16, 1), np.float32), np.zeros(1, np.int32),
                                       parallel.make_mesh(1))
  with pytest.raises(VQDefenseError, match="at least one purifier"):
    run([(net, {})])
  with pytest.raises(VQDefenseError, match="share one set of VQ-VAE stacks"):
    run([(no_split, {}), (split, {})])
  with pytest.raises(VQDefenseError, match="one network purifier, not 2: net, net"):
    run([(no_split, {}), (net, {}), (net, {})])
  stacks = {}
  assert grid.vqvae_defences(exp.vq, ("none", "no_split", "split"), stacks) == [(no_split, stacks), (split, stacks)]


def test_best_index_criterion():
  acc_MxE = np.array([[0.9, 0.8, 0.1], [0.95, 0.7, 0.9], [0.9, 0.85, 0.0]])
  assert grid.best_index(acc_MxE, [0.0, 0.05, 0.3], 0.08) == 2  # mean over ε <= 0.08 only: 0.875
  assert grid.best_index(acc_MxE, [0.0, 0.05, 0.3], 0.3) == 1


class ConstantDetector(nn.Module):
  """Flags every image (bias > 0) or none (bias < 0)."""
  bias: float

  @nn.compact
  def __call__(self, x):
    return jnp.zeros(x.shape[:1]) + self.param("b", lambda _: jnp.asarray(self.bias))


@pytest.mark.slow
def test_detect_then_purify_is_the_purifier_when_all_are_flagged_and_undefended_when_none(trained):
  c, cls, ds = trained.config, trained.cls, trained.ds
  stacks, _, mesh = _counts_inputs(trained)
  names = ("no_split", "split_to_vae")
  run = lambda purifiers, gate_params=None, atk=("fgsm",): grid.run_counts(
      purifiers, "map", mesh, cls, stacks, ds.test_images, ds.test_labels,
      c.attack.epsilons, 16, attack_list=tuple(attacks.Attack(a) for a in atk), gate_params=gate_params)
  undefended, plain, _, _, _ = run(grid.make_purifiers(trained.exp.vq, names))
  for bias, expected in ((10.0, plain), (-10.0, np.broadcast_to(undefended[None, :, None], plain.shape))):
    det = ConstantDetector(bias)
    params = det.init(jax.random.key(0), ds.test_images[:1])["params"]
    purifiers = grid.make_purifiers(trained.exp.vq, names, gate=Gate(det))
    assert [p.label for p in purifiers] == ["no_split", "split_to_vae", "detect_no_split", "detect_split_to_vae"]
    _, acc, _, _, _ = run(purifiers, params)
    np.testing.assert_allclose(acc[:, :, :2], plain, atol=1e-12)     # the ungated rows are unchanged
    np.testing.assert_allclose(acc[:, :, 2:], expected, atol=1e-12)  # gated: purified (all flagged) or not at all
  # White-box, the detector known: with nothing flagged the attacker faces the bare classifier.
  und_white, acc_white, _, _, _ = run(purifiers, params, ("ste_fgsm",))
  np.testing.assert_allclose(und_white, undefended, atol=1e-12)
  np.testing.assert_allclose(acc_white[:, 0, 2:], np.broadcast_to(undefended[0], acc_white[:, 0, 2:].shape),
                             atol=1.5 / len(ds.test_images))


def _restart_oracle(t, atk, seed, restarts):
  """Per image and ε: right under every restart? A direct evaluation, one restart key at a time (N, E)."""
  f = classifier.logits_fn(t.cls)
  no_split = parallel.take(t.stacks[t.exp.vq.kind(1)], 0)
  pur = Purifier("no_split", t.exp.vq.model, t.exp.vq.model, 2)
  x, y = jnp.asarray(t.ds.test_images), jnp.asarray(t.ds.test_labels)
  eps = jnp.asarray(t.exp.attack.epsilons)
  ok = []
  for r in range(restarts):
    key = grid.restart_key(jax.random.key(seed), r)
    x_adv = attacks.run(atk, f, x, y, eps, key=key, index_B=jnp.arange(len(x)))      # (E, N, ...)
    pred = jnp.argmax(f(pur(VQParams(no_split, None), x_adv.reshape((-1,) + x.shape[1:]))), -1).reshape(
        x_adv.shape[:2])
    ok.append(np.asarray(pred == y[None]))
  return np.all(ok, axis=0)


@pytest.mark.slow
def test_restarts_count_an_image_only_if_it_survives_every_restart(trained):
  t = trained
  params, _, mesh = _counts_inputs(t)
  purifiers = grid.make_purifiers(t.exp.vq, ("no_split",))
  base = attacks.Attack("pgd", steps=2, step_size=0.5)
  run = lambda atk: grid.run_counts(purifiers, "map", mesh, t.cls, parallel.take(params, np.array([0])),
                                    t.ds.test_images, t.ds.test_labels, t.exp.attack.epsilons, 40, attack_list=(atk,),
                                    seed=3)
  for restarts in (1, 3):
    atk = dataclasses.replace(base, restarts=restarts)
    _, acc, _, _, _ = run(atk)
    np.testing.assert_allclose(acc[0, 0, 0], _restart_oracle(t, base, 3, restarts).mean(axis=1), atol=1e-12)
  one, three = run(base)[1], run(dataclasses.replace(base, restarts=3))[1]
  assert np.all(three <= one) and np.any(three < one)  # more restarts: never more robust, here less
  picked = run(dataclasses.replace(base, restarts=3, restart_pick="classifier"))[1]
  assert np.all(picked >= three)  # one restart per image (the classifier's pick) is weaker than the worst case


@pytest.mark.slow
def test_the_worst_case_row_is_right_only_where_every_attack_is(trained):
  t = trained
  params, purifiers, mesh = _counts_inputs(t)
  atks = (attacks.Attack("fgsm"), attacks.Attack("ste_fgsm"))
  und, acc, _, (clean, pred_und, pred), _ = grid.run_counts(
      purifiers, "map", mesh, t.cls, params, t.ds.test_images, t.ds.test_labels,
      t.exp.attack.epsilons, 16, attack_list=atks, measure=grid.Measure(predictions=True))
  assert grid.attack_names(atks) == ("fgsm", "ste_fgsm", "worst_case")
  chex.assert_shape(acc, (2, 3, 4, len(t.exp.attack.epsilons)))
  y = t.ds.test_labels
  right = pred == y                                                     # (M, A, P, E, N)
  np.testing.assert_array_equal(right[:, 2], right[:, 0] & right[:, 1])
  np.testing.assert_allclose(acc[:, 2], right[:, 2].mean(-1), atol=1e-12)
  np.testing.assert_allclose(und[2], ((pred_und[0] == y) & (pred_und[1] == y)).mean(-1), atol=1e-12)
  assert np.all(acc[:, 2] <= np.minimum(acc[:, 0], acc[:, 1]) + 1e-12)


@pytest.mark.slow
def test_the_convergence_check_reruns_the_iterative_attacks_at_each_step_count(trained):
  t = trained
  exp = t.exp
  spec = attacks.AttackSpec((attacks.Attack("fgsm"), attacks.Attack("pgd", steps=2)), exp.attack.epsilons, (1, 2))
  res = grid.run_grid(exp.vq, spec, exp.grid, "map", exp.seed, t.cls, grid.vqvae_defences(exp.vq, exp.eval.purifiers,
                      t.stacks), t.ds.test_images, t.ds.test_labels, parallel.make_mesh(1))
  c = res.convergence
  assert c.steps == (1, 2) and c.attack == ("pgd",)                  # the iterative attacks only
  chex.assert_shape(c.accuracy, (2, 1) + res.accuracy.shape[1:])
  np.testing.assert_allclose(c.accuracy[1, 0], res.accuracy[1], atol=1e-12)   # 2 steps: the main grid's pgd row
  np.testing.assert_allclose(c.undefended[1, 0], res.undefended[1], atol=1e-12)
  assert [d["what"] for d in res.timing] == ["grid", "convergence steps=1", "convergence steps=2"]


@pytest.mark.slow
def test_autoattack_end_to_end_with_the_chance_eps_the_suite_record_and_the_tables(trained, tmp_path):
  """The suite from the attack config through the grid to its files: ε = 0.5 is added as the chance check, the
  suite's outcome shares are a partition of the images whose 'robust' share is the autoattack row, and
  table_autoattack.md and table_masking.md are written."""
  from vqdefense_jax.core import config as config_lib
  from vqdefense_jax.purify import report
  t = trained
  section = config_lib.attack_section()
  section.names = ("ste_apgd", "autoattack")
  section.epsilons = (0.0, 0.1)
  section.pgd_steps, section.suite_steps, section.queries, section.targets = 2, 2, 20, 2
  spec = attacks.AttackSpec.from_config(section)
  assert spec.epsilons == (0.0, 0.1, 0.5) and spec.chance_epsilons == (0.5,)
  res = grid.run_grid(t.exp.vq, spec, t.exp.grid, "map", t.exp.seed, t.cls,
                      grid.vqvae_defences(t.exp.vq, ("none", "no_split", "split"), t.stacks), t.ds.test_images,
                      t.ds.test_labels, parallel.make_mesh(1))
  assert res.attack == ("ste_apgd", "autoattack", "worst_case") and res.chance_epsilons == (0.5,)
  u = res.suite
  assert u.attack == ("autoattack",) and u.outcome == attacks.OUTCOMES
  np.testing.assert_allclose(u.defended.sum(-1), 1.0, atol=1e-9)                  # every image has one outcome
  np.testing.assert_allclose(u.undefended.sum(-1), 1.0, atol=1e-9)
  np.testing.assert_allclose(u.defended[0, ..., 0], res.accuracy[1], atol=1e-9)
  np.testing.assert_allclose(u.undefended[0, :, 0], res.undefended[1], atol=1e-9)
  assert np.all(res.accuracy[2] <= res.accuracy[1] + 1e-12)                        # worst case ≤ the suite
  report.render(res, str(tmp_path))
  assert "APGD-CE" in (tmp_path / "table_autoattack.md").read_text()
  assert "chance" in (tmp_path / "table_masking.md").read_text()
