"""A misspelt config key is one readable line for every system: the full dotted key and the suggestion, no
escaped quotes or newlines."""

import os

import pytest

import train
from support import ROOT


@pytest.mark.parametrize("config,override,message", [
    ("detect/quick.py", "--config.detector.stpes=3", "unknown config key 'detector.stpes' (did you mean 'detector.steps'?)"),
    ("detect/quick.py", "--config.detectr.steps=3", "unknown config key 'detectr.steps' (did you mean 'detector.steps'?)"),
    ("restore/quick.py", "--config.mosaic.blok=3", "unknown config key 'mosaic.blok' (did you mean 'mosaic.block'?)"),
    ("purify/quick.py", "--config.vqvae.codebok_sizes=3",
     "unknown config key 'vqvae.codebok_sizes' (did you mean 'vqvae.codebook_sizes'?)"),
    ("purify/quick.py", "--config.zzz=3", "unknown config key 'zzz'"),
])
def test_a_misspelt_key_is_one_readable_line(config, override, message, tmp_path, capsys):
  workdir = tmp_path / "never"
  assert train.main(["--config", os.path.join(ROOT, "configs", config), override, "--workdir", str(workdir)]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert err == [f"error: {message}"] and not workdir.exists()
