"""The three systems are peers over one core: core imports no system, purification imports neither other
system (a network purifier reaches the grid through core/defence.py's registry), detection reaches purification
through its public API (purify/api.py) only, and the restorer's config section exists once its module is imported."""

import ast
import glob
import os
import subprocess
import sys

import pytest

from support import ROOT

CORE = ("checkpoints", "classifier", "cli", "config", "coordinator", "data", "defence", "distributed", "errors",
        "experiment", "files", "layers", "metrics", "parallel", "report", "systems", "tiles", "torch_pickle",
        "training", "workdir", "attacks")


def _loaded_after(imports: str) -> set[str]:
  """The vqdefense_jax modules a fresh interpreter holds after `imports`."""
  code = (f"{imports}\nimport sys\nprint(' '.join(sorted(m for m in sys.modules if m.startswith('vqdefense_jax.'))))")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
  return set(out.stdout.split())


@pytest.mark.slow
def test_core_imports_no_system():
  loaded = _loaded_after("\n".join(f"import vqdefense_jax.core.{m}" for m in CORE))
  assert not {m for m in loaded if m.split(".")[1] in ("purify", "detect", "restore")}


def _modules(system: str) -> list[str]:
  """Every module of a system's package, from its files (a new module is checked without being listed here)."""
  return sorted(os.path.basename(f)[:-3] for f in glob.glob(os.path.join(ROOT, "vqdefense_jax", system, "*.py"))
                if not f.endswith("__init__.py"))


@pytest.mark.slow
@pytest.mark.parametrize("system,others", [("purify", ("detect", "restore")), ("restore", ("purify", "detect")),
                                           ("detect", ("restore",))])
def test_a_system_imports_no_other(system, others):
  loaded = _loaded_after("\n".join(f"import vqdefense_jax.{system}.{m}" for m in _modules(system)))
  assert not {m for m in loaded if m.split(".")[1] in others}, sorted(loaded)


def test_detection_uses_purification_through_its_api_only():
  for name in _modules("detect"):
    path = os.path.join(ROOT, "vqdefense_jax", "detect", f"{name}.py")
    with open(path) as f:
      tree = ast.parse(f.read())
    for node in ast.walk(tree):
      named = ([a.name for a in node.names] if isinstance(node, ast.Import) else
               [f"{node.module}.{a.name}" for a in node.names] if isinstance(node, ast.ImportFrom) and node.module
               else [])
      for module in named:
        if module.startswith("vqdefense_jax.purify"):
          assert module == "vqdefense_jax.purify.api", f"detect/{name}.py imports {module}: use vqdefense_jax.purify.api"


@pytest.mark.slow
def test_the_restorer_section_and_name_come_with_its_module():
  code = """
from vqdefense_jax.purify import config
assert "restorer" not in config.base_config()
from vqdefense_jax.restore import purifier
c = config.base_config()
assert "restorer" in c and c.restorer.blocks == 9
from vqdefense_jax.core import defence
assert defence.network_purifiers()["restorer"] is purifier.RESTORER
from vqdefense_jax.purify import purifiers
assert list(defence.registered(purifiers.Pipeline)) == list(purifiers.PURIFIERS)  # purification's, by name
print("ok")
"""
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
  assert out.stdout.strip() == "ok", out.stderr[-2000:]
