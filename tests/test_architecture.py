"""The three systems are peers over one core: core imports no system, purification imports neither other
system (a network purifier reaches the grid through core/defence.py's registry), and the restorer's config
section exists once its module is imported."""

import subprocess
import sys

import pytest

from conftest import ROOT

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


@pytest.mark.slow
@pytest.mark.parametrize("system,others", [("purify", ("detect", "restore")), ("restore", ("purify", "detect"))])
def test_a_system_imports_no_other(system, others):
  modules = {"purify": "config experiment grid report results masking purifiers kinds",
             "restore": "config experiment purifier gan gradcam models mosaic quality report results"}[system]
  loaded = _loaded_after("\n".join(f"import vqdefense_jax.{system}.{m}" for m in modules.split()))
  assert not {m for m in loaded if m.split(".")[1] in others}, sorted(loaded)


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
print("ok")
"""
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
  assert out.stdout.strip() == "ok", out.stderr[-2000:]
