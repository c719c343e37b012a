"""`torch.save` archives written without PyTorch, for the importer's tests.

The pickle names the globals PyTorch's would (`torch._utils._rebuild_tensor_v2`, `torch.FloatStorage`, ...):
stand-in modules are put in `sys.modules` while pickling, so `pickle` records those names.
"""

import collections
import contextlib
import io
import pickle
import sys
import types
import zipfile

import numpy as np

STORAGE = {np.dtype("float32"): "FloatStorage", np.dtype("float64"): "DoubleStorage",
           np.dtype("int64"): "LongStorage", np.dtype("int32"): "IntStorage", np.dtype("uint8"): "ByteStorage"}


@contextlib.contextmanager
def _torch_names():
  torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")

  def _rebuild_tensor_v2(*args):
    raise AssertionError("never called while writing")

  _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
  utils._rebuild_tensor_v2 = _rebuild_tensor_v2
  for name in STORAGE.values():
    setattr(torch, name, type(name, (), {"__module__": "torch"}))
  torch._utils = utils
  saved = {k: sys.modules.get(k) for k in ("torch", "torch._utils")}
  sys.modules.update({"torch": torch, "torch._utils": utils})
  try:
    yield torch, utils
  finally:
    for k, v in saved.items():
      if v is None:
        sys.modules.pop(k, None)
      else:
        sys.modules[k] = v


class Strided:
  """A tensor as a view of a storage: `storage` (1-D), offset, size and stride in elements."""

  def __init__(self, storage: np.ndarray, offset: int, size: tuple, stride: tuple):
    self.storage, self.offset, self.size, self.stride = np.asarray(storage), offset, tuple(size), tuple(stride)


class _StorageRef:
  def __init__(self, key: str, cls, numel: int):
    self.key, self.cls, self.numel = key, cls, numel


class _Tensor:
  def __init__(self, rebuild, ref: _StorageRef, t: Strided):
    self.rebuild, self.ref, self.t = rebuild, ref, t

  def __reduce__(self):
    return self.rebuild, (self.ref, self.t.offset, self.t.size, self.t.stride, False, collections.OrderedDict())


class _Pickler(pickle.Pickler):
  def persistent_id(self, obj):
    if isinstance(obj, _StorageRef):
      return ("storage", obj.cls, obj.key, "cpu", obj.numel)
    return None


def write_pth(path, state: dict, prefix: str = "archive", extra: dict | None = None) -> str:
  """Writes `state` ({name: np.ndarray or Strided}) as `torch.save` would; `extra` entries are pickled as they are
  (to plant other globals)."""
  storages, entries = {}, collections.OrderedDict()
  with _torch_names() as (torch, utils):
    for i, (name, value) in enumerate(state.items()):
      if not isinstance(value, Strided):
        c = np.require(value, requirements="C")  # keeps 0-d arrays 0-d
        value = Strided(c.reshape(-1), 0, c.shape, tuple(s // c.itemsize for s in c.strides))
      t = value
      key = str(i)
      storages[key] = t.storage
      ref = _StorageRef(key, getattr(torch, STORAGE[t.storage.dtype]), t.storage.size)
      entries[name] = _Tensor(utils._rebuild_tensor_v2, ref, t)
    entries.update(extra or {})
    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump(entries)
  with zipfile.ZipFile(path, "w") as zf:
    zf.writestr(f"{prefix}/data.pkl", buf.getvalue())
    zf.writestr(f"{prefix}/version", "3\n")
    for key, storage in storages.items():
      zf.writestr(f"{prefix}/data/{key}", storage.astype(storage.dtype.newbyteorder("<")).tobytes())
  return str(path)
