"""The detector: shapes for any (H, W, C), a stateless model, and a step that learns an easy real/fake split."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vqdefense_jax.core import training
from vqdefense_jax.detect import detector


@pytest.mark.slow
def test_one_logit_per_image_for_any_shape():
  for shape in ((24, 24, 1), (28, 28, 1), (64, 64, 3)):
    model = detector.Detector((8, 16))
    params = detector.init_params(model, 0, shape)
    logits = model.apply({"params": params}, jnp.zeros((3,) + shape))
    chex.assert_shape(logits, (3,))
    chex.assert_tree_all_finite(logits)
  assert detector.num_params(detector.init_params(detector.Detector(), 0, (24, 24, 1))) < 200_000


@pytest.mark.slow
def test_the_step_compiles_once_and_learns_bright_versus_dark():
  rng = np.random.default_rng(0)
  y = rng.integers(0, 2, 64).astype(np.int32)
  x = (rng.uniform(0, 0.5, (64, 12, 12, 1)) + 0.4 * y[:, None, None, None]).astype(np.float32)  # fakes brighter
  model = detector.Detector((8,))
  step = detector.DetectorStep(model, training.OptimizerSpec("adam", 3e-3))
  ts = step.init(detector.init_params(model, 0, (12, 12, 1)))
  counted = jax.jit(chex.assert_max_traces(step.__call__, n=1))
  for _ in range(60):
    ts, m = counted(ts, (x, y))
  assert int(ts.step) == 60 and float(m["accuracy"]) > 0.9
  p = detector.scores(model, ts.params, x, batch=24)           # three batches, the last one short
  chex.assert_shape(p, (64,))
  assert ((p > 0.5) == (y == 1)).mean() > 0.9
