"""PyTorch state dicts as numpy arrays, read without PyTorch and without running the pickle's code.

A `.pth` file written by `torch.save` (PyTorch >= 1.6) is a zip archive: `<name>/data.pkl` is a pickle of
the state dict whose tensors point at raw storages `<name>/data/<key>`. A pickle may name any Python
global and call it, so `data.pkl` goes through an unpickler that admits only what a state dict of tensors
needs (the policy of `torch.load(weights_only=True)`): `collections.OrderedDict`, the tensor-rebuild
functions and the storage types. Any other global is a one-line `VQDefenseError` naming it.

  read_state_dict(path, sha256=None) -> {name: np.ndarray}

With `sha256`, the file's digest is checked before anything is unpickled.
"""

import collections
import hashlib
import io
import os
import pickle
import zipfile
from typing import Any

import numpy as np

from vqdefense_jax.core.errors import VQDefenseError

# Storage type -> numpy dtype (little-endian unless the archive's `byteorder` says otherwise).
STORAGES = {"FloatStorage": "f4", "DoubleStorage": "f8", "HalfStorage": "f2", "LongStorage": "i8",
            "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1", "ByteStorage": "u1", "BoolStorage": "?"}
REBUILDERS = ("_rebuild_tensor_v2", "_rebuild_parameter")


def sha256_of(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


class _Storage:
  """A storage of the archive, read when a tensor first uses it."""

  def __init__(self, archive: "_Archive", kind: str, key: str, numel: int):
    self.archive, self.kind, self.key, self.numel = archive, kind, key, numel

  def array(self) -> np.ndarray:
    return self.archive.storage(self.kind, self.key, self.numel)


class _Archive:
  def __init__(self, path: str, zf: zipfile.ZipFile, prefix: str):
    self.path, self.zf, self.prefix = path, zf, prefix
    self.cache: dict[str, np.ndarray] = {}
    order = f"{prefix}/byteorder"
    self.byteorder = zf.read(order).decode().strip() if order in zf.namelist() else "little"
    if self.byteorder not in ("little", "big"):
      raise VQDefenseError(f"{path}: unknown byteorder {self.byteorder!r}")

  def storage(self, kind: str, key: str, numel: int) -> np.ndarray:
    if key not in self.cache:
      member = f"{self.prefix}/data/{key}"
      try:
        raw = self.zf.read(member)
      except KeyError:
        raise VQDefenseError(f"{self.path}: storage {member} is missing from the archive") from None
      dtype = np.dtype(STORAGES[kind]).newbyteorder("<" if self.byteorder == "little" else ">")
      if len(raw) != numel * dtype.itemsize:
        raise VQDefenseError(f"{self.path}: storage {member} holds {len(raw)} bytes, not {numel} values of "
                             f"{kind}")
      self.cache[key] = np.frombuffer(raw, dtype).astype(dtype.newbyteorder("="))
    return self.cache[key]


def _rebuild(archive: _Archive):
  """torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks, ...) as numpy."""

  def rebuild(storage, offset, size, stride, *_):
    if not isinstance(storage, _Storage):
      raise VQDefenseError(f"{archive.path}: a tensor refers to {type(storage).__name__}, not a storage")
    size, stride, offset = tuple(int(s) for s in size), tuple(int(s) for s in stride), int(offset)
    flat = storage.array()
    last = offset + sum((n - 1) * s for n, s in zip(size, stride)) if all(size) else offset - 1
    if len(size) != len(stride) or offset < 0 or min(stride, default=0) < 0 or last >= len(flat):
      raise VQDefenseError(f"{archive.path}: a tensor of size {size}, stride {stride} and offset {offset} lies "
                           f"outside its storage of {len(flat)} values")
    item = flat.itemsize
    view = np.lib.stride_tricks.as_strided(flat[offset:], size, tuple(s * item for s in stride), writeable=False)
    return np.array(view)  # a copy, C-ordered

  return rebuild


class _Unpickler(pickle.Unpickler):
  def __init__(self, data: bytes, archive: _Archive):
    super().__init__(io.BytesIO(data))
    self.archive = archive

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) == ("collections", "OrderedDict"):
      return collections.OrderedDict
    if module == "torch._utils" and name == "_rebuild_tensor_v2":
      return _rebuild(self.archive)
    if module == "torch._utils" and name == "_rebuild_parameter":
      return lambda data, requires_grad, hooks, *_: data
    if module == "torch" and name in STORAGES:
      return name
    raise VQDefenseError(f"{self.archive.path}: the pickle asks for the global {module}.{name}, which a state dict "
                         "of tensors never needs; refusing to load it (save the model's state_dict() instead)")

  def persistent_load(self, pid: Any) -> _Storage:
    if (not isinstance(pid, tuple) or len(pid) != 5 or pid[0] != "storage" or pid[1] not in STORAGES
        or not isinstance(pid[4], int)):
      raise VQDefenseError(f"{self.archive.path}: unsupported storage reference {str(pid)[:80]}")
    return _Storage(self.archive, pid[1], str(pid[2]), pid[4])


def read_state_dict(path: str, sha256: str | None = None) -> dict[str, np.ndarray]:
  """The tensors of the state dict in the `torch.save` archive at `path`, by name.

  With `sha256`, a file with another digest is refused before it is unpickled.
  """
  if not os.path.isfile(path):
    raise VQDefenseError(f"{path} not found")
  if sha256 is not None and (digest := sha256_of(path)) != sha256:
    raise VQDefenseError(f"{path}: sha256 is {digest}, expected {sha256}; this is not the published file, "
                         "refusing to unpickle it")
  if not zipfile.is_zipfile(path):
    raise VQDefenseError(f"{path} is not a PyTorch zip archive (torch.save of PyTorch >= 1.6); re-save it with "
                         "torch.save(model.state_dict(), path)")
  with zipfile.ZipFile(path) as zf:
    pickles = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
      raise VQDefenseError(f"{path}: expected one <name>/data.pkl in the archive, found {len(pickles)}")
    archive = _Archive(path, zf, pickles[0].split("/")[0])
    try:
      state = _Unpickler(zf.read(pickles[0]), archive).load()
    except VQDefenseError:
      raise
    except Exception as e:  # a damaged pickle raises many types
      raise VQDefenseError(f"{path}: cannot read data.pkl ({type(e).__name__}: {e})") from e
  if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, np.ndarray)
                                            for k, v in state.items()):
    raise VQDefenseError(f"{path} does not hold a state dict (names -> tensors) but a {type(state).__name__}")
  return dict(state)
