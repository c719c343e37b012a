"""The systems by name: what a config's `system` field picks, and the one way train.py and evaluate.py run each.

Every system's `experiment` module answers the same calls:

  Experiment.from_config(config)                     the typed, checked config (before anything is written)
  train_all(exp, workdir, retrain=...)               train, resume or skip every model it names
  evaluate(exp, workdir, train_missing=..., retrain=...)   its results, written to the workdir
  format_result(result)                              the text evaluate.py prints

Every system's experiment has a `parallel` section and may run on several processes (core/distributed.py):
purification's sweeps split their stacks of models over the devices, detection's and restoration's runs split
their batches (data-parallel, core/training.py).
"""

import dataclasses
import importlib
from types import ModuleType

import ml_collections

from vqdefense_jax.core import parallel
from vqdefense_jax.core.errors import VQDefenseError


@dataclasses.dataclass(frozen=True)
class System:
  name: str
  results: str  # what evaluate.py writes besides tables and figures

  @property
  def experiment(self) -> ModuleType:
    return importlib.import_module(f"vqdefense_jax.{self.name}.experiment")


SYSTEMS = {s.name: s for s in (System("purify", "grid.json, grid.npz"), System("detect", "detection.json"),
                               System("restore", "restoration.json"))}


def of_config(config: ml_collections.ConfigDict | None) -> System:
  """Which system a config belongs to: its `system` field ('detect', 'restore'), else 'purify' (purification
  configs predate the field)."""
  name = "purify" if config is None or "system" not in config else config.system
  if name not in SYSTEMS:
    raise VQDefenseError(f"system must be one of {', '.join(SYSTEMS)}, got {name!r}")
  return SYSTEMS[name]


def start(config: ml_collections.ConfigDict):
  """(system, experiment, lead): the config checked and, with `parallel.distributed`, its processes joined;
  `lead` is whether this process writes the files and prints."""
  system = of_config(config)
  exp = system.experiment.Experiment.from_config(config)
  if (spec := getattr(exp, "parallel", None)) is not None:
    parallel.initialize(spec)
  return system, exp, parallel.is_lead()
