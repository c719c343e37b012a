"""Fake-image detection on RGB faces from TensorFlow Datasets (needs internet once, for TFDS to prepare CelebA).

  python train.py --config configs/detect/faces.py --workdir runs/detect_faces
  python evaluate.py --config configs/detect/faces.py --workdir runs/detect_faces

CelebA through `tfds.data_source` (random access, no TensorFlow), centre-cropped and resized to 64×64 RGB;
the first 50,000 training and 5,000 test images. The faces have no class labels, so the classifier and
everything built on it are off: no FID, no VQ-VAE or attack sources, no detect-then-purify grid. ALAE keeps its
MLP shape (it is ALAE's MNIST one; ALAE's face models are convolutional StyleGAN-like networks, not built here)
and the DCGAN its two upsamplings (64 = 16 × 4). `data.dataset='lfw'` works the same way.

Expected: not yet run (this project's machines have no internet for TFDS). The pipeline is tested end to end
on TFDS's mock CelebA (tests/detect/test_detect_experiment.py).
"""

from vqdefense_jax.detect.config import base_config


def get_config():
  c = base_config()
  c.data.source = "tfds"
  c.data.dataset = "celeb_a"
  c.data.image_size = 64
  c.data.train_subset = 50000
  c.data.test_subset = 5000
  c.eval.sources = ("alae_samples", "alae_reconstructions", "dcgan_samples")
  c.eval.fid = False
  c.gate.detector = "none"
  c.gate.grid = False
  c.alae.steps = 20000
  c.dcgan.steps = 10000
  return c
