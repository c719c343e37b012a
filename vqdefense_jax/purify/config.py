"""The config schema of a purification experiment: every field, with its meaning.

An experiment file in configs/purify/ starts from `base_config()` and changes fields. The sections are
checked where they are used: `purify.experiment.Experiment.from_config` builds every section's typed
description (and so checks the whole config) before anything is written.
"""

import ml_collections

from vqdefense_jax.core import config as core_config
from vqdefense_jax.core import defence
from vqdefense_jax.purify.purifiers import PURIFIERS


def base_config() -> ml_collections.ConfigDict:
  """The paper's protocol; experiment files override what differs."""
  c = ml_collections.ConfigDict()
  c.seed = 0                          # one seed for inits, dropout and data order
  c.data = core_config.data_section()
  c.classifier = core_config.classifier_section()

  c.vqvae = ml_collections.ConfigDict()  # read by kinds.VQSpec.from_config and training.Schedule.from_config
  c.vqvae.split_k = 2                 # Split VQ-VAE works on k×k tiles (4-Split: k = 2)
  c.vqvae.channels = 128              # conv widths (Table 1)
  c.vqvae.embedding_dim = 128         # code vector length D
  c.vqvae.layout = "nchw_chunks"      # 'nchw_chunks' (authors' code) or 'per_position' (standard)
  c.vqvae.codebook_sizes = tuple(range(100, 1001, 100))
  c.vqvae.k_max = 0                   # allocated codebook rows (0: max of codebook_sizes)
  c.vqvae.commitment_cost = 0.25
  c.vqvae.decay = 0.999               # EMA decay of the codebook
  c.vqvae.epsilon = 1e-5              # Laplace smoothing of code counts
  c.vqvae.optimizer = "adam"
  c.vqvae.learning_rate = 2e-4
  c.vqvae.lr_decay_per_epoch = 1.0
  c.vqvae.batch_size = 512            # images per step (the Split VQ-VAE sees k·k tiles of each)
  c.vqvae.epochs = 50
  c.vqvae.steps = 0                   # > 0 overrides epochs
  c.vqvae.training = ("clean",)       # 'clean' (the paper) and/or 'adversarial' (Defense-VAE: adv -> clean pairs)
  c.vqvae.adversarial_epsilons = (0.2, 0.25, 0.3, 0.35)  # per image one of these; FGSM on the classifier
  c.vqvae.split_ks = ()               # extra tile counts k for the Split purifier in the grid (finer splits)

  c.attack = core_config.attack_section()

  c.eval = ml_collections.ConfigDict()  # read by experiment.EvalSpec.from_config
  c.eval.purifiers = PURIFIERS        # 'none' (undefended) is always computed; a network purifier ('restorer',
                                      # trained here on FGSM -> clean pairs, section `restorer`) adds one more row
  c.eval.figure_epsilons = (0.1, 0.3)  # rows of the reconstruction figure
  c.eval.figure_examples = 8
  c.eval.counting = "final"           # 'final': an image counts when its final prediction is right;
                                      # 'clean_and_final' (the authors'): also right on the clean image
  c.eval.save_predictions = False     # keep every test image's predictions in grid.npz (either rule recomputable)

  c.grid = ml_collections.ConfigDict()  # read by grid.GridSpec.from_config
  c.grid.chunk_size = 0               # test images per scan step (× every ε); 0: 8 on CPU (fastest measured), else 256
  c.grid.pairing = "same"             # pipelines pair 'same' sizes (the paper) or the 'best' of each kind
  c.grid.best_eps_max = 0.08          # 'best' = highest mean accuracy over ε <= this (the paper's criterion)

  c.weights = ml_collections.ConfigDict()  # read by interop.WeightsSpec.from_config
  c.weights.source = "train"          # 'train' every model here, or 'torch': import the authors' PyTorch weights
  c.weights.torch_dir = ""            # 'torch': a clone of noodles8436/Split-Defense-VAE (configs/purify/authors.py)
  c.weights.check_sha256 = True       # 'torch': refuse files whose sha256 is not the published one

  # A network purifier another system offers (core/defence.py; the restorer: vqdefense_jax.restore.purifier, which
  # a config that lists 'restorer' imports) adds its section, read when eval.purifiers lists it.
  for name, network in sorted(defence.network_purifiers().items()):
    c[name] = network.section()

  c.train = core_config.train_section()
  c.parallel = core_config.parallel_section()
  c.lock()
  return c
