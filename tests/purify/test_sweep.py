"""VQ-VAE training runs: resume is exact; a sweep of codebook sizes equals separate runs, resumes exactly, compiles once."""

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vqdefense_jax.core import data as data_lib
from vqdefense_jax.core import parallel, training
from vqdefense_jax.purify import experiment


def _fit(c, tmp_path, tag, model_axis=None, stop_at=None, sizes=None):
  """Separate runs (model_axis None) or one sweep over the codebook sizes of the Split kind; returns the states."""
  exp = experiment.Experiment.from_config(c)
  ds = data_lib.load_dataset(exp.data)
  kind = exp.vq.kind(exp.vq.split_k)
  n = len(ds.train_images)
  step = experiment.vqvae_step(exp, kind, n)
  sizes = sizes or exp.vq.codebook_sizes
  inits = [experiment.vqvae_init(exp, step, kind, s) for s in sizes]
  common = dict(num_steps=exp.vqvae_schedule.num_steps(n), consts=(jnp.asarray(ds.train_images),
                jnp.asarray(ds.train_labels), None), checkpoint_every=4, log_every=4, stop_at=stop_at)
  batches = training.IndexBatches(step.seed, n, exp.vqvae_schedule.batch_size)
  if model_axis is None:
    return [training.fit(step, f, batches, ckpt_dir=str(tmp_path / f"{tag}{s}"), name=f"K{s}", **common)
            for s, f in zip(sizes, inits)]
  sweep = training.Sweep(names=tuple(f"K{s}" for s in sizes), model_axis=model_axis)
  ts = training.fit(step, lambda: parallel.stack([f() for f in inits]), batches, ckpt_dir=str(tmp_path / tag),
                    name="sweep", sweep=sweep, **common)
  return [parallel.take(ts, i) for i in range(len(sizes))]


@pytest.mark.slow
@pytest.mark.parametrize("stop_at", [4, 7])  # interrupted at a checkpoint, and between two (work is redone)
def test_vqvae_resume_ends_bit_identical_to_an_uninterrupted_run(tiny_config, tmp_path, stop_at):
  full = _fit(tiny_config, tmp_path, "full", sizes=(6,))[0]
  part = _fit(tiny_config, tmp_path, "resumed", stop_at=stop_at, sizes=(6,))[0]
  assert int(part.step) == stop_at
  resumed = _fit(tiny_config, tmp_path, "resumed", sizes=(6,))[0]
  assert int(resumed.step) == tiny_config.vqvae.steps
  chex.assert_trees_all_equal(resumed, full)   # params, Adam state and EMA codebook, bit for bit


@pytest.mark.slow
def test_one_compiled_train_step_serves_every_codebook_size(tiny_config, tmp_path):
  training.compiled_step.clear_cache()
  _fit(tiny_config, tmp_path, "single")
  assert training.compiled_step._cache_size() == 1


@pytest.mark.slow
@pytest.mark.parametrize("model_axis", ["map", "vmap"])
def test_sweep_of_two_sizes_equals_two_separate_runs(tiny_config, tmp_path, model_axis):
  separate = _fit(tiny_config, tmp_path, "single")
  swept = _fit(tiny_config, tmp_path, "sweep", model_axis)
  for a, b in zip(separate, swept):
    assert int(b.step) == tiny_config.vqvae.steps
    chex.assert_trees_all_close(jax.device_get(b), jax.device_get(a), rtol=1e-4, atol=1e-6)
  # The two sizes really trained differently (else the test could not tell the runs apart).
  assert not np.allclose(swept[0].state["embedding"], swept[1].state["embedding"])


@pytest.mark.slow
def test_sweep_resume_is_bit_identical(tiny_config, tmp_path):
  full = _fit(tiny_config, tmp_path, "full", "map")
  _fit(tiny_config, tmp_path, "resumed", "map", stop_at=5)
  resumed = _fit(tiny_config, tmp_path, "resumed", "map")
  chex.assert_trees_all_equal(jax.device_get(resumed), jax.device_get(full))


@pytest.mark.slow
def test_sweep_step_compiles_once_for_any_codebook_sizes(tiny_config, tmp_path):
  training.sweep_step.cache_clear()
  _fit(tiny_config, tmp_path, "a", "map")
  tiny_config.vqvae.codebook_sizes = (3, 8)   # other sizes, same K_max: the same step and compiled function
  _fit(tiny_config, tmp_path, "b", "map")
  assert training.sweep_step.cache_info().currsize == 1
  exp = experiment.Experiment.from_config(tiny_config)
  step = experiment.vqvae_step(exp, exp.vq.kind(2), 240)
  assert training.sweep_step(step, "map", parallel.model_mesh(2), 3)._cache_size() == 1


@pytest.mark.slow
def test_training_writes_metrics_per_codebook_size_and_one_checkpoint_per_kind(trained):
  rows = [json.loads(line) for line in open(f"{trained.workdir}/metrics.jsonl")]
  steps = {(r["model"], r["step"]) for r in rows if "step" in r}
  for kind in trained.exp.vq.kinds:
    for s in trained.exp.vq.codebook_sizes:
      assert (experiment.checkpoint_name(kind, s), trained.config.vqvae.steps) in steps
  assert all("perplexity" in r and "dead_code_share" in r for r in rows if r["model"].startswith("vqvae"))
  test_acc = [r["test_accuracy"] for r in rows if r["model"] == "classifier" and "test_accuracy" in r]
  assert test_acc[-1] > 0.5  # the synthetic classes are easy: training really trained
