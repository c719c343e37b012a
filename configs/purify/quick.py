"""Quick CPU demo: the paper's pipeline shrunk to run in a few minutes on a laptop.

  python evaluate.py --grid        # = --config configs/purify/quick.py --workdir runs/quick; trains first
  python train.py && python evaluate.py   # the same in two steps (evaluate.py alone never trains)

Differences from configs/purify/paper.py: 12,000 training and 1,000 test images,
32-channel VQ-VAEs with D = 32 and two codebook sizes (32, 128), 1,200 VQ-VAE
steps of batch 64, a 2-epoch classifier, and 8 values of ε (0…0.28, step 0.04).
Expected on a 2-core CPU: about 4 minutes in all; classifier ≈ 0.97 clean
accuracy; see README.md for the measured table.
"""

from vqdefense_jax.purify.config import base_config


def get_config():
  c = base_config()
  c.data.train_subset = 12000
  c.data.test_subset = 1000
  c.classifier.epochs = 2
  c.classifier.batch_size = 64
  c.vqvae.channels = 32
  c.vqvae.embedding_dim = 32
  c.vqvae.codebook_sizes = (32, 128)
  c.vqvae.batch_size = 64
  c.vqvae.epochs = 0
  c.vqvae.steps = 1200
  c.attack.epsilons = tuple(round(0.04 * i, 2) for i in range(8))
  c.eval.figure_epsilons = (0.12, 0.28)  # reconstructions.png at two of the grid's ε, so its tables say how they fare
  c.train.checkpoint_every = 400
  c.train.log_every = 50
  return c
