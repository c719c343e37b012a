"""The detection tests' fixtures: the tiny detection config (support.tiny_detect) as a config file."""

import os

import pytest


@pytest.fixture
def config_file(tmp_path, data_dir):
  path = tmp_path / "tiny_detect.py"
  path.write_text(f"import sys\nsys.path.insert(0, {os.path.dirname(os.path.dirname(__file__))!r})\n"
                  "from support import tiny_detect\n"
                  f"def get_config():\n  return tiny_detect({str(data_dir)!r})\n")
  return str(path)
