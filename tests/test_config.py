import os

import pytest

from vqdefense_jax import config as config_lib
from vqdefense_jax.errors import VQDefenseError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_shipped_configs_load_and_validate():
  paper = config_lib.load_config(os.path.join(ROOT, "configs", "paper.py"))
  quick = config_lib.load_config(os.path.join(ROOT, "configs", "quick.py"))
  # The paper's protocol (Table 1, Secs. 2–3; the ε grid of its tables ÷ 10).
  assert paper.data.image_size == 24 and paper.vqvae.split_k == 2 and paper.vqvae.layout == "nchw_chunks"
  assert paper.vqvae.codebook_sizes == tuple(range(100, 1001, 100)) and config_lib.k_max_of(paper) == 1000
  assert paper.attack.epsilons[-1] == 0.30 and len(paper.attack.epsilons) == 16
  assert quick.vqvae.channels < paper.vqvae.channels
  standard = config_lib.load_config(os.path.join(ROOT, "configs", "standard.py"))
  assert standard.vqvae.layout == "per_position"
  standard.vqvae.layout = paper.vqvae.layout
  assert standard.to_dict() == paper.to_dict()   # the layout is the only difference


def test_overrides_parse_to_the_field_type():
  c = config_lib.base_config()
  config_lib.set_value(c, "vqvae.codebook_sizes", "100,200")
  config_lib.set_value(c, "attack.epsilons", "(0.0, 0.1)")
  config_lib.set_value(c, "eval.purifiers", "none,split")
  config_lib.set_value(c, "data.auto_fetch", "false")
  config_lib.set_value(c, "vqvae.learning_rate", "1e-3")
  config_lib.set_value(c, "data.source", "tfds")
  assert c.vqvae.codebook_sizes == (100, 200) and c.attack.epsilons == (0.0, 0.1)
  assert c.eval.purifiers == ("none", "split") and c.data.auto_fetch is False
  assert c.vqvae.learning_rate == 1e-3 and c.data.source == "tfds"
  for key, value in [("vqvae.channels", "wide"), ("data.auto_fetch", "maybe"), ("nope", "1"), ("data", "1")]:
    with pytest.raises(VQDefenseError):
      config_lib.set_value(c, key, value)


@pytest.mark.parametrize("key,value,message", [
    ("data.source", "internet", "data.source"),
    ("data.image_size", "30", "does not round-trip"),
    ("data.image_size", "25", "not divisible"),
    ("vqvae.embedding_dim", "100", "does not divide"),
    ("vqvae.k_max", "50", "out of range"),
    ("vqvae.codebook_sizes", "100,100", "duplicates"),
    ("eval.purifiers", "none,magic", "unknown purifier"),
    ("classifier.optimizer", "sgd", "classifier.optimizer"),
    ("attack.names", "fgsm,cw", "attack.names must be"),
    ("attack.names", "pgd,pgd", "attack.names must be"),
    ("attack.pgd_steps", "0", "pgd_steps"),
    ("vqvae.training", "adversarial", "vqvae.training must be"),
    ("vqvae.adversarial_epsilons", "0.0,0.3", "adversarial_epsilons"),
    ("vqvae.split_ks", "5", "does not divide"),
    ("vqvae.split_ks", "4", "round-trip"),
])
def test_validate_rejects(key, value, message):
  c = config_lib.base_config()
  config_lib.set_value(c, key, value)
  with pytest.raises(VQDefenseError, match=message):
    config_lib.validate(c)


def test_image_sizes_that_round_trip_are_accepted():
  for size, k in [(24, 2), (32, 2), (48, 4), (28, 1)]:
    c = config_lib.base_config()
    c.data.image_size, c.vqvae.split_k = size, k
    config_lib.validate(c)
