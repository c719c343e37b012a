"""Reading PyTorch state dicts without PyTorch: the tensors come back exactly; nothing else is ever loaded."""

import collections
import os
import zipfile

import numpy as np
import pytest

from torch_files import Strided, write_pth
from vqdefense_jax.core import torch_pickle
from vqdefense_jax.core.errors import VQDefenseError


class _RunsCommand:
  """Pickles as a call of os.system: what a malicious .pth does."""

  def __init__(self, command: str):
    self.command = command

  def __reduce__(self):
    return os.system, (self.command,)


class _Net:
  """Pickles as a module class: a whole model saved with torch.save(model)."""


def test_tensors_come_back_exactly(tmp_path):
  rng = np.random.default_rng(0)
  state = {"w": rng.normal(size=(3, 4, 2)).astype(np.float32), "b": np.arange(5, dtype=np.int64),
           "d": rng.normal(size=(2, 2)), "s": np.asarray(1.5, np.float32), "empty": np.zeros((0, 3), np.float32)}
  out = torch_pickle.read_state_dict(write_pth(tmp_path / "a.pth", state, prefix="lenet_mnist_model"))
  assert list(out) == list(state)
  for k, v in state.items():
    assert out[k].dtype == v.dtype and out[k].shape == v.shape
    np.testing.assert_array_equal(out[k], v)


def test_a_strided_view_of_a_shared_storage(tmp_path):
  base = np.arange(24, dtype=np.float32)
  state = {"t": Strided(base, 2, (3, 4), (1, 5)), "row": Strided(base, 20, (4,), (1,))}  # a transposed view
  out = torch_pickle.read_state_dict(write_pth(tmp_path / "v.pth", state))
  np.testing.assert_array_equal(out["t"], np.lib.stride_tricks.as_strided(base[2:], (3, 4), (4, 20)))
  np.testing.assert_array_equal(out["row"], base[20:24])


def test_another_global_is_refused_and_never_called(tmp_path):
  marker = tmp_path / "ran"
  path = write_pth(tmp_path / "evil.pth", {"w": np.ones(2, np.float32)},
                   extra={"x": _RunsCommand(f"touch {marker}")})
  with pytest.raises(VQDefenseError, match=r"asks for the global (posix|os)\.system"):
    torch_pickle.read_state_dict(path)
  assert not marker.exists()


def test_a_pickled_module_is_refused(tmp_path):
  path = write_pth(tmp_path / "model.pth", {}, extra={"net": _Net()})
  with pytest.raises(VQDefenseError, match=r"global test_torch_pickle\._Net.*state_dict"):
    torch_pickle.read_state_dict(path)


def test_the_sha256_is_checked_before_unpickling(tmp_path):
  marker = tmp_path / "ran"
  path = write_pth(tmp_path / "evil.pth", {}, extra={"x": _RunsCommand(f"touch {marker}")})
  with pytest.raises(VQDefenseError, match="sha256 is .* expected 00+; this is not the published file"):
    torch_pickle.read_state_dict(path, sha256="0" * 64)
  assert not marker.exists()
  digest = torch_pickle.sha256_of(path)
  with pytest.raises(VQDefenseError, match="asks for the global"):  # the right digest lets the check go on
    torch_pickle.read_state_dict(path, sha256=digest)


def _rewrite(src, dst, change):
  """A copy of the archive `src` with `change(name, bytes) -> bytes or None (drop)` applied to every member."""
  with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
    for name in zin.namelist():
      data = change(name, zin.read(name))
      if data is not None:
        zout.writestr(name, data)
  return str(dst)


@pytest.mark.parametrize("case,message", [
    ("legacy", "is not a PyTorch zip archive"),
    ("missing storage", "storage archive/data/0 is missing"),
    ("short storage", "holds 4 bytes, not 6 values of FloatStorage"),
    ("outside", r"lies outside its storage of 6 values"),
    ("no pickle", "expected one <name>/data.pkl"),
    ("damaged pickle", "cannot read data.pkl"),
    ("not a dict", "does not hold a state dict"),
    ("absent", "not found"),
])
def test_a_broken_file_is_one_clear_error(tmp_path, case, message):
  good = write_pth(tmp_path / "good.pth", {"w": np.ones((2, 3), np.float32)})
  path = {
      "legacy": lambda: (tmp_path / "old.pth").write_bytes(b"\x80\x02legacy torch.save") and str(tmp_path / "old.pth"),
      "missing storage": lambda: _rewrite(good, tmp_path / "b.pth", lambda n, d: None if n.endswith("data/0") else d),
      "short storage": lambda: _rewrite(good, tmp_path / "b.pth", lambda n, d: d[:4] if n.endswith("data/0") else d),
      "outside": lambda: write_pth(tmp_path / "b.pth", {"w": Strided(np.ones(6, np.float32), 2, (2, 3), (3, 1))}),
      "no pickle": lambda: _rewrite(good, tmp_path / "b.pth", lambda n, d: None if n.endswith(".pkl") else d),
      "damaged pickle": lambda: _rewrite(good, tmp_path / "b.pth", lambda n, d: d[:40] if n.endswith(".pkl") else d),
      "not a dict": lambda: _list_pickle(tmp_path / "b.pth"),
      "absent": lambda: str(tmp_path / "nothing.pth"),
  }[case]()
  with pytest.raises(VQDefenseError, match=message):
    torch_pickle.read_state_dict(path)


def _list_pickle(path):
  import pickle  # pylint: disable=g-import-not-at-top
  with zipfile.ZipFile(path, "w") as zf:
    zf.writestr("archive/data.pkl", pickle.dumps([collections.OrderedDict()], protocol=2))
  return str(path)
