"""The restoration tests' fixtures: the tiny restoration config (support.tiny_restore) on the synthetic cache."""

import pytest

from support import tiny_restore


@pytest.fixture
def restore_config(data_dir):
  """A fresh tiny restoration config (each test may change it)."""
  return tiny_restore(data_dir)
