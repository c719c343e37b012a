"""Stacks of models and the device mesh they run on.

A *stack* is a pytree whose leaves carry a leading model axis M: the variables
of every codebook size of one VQ-VAE kind (codebooks are padded to K_max, so
they stack). `over_models` maps a per-model function over that axis in one of
two ways, chosen by config (`parallel.grid_model_axis`,
`parallel.train_model_axis`) because which one is faster depends on the backend
and on the computation:

  map   `lax.map`: a loop inside the compiled computation, one model at a time,
        each at the full batch. On a 2-core CPU the evaluation grid ran 6x
        faster this way than with vmap, but a train step inside lax.map ran
        5-15x slower than the same step alone.
  vmap  `jax.vmap`: all models at once; convolutions with stacked kernels
        become grouped convolutions. The default for sweep training.

The mesh has two named axes, ('model', 'batch'); with one device both have size
1 and everything runs unchanged. Data-parallel training (`data_mesh`) splits each
batch over 'batch' and replicates the model.
"""

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from vqdefense_jax.core.errors import VQDefenseError

MODEL_AXES = ("map", "vmap")


def stack(trees: list[Any]) -> Any:
  """[tree, tree, ...] -> one tree with a leading model axis."""
  if not trees:
    raise VQDefenseError("cannot stack an empty list of models")
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def concat(stacks: list[Any]) -> Any:
  """[stack, stack, ...] -> one stack whose model axis runs through them in order."""
  if not stacks:
    raise VQDefenseError("cannot concatenate an empty list of stacks")
  return jax.tree.map(lambda *xs: jnp.concatenate(xs), *stacks)


def take(stacked: Any, i) -> Any:
  """Model i (or the models of an index array i) of a stack.

  A stack sharded over several processes' devices is gathered to the host first (one blocking gather per leaf):
  indexing it op by op would dispatch one small multi-process computation per leaf, and dozens of those in
  flight deadlocked XLA:CPU (gloo all-reduces waiting on a device whose queue of 32 computations was full).
  """
  if any(isinstance(x, jax.Array) and not x.is_fully_addressable for x in jax.tree.leaves(stacked)):
    return jax.tree.map(lambda x: jnp.asarray(x[i]), to_host(stacked))  # on this process's default device
  return jax.tree.map(lambda x: x[i], stacked)


def num_models(stacked: Any) -> int:
  return int(jax.tree.leaves(stacked)[0].shape[0])


def pad_models(stacked: Any, multiple: int) -> Any:
  """Repeat the last model until M is a multiple of `multiple` (its results are dropped later)."""
  m = num_models(stacked)
  extra = -m % multiple
  if not extra:
    return stacked
  return jax.tree.map(lambda x: jnp.concatenate([x, jnp.repeat(x[-1:], extra, axis=0)]), stacked)


def over_models(fn: Callable[..., Any], model_axis: str) -> Callable[..., Any]:
  """fn(*per_model_args) -> fn over stacks of those args, along their leading axis."""
  if model_axis == "vmap":
    return jax.vmap(fn)
  if model_axis == "map":
    return lambda *stacks: jax.lax.map(lambda args: fn(*args), stacks)
  raise VQDefenseError(f"model axis strategy must be one of {MODEL_AXES}, not {model_axis!r}")


def make_mesh(model_devices: int = 1, devices: list | None = None) -> Mesh:
  """A ('model', 'batch') mesh over all (or the given) devices: `model_devices` × the rest."""
  devices = list(jax.devices() if devices is None else devices)
  if model_devices < 1 or len(devices) % model_devices:
    raise VQDefenseError(f"parallel.model_devices={model_devices} does not divide the {len(devices)} devices")
  return Mesh(np.array(devices).reshape(model_devices, len(devices) // model_devices), ("model", "batch"))


def model_mesh(num: int, devices: list | None = None) -> Mesh:
  """A mesh for training a stack of `num` models: the largest device count that divides `num`, all on 'model'.

  On several processes every device must take part in the computation, so the mesh has them all: 'model' the
  largest count that divides both `num` and the number of devices, 'batch' the rest (copies of the same step).
  """
  devices = list(jax.devices() if devices is None else devices)
  if jax.process_count() > 1:
    return make_mesh(max(i for i in range(1, len(devices) + 1) if num % i == 0 and len(devices) % i == 0), devices)
  d = max(i for i in range(1, len(devices) + 1) if num % i == 0)
  return make_mesh(d, devices[:d])


def data_mesh(batch_size: int, devices: list | None = None) -> Mesh:
  """A mesh for data-parallel training (`training.fit`): each batch split over its 'batch' axis, the largest
  device count that divides `batch_size`, so every device gets an equal share.

  On one process the mesh has just those devices. On several, every device must take part in the computation,
  so 'batch' is the largest count that divides both the batch size and the number of devices, and 'model' the
  rest: copies of the same data-parallel step, as the sweeps' 'batch' axis holds copies of theirs.
  """
  devices = list(jax.devices() if devices is None else devices)
  if jax.process_count() > 1:
    d = max(i for i in range(1, len(devices) + 1) if batch_size % i == 0 and len(devices) % i == 0)
    return make_mesh(len(devices) // d, devices)
  d = max(i for i in range(1, len(devices) + 1) if batch_size % i == 0)
  return make_mesh(1, devices[:d])


def put(tree: Any, sharding: NamedSharding) -> Any:
  """Every leaf of `tree` as a global array with `sharding`.

  Each device receives only its slice, cut from the full value on the host.
  This also works on several hosts (after `jax.distributed.initialize()`),
  where every process computes the same full value (same config, same data)
  and `jax.device_put` could not address the other hosts' devices.
  """
  def one(x):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
  return jax.tree.map(one, tree)


def shard_models(stacked: Any, mesh: Mesh) -> Any:
  """Place a stack with its model axis split over the mesh's 'model' axis (replicated over 'batch')."""
  return put(stacked, NamedSharding(mesh, P("model")))


def batched(fn: Callable, *arrays: np.ndarray, batch: int = 500, axis: int = 0) -> Any:
  """fn over the leading axis of `arrays` in batches of `batch` (memory stays bounded by one batch); the
  outputs (one array, or each array of a tuple) concatenated along `axis` as numpy."""
  parts = [fn(*(a[i:i + batch] for a in arrays)) for i in range(0, len(arrays[0]), batch)]
  if isinstance(parts[0], tuple):
    return tuple(np.concatenate([np.asarray(p[k]) for p in parts], axis=axis) for k in range(len(parts[0])))
  return np.concatenate([np.asarray(p) for p in parts], axis=axis)


def replicate(tree: Any, mesh: Mesh) -> Any:
  return put(tree, NamedSharding(mesh, P()))


def to_host(tree: Any) -> Any:
  """Every leaf as a numpy array holding its full value, on every process (a leaf sharded over several hosts'
  devices is gathered first): the topology-free form checkpoints are written in."""
  def one(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)
  return jax.tree.map(one, tree)


def one_replica(tree: Any) -> Any:
  """Of every leaf replicated over a mesh, the copy on this process's first device of it: an ordinary array
  that computations of this process alone can take (a global array spanning other processes' devices cannot
  join them), with no copy through the host."""
  return jax.tree.map(lambda x: x.addressable_data(0) if isinstance(x, jax.Array) else x, tree)


def barrier(name: str) -> None:
  """On several processes, wait here until every process has arrived (a no-op on one). It is the coordination
  service's barrier, as orbax's are (a device collective here could deadlock against one of theirs)."""
  if jax.process_count() > 1:
    from vqdefense_jax.core import distributed  # pylint: disable=g-import-not-at-top
    distributed.barrier(name)


def is_lead() -> bool:
  """Whether this process writes the run's files (on several hosts, one does)."""
  return jax.process_index() == 0


def initialize(spec: "ParallelSpec") -> None:
  """Join a run of several processes (TPU pod, GPU cluster, processes on one machine) before any other JAX
  call, when `spec.distributed`: core/distributed.py, README.md."""
  if spec.distributed:
    from vqdefense_jax.core import distributed  # pylint: disable=g-import-not-at-top
    distributed.join(spec.timeout_s)


@dataclasses.dataclass(frozen=True)
class ParallelSpec:
  """The `parallel` config section, checked: how stacks of models map and spread over devices."""
  grid_model_axis: str = "map"
  train_model_axis: str = "vmap"
  model_devices: int = 1
  distributed: bool = False
  timeout_s: float = 120.0

  @classmethod
  def from_config(cls, section) -> "ParallelSpec":
    spec = cls(section.grid_model_axis, section.train_model_axis, section.model_devices, section.distributed,
               float(section.timeout_s))
    for key in ("grid_model_axis", "train_model_axis"):
      if getattr(spec, key) not in MODEL_AXES:
        raise VQDefenseError(f"parallel.{key} must be 'map' or 'vmap', not {getattr(spec, key)!r}")
    if spec.model_devices < 1:
      raise VQDefenseError("parallel.model_devices must be >= 1")
    if not 1 <= spec.timeout_s <= 86400:
      raise VQDefenseError(f"parallel.timeout_s must be in 1..86400 seconds, got {spec.timeout_s}")
    return spec
