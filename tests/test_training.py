import os

import chex
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from vqdefense_jax import data as data_lib
from vqdefense_jax import experiment, training
from vqdefense_jax.errors import VQDefenseError


def _vqvae_run(c, ckpt_dir, size=6, stop_at=None):
  ds = data_lib.load_dataset(c.data)
  task = experiment.vqvae_task(c, "split", len(ds.train_images))
  return training.train(task, experiment.vqvae_init(c, task, "split", size), ds.train_images, ds.train_labels,
                        ckpt_dir=ckpt_dir, name="test", checkpoint_every=c.train.checkpoint_every,
                        log_every=c.train.log_every, stop_at=stop_at)


def _classifier_run(c, ckpt_dir, stop_at=None):
  ds = data_lib.load_dataset(c.data)
  task = experiment.classifier_task(c, len(ds.train_images))
  return training.train(task, experiment.classifier_init(c, task), ds.train_images, ds.train_labels,
                        ckpt_dir=ckpt_dir, name="test", checkpoint_every=c.train.checkpoint_every,
                        log_every=c.train.log_every, stop_at=stop_at)


@pytest.mark.parametrize("stop_at", [4, 7])  # interrupted at a checkpoint, and between two (work is redone)
def test_resume_ends_bit_identical_to_an_uninterrupted_run(tiny_config, tmp_path, stop_at):
  full = _vqvae_run(tiny_config, str(tmp_path / "full"))
  part = _vqvae_run(tiny_config, str(tmp_path / "resumed"), stop_at=stop_at)
  assert int(part["step"]) == stop_at
  resumed = _vqvae_run(tiny_config, str(tmp_path / "resumed"))
  assert int(resumed["step"]) == tiny_config.vqvae.steps
  chex.assert_trees_all_equal(resumed, full)   # params, Adam state and EMA codebook, bit for bit


def test_classifier_resume_with_dropout_is_bit_identical(tiny_config, tmp_path):
  tiny_config.classifier.steps = 10
  full = _classifier_run(tiny_config, str(tmp_path / "full"))
  _classifier_run(tiny_config, str(tmp_path / "resumed"), stop_at=5)
  chex.assert_trees_all_equal(_classifier_run(tiny_config, str(tmp_path / "resumed")), full)


def test_checkpoint_round_trip_restores_the_exact_state(tiny_config, tmp_path):
  ts = _vqvae_run(tiny_config, str(tmp_path / "ck"))
  abstract = jax.eval_shape(lambda: ts)
  restored = training.restore(str(tmp_path / "ck"), abstract)
  chex.assert_trees_all_equal(restored, ts)
  chex.assert_trees_all_equal_structs(restored, ts)


def test_missing_and_corrupt_checkpoints_are_clear_errors(tiny_config, tmp_path):
  ts = _vqvae_run(tiny_config, str(tmp_path / "ck"))
  abstract = jax.eval_shape(lambda: ts)
  with pytest.raises(VQDefenseError, match="no checkpoint"):
    training.restore(str(tmp_path / "nothing"), abstract)
  step_dir = tmp_path / "ck" / str(tiny_config.vqvae.steps)
  for root, _, files in os.walk(step_dir):
    for f in files:
      with open(os.path.join(root, f), "wb") as fh:
        fh.write(b"garbage")
  with pytest.raises(VQDefenseError, match="corrupt"):
    training.restore(str(tmp_path / "ck"), abstract)


def test_batches_cover_each_epoch_once_and_depend_only_on_seed_and_step():
  n, bs = 50, 8
  epoch = np.concatenate([training.batch_indices(3, n, bs, s) for s in range(n // bs)])
  assert len(set(epoch.tolist())) == len(epoch) == 48
  np.testing.assert_array_equal(training.batch_indices(3, n, bs, 9), training.batch_indices(3, n, bs, 9))
  assert not np.array_equal(training.batch_indices(3, n, bs, 0), training.batch_indices(3, n, bs, 6))
  with pytest.raises(VQDefenseError):
    training.batch_indices(0, 5, 8, 0)


def test_one_compiled_train_step_serves_every_codebook_size(tiny_config, tmp_path):
  training.train_step.clear_cache()
  for size in tiny_config.vqvae.codebook_sizes:
    _vqvae_run(tiny_config, str(tmp_path / f"k{size}"), size=size)
  assert training.train_step._cache_size() == 1


def test_optimizer_schedule_decays_per_epoch():
  sched = training.OptimizerSpec("adadelta", 1.0, 0.7, steps_per_epoch=10).schedule()
  np.testing.assert_allclose([sched(0), sched(9), sched(10), sched(25)], [1.0, 1.0, 0.7, 0.49], rtol=1e-6)
  np.testing.assert_allclose(training.OptimizerSpec("adam", 2e-4, 1.0, 7).schedule()(1000), 2e-4)
  with pytest.raises(VQDefenseError):
    training.OptimizerSpec("sgd").build()
