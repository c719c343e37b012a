"""Restoration of mosaicked faces from TensorFlow Datasets (needs internet once, for TFDS to prepare CelebA).

  python train.py --config configs/restore/faces.py --workdir runs/restore_faces
  python evaluate.py --config configs/restore/faces.py --workdir runs/restore_faces

CelebA through `tfds.data_source` (random access, no TensorFlow), centre-cropped and resized to 64×64 RGB; the
first 50,000 training and 2,000 test images. A mosaic of 8-pixel cells over a random box of 40-60 % of each side
(the document mosaics the face region; CelebA's crops are mostly face). CycleGAN's generator with 6 residual blocks
(its 128×128 setting) and PatchGAN (two stride-2 layers at 64×64: 34×34-pixel patches), λ = 1, 20,000 steps of
batch 32; variants with and without CBAM. Faces have no digit labels, so there is no classifier accuracy.
`data.dataset='lfw'` works the same way.

Expected: not yet run (this project's machines have no internet for TFDS). The pipeline is tested end to end on
TFDS's mock CelebA (tests/restore/test_restore_experiment.py).
"""

from vqdefense_jax.restore.config import base_config


def get_config():
  c = base_config()
  c.data.source = "tfds"
  c.data.dataset = "celeb_a"
  c.data.image_size = 64
  c.data.train_subset = 50000
  c.data.test_subset = 2000
  c.mosaic.block = 8
  c.mosaic.box_min = 0.4
  c.mosaic.box_max = 0.6
  c.generator.blocks = 6
  c.gan.batch_size = 32
  c.variants = ("cbam", "nocbam")
  c.eval.classifier = False
  return c
