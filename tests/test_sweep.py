"""Sweep training: a stack of codebook sizes trained in one step equals separate runs, and resumes exactly."""

import chex
import jax
import numpy as np
import pytest

from vqdefense_jax import data as data_lib
from vqdefense_jax import experiment, parallel, training


def _runs(c, tmp_path, model_axis=None, stop_at=None, tag=""):
  """Separate runs (model_axis None) or one sweep over c.vqvae.codebook_sizes of the Split kind."""
  ds = data_lib.load_dataset(c.data)
  task = experiment.vqvae_task(c, "split", len(ds.train_images))
  sizes = list(c.vqvae.codebook_sizes)
  inits = [experiment.vqvae_init(c, task, "split", s) for s in sizes]
  common = dict(checkpoint_every=c.train.checkpoint_every, log_every=c.train.log_every, stop_at=stop_at)
  if model_axis is None:
    return [training.train(task, f, ds.train_images, ds.train_labels, ckpt_dir=str(tmp_path / f"single{s}"),
                           name=f"K{s}", **common) for s, f in zip(sizes, inits)]
  sweep = training.Sweep(names=tuple(f"K{s}" for s in sizes), model_axis=model_axis)
  ts = training.train(task, inits, ds.train_images, ds.train_labels, ckpt_dir=str(tmp_path / f"sweep{tag}"),
                      name="sweep", sweep=sweep, **common)
  return [parallel.take(ts, i) for i in range(len(sizes))]


@pytest.mark.parametrize("model_axis", ["map", "vmap"])
def test_sweep_of_two_sizes_equals_two_separate_runs(tiny_config, tmp_path, model_axis):
  separate = _runs(tiny_config, tmp_path)
  swept = _runs(tiny_config, tmp_path, model_axis)
  for a, b in zip(separate, swept):
    assert int(b["step"]) == tiny_config.vqvae.steps
    chex.assert_trees_all_close(jax.device_get(b), jax.device_get(a), rtol=1e-4, atol=1e-6)
  # The two sizes really trained differently (else the test could not tell the runs apart).
  assert not np.allclose(swept[0]["state"]["embedding"], swept[1]["state"]["embedding"])


def test_sweep_resume_is_bit_identical(tiny_config, tmp_path):
  full = _runs(tiny_config, tmp_path, "map", tag="full")
  _runs(tiny_config, tmp_path, "map", stop_at=5, tag="resumed")
  resumed = _runs(tiny_config, tmp_path, "map", tag="resumed")
  chex.assert_trees_all_equal(jax.device_get(resumed), jax.device_get(full))


def test_sweep_step_compiles_once_for_any_codebook_sizes(tiny_config, tmp_path):
  training.sweep_step.cache_clear()
  _runs(tiny_config, tmp_path, "map", tag="a")
  tiny_config.vqvae.codebook_sizes = (3, 8)   # other sizes, same K_max: the same task and compiled step
  _runs(tiny_config, tmp_path, "map", tag="b")
  assert training.sweep_step.cache_info().currsize == 1
  task = experiment.vqvae_task(tiny_config, "split", len(data_lib.load_dataset(tiny_config.data).train_images))
  assert training.sweep_step(task, "map", parallel.model_mesh(2))._cache_size() == 1


def test_sweep_metrics_are_logged_per_codebook_size(tiny_config, tmp_path):
  import json
  workdir = tmp_path / "run"
  experiment.train_all(tiny_config, str(workdir))
  rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  steps = {(r["model"], r["step"]) for r in rows if "step" in r}
  for kind in experiment.KINDS:
    for s in tiny_config.vqvae.codebook_sizes:
      assert (experiment.ckpt_name(kind, s), tiny_config.vqvae.steps) in steps
