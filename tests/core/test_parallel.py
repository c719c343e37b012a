"""core/parallel.py's host-side helpers (the mesh and model stacks are tested through the grid and training)."""

import numpy as np
import pytest

from vqdefense_jax.core import parallel


@pytest.mark.parametrize("batch", [1, 3, 7, 100])
def test_batched_equals_one_call_whatever_the_batch(batch):
  x, y = np.arange(14.0).reshape(7, 2), np.arange(7.0)
  np.testing.assert_array_equal(parallel.batched(lambda a, b: a * b[:, None], x, y, batch=batch), x * y[:, None])
  # A tuple of outputs, each concatenated; and along another axis than the batch's.
  double, plus = parallel.batched(lambda a: (2 * a, a + 1), x, batch=batch)
  np.testing.assert_array_equal(double, 2 * x)
  np.testing.assert_array_equal(plus, x + 1)
  np.testing.assert_array_equal(parallel.batched(lambda a: a.T, x, batch=batch, axis=1), x.T)
