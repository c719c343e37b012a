"""Fixtures every system's tests share: the synthetic MNIST-shaped cache (no network), the tiny purification
config as a file, and that config trained once per run (`trained`: its classifier serves the detection and
restoration tests too). Each system's own fixtures are in tests/<system>/conftest.py; the tiny configs and
helpers are in tests/support.py, a plain module that test modules and the config files tests write import.

Two tiers: `pytest -m "not slow"` (quick feedback while working) and `pytest` (everything, as CI runs it).
"""

import jax
import pytest

from support import MAP_BUDGET, Trained, memory_maps, release_compiled_code, train_tiny, write_mnist
from support import write_tiny_config_file

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture(autouse=True, scope="module")
def _fresh_compile_cache_per_module():
  """Each test module starts without the compiled code of the modules before it (session fixtures keep
  their arrays; only compiled code is dropped)."""
  yield
  release_compiled_code()


@pytest.fixture(autouse=True)
def _bounded_memory_maps():
  """Within a module, drop compiled code once the process holds more than MAP_BUDGET maps."""
  yield
  if memory_maps() > MAP_BUDGET:
    release_compiled_code()


@pytest.fixture
def data_dir(tmp_path):
  return write_mnist(tmp_path / "data")


@pytest.fixture(scope="session")
def session_data_dir(tmp_path_factory):
  return write_mnist(tmp_path_factory.mktemp("data"))


@pytest.fixture
def tiny_config_file(tmp_path, data_dir):
  return write_tiny_config_file(tmp_path / "tiny.py", data_dir)


@pytest.fixture(scope="session")
def trained(tmp_path_factory, session_data_dir) -> Trained:
  """The tiny config trained once per test run through `train.py`."""
  return train_tiny(tmp_path_factory, session_data_dir, "tiny")
