"""The purification tests' own fixtures (the tiny config and `trained` every system uses are in tests/conftest.py)."""

import pytest

from support import Trained, tiny, train_tiny


@pytest.fixture
def tiny_config(data_dir):
  return tiny(data_dir)


@pytest.fixture(scope="session")
def trained_beyond(tmp_path_factory, session_data_dir) -> Trained:
  """The tiny config with every extension, trained once per test run."""
  return train_tiny(tmp_path_factory, session_data_dir, "tiny_beyond")
