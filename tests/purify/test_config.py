"""Configs: the shipped files load, overrides parse to the field's type, every section is checked where it is read."""

import os

import pytest

from support import ROOT
from vqdefense_jax.core import config as config_lib
from vqdefense_jax.core.errors import VQDefenseError
from vqdefense_jax.purify.config import base_config
from vqdefense_jax.purify.experiment import Experiment

CONFIGS = os.path.join(ROOT, "configs", "purify")


def test_shipped_configs_load_and_build_an_experiment():
  for name in sorted(os.listdir(CONFIGS)):
    Experiment.from_config(config_lib.load(os.path.join(CONFIGS, name)))
  paper = config_lib.load(os.path.join(CONFIGS, "paper.py"))
  quick = config_lib.load(os.path.join(CONFIGS, "quick.py"))
  # The paper's protocol (Table 1, Secs. 2–3; the ε grid of its tables ÷ 10).
  exp = Experiment.from_config(paper)
  assert paper.data.image_size == 24 and exp.vq.split_k == 2 and exp.vq.model.layout == "nchw_chunks"
  assert exp.vq.codebook_sizes == tuple(range(100, 1001, 100)) and exp.vq.model.k_max == 1000
  assert exp.attack.epsilons[-1] == 0.30 and len(exp.attack.epsilons) == 16
  assert quick.vqvae.channels < paper.vqvae.channels
  standard = config_lib.load(os.path.join(CONFIGS, "standard.py"))
  assert standard.vqvae.layout == "per_position"
  standard.vqvae.layout = paper.vqvae.layout
  assert standard.to_dict() == paper.to_dict()   # the layout is the only difference


def test_overrides_parse_to_the_field_type():
  c = config_lib.load(os.path.join(CONFIGS, "paper.py"), (
      "vqvae.codebook_sizes=100,200", "attack.epsilons=(0.0, 0.1)", "eval.purifiers=none,split",
      "data.auto_fetch=false", "vqvae.learning_rate=1e-3", "data.source=tfds", "attack.names=fgsm,pgd",
      "vqvae.split_ks=4"))
  assert c.vqvae.codebook_sizes == (100, 200) and c.attack.epsilons == (0.0, 0.1)
  assert c.eval.purifiers == ("none", "split") and c.data.auto_fetch is False
  assert c.vqvae.learning_rate == 1e-3 and c.data.source == "tfds" and c.attack.names == ("fgsm", "pgd")
  assert c.vqvae.split_ks == (4,)
  for override, message in [("vqvae.channels=wide", "vqvae.channels"), ("data.auto_fetch=maybe", "auto_fetch"),
                            ("nope=1", "nope"), ("vqvae.steps=2.5", "vqvae.steps")]:
    with pytest.raises(VQDefenseError, match=message):
      config_lib.load(os.path.join(CONFIGS, "paper.py"), (override,))


@pytest.mark.parametrize("key,value,message", [
    ("data.source", "internet", "data.source"),
    ("data.image_size", 30, "does not round-trip"),
    ("data.image_size", 25, "not divisible"),
    ("vqvae.embedding_dim", 100, "does not divide"),
    ("vqvae.k_max", 50, "out of range"),
    ("vqvae.codebook_sizes", (100, 100), "duplicates"),
    ("vqvae.layout", "sideways", "vqvae.layout"),
    ("eval.purifiers", ("none", "magic"), "unknown purifier"),
    ("eval.purifiers", ("none",), "besides 'none'"),
    ("classifier.optimizer", "sgd", "classifier.optimizer"),
    ("attack.names", ("fgsm", "cw"), "attack.names must be"),
    ("attack.names", ("pgd", "pgd"), "attack.names must be"),
    ("attack.pgd_steps", 0, "pgd_steps"),
    ("attack.epsilons", (0.1, 1.5), "attack.epsilons"),
    ("vqvae.training", ("adversarial",), "vqvae.training must be"),
    ("vqvae.adversarial_epsilons", (0.0, 0.3), "adversarial_epsilons"),
    ("vqvae.split_ks", (5,), "does not divide"),
    ("vqvae.split_ks", (4,), "round-trip"),
    ("grid.pairing", "worst", "grid.pairing"),
    ("grid.best_eps_max", -1.0, "grid.best_eps_max"),
    ("grid.chunk_size", -1, "grid.chunk_size"),
    ("parallel.grid_model_axis", "pmap", "parallel.grid_model_axis"),
    ("train.log_every", 0, "train.checkpoint_every and train.log_every"),
    ("data.test_subset", -1, "data.test_subset"),
])
def test_each_section_rejects_bad_values(key, value, message):
  c = base_config()
  section, field = key.split(".")
  c[section][field] = value
  with pytest.raises(VQDefenseError, match=message):
    Experiment.from_config(c)


def test_image_sizes_that_round_trip_are_accepted():
  for size, k in [(24, 2), (32, 2), (48, 4), (28, 1)]:
    c = base_config()
    c.data.image_size, c.vqvae.split_k = size, k
    Experiment.from_config(c)
