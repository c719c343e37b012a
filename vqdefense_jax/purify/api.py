"""What the other systems may use of purification: its config, its experiment (train, load, the grid) and its
VQ-VAE purifiers. A system that builds on purification (detection: the classifier and VQ-VAEs of its sources, and
detect, then purify) imports this module only, so purification's other modules can change without breaking it
(tests/test_architecture.py checks it).
"""

from vqdefense_jax.purify.config import base_config
from vqdefense_jax.purify.experiment import Experiment, all_runs, grid_report, load_trained, train_all
from vqdefense_jax.purify.grid import make_purifiers
from vqdefense_jax.purify.purifiers import VQParams
from vqdefense_jax.purify.runs import classifier_record

__all__ = ["Experiment", "VQParams", "all_runs", "base_config", "classifier_record", "grid_report", "load_trained",
           "make_purifiers", "train_all"]
