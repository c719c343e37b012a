"""The config schema of a restoration experiment: every field, with its meaning.

A file in configs/restore/ starts from `base_config()` and changes fields; `train.py` and `evaluate.py` run the
restoration system for configs whose `system` is 'restore'. `restore.experiment.Experiment.from_config` checks
every section before anything is written.

Variants (`variants`): each name is one restorer trained on the same pairs, with the same initialisation seed
and batch order, so an ablation changes one thing. A name is '_'-separated tokens:
  'cbam' or 'nocbam'   CBAM after each residual block, or none (the first token)
  'l1only'             G's loss is λ·L1 alone (no adversarial term; D still trains, so D(G(x)) is defined)
  'lambda<λ>'          λ for this variant instead of gan.l1_weight ('lambda100': pix2pix's λ)
e.g. ('cbam', 'nocbam', 'cbam_l1only', 'cbam_lambda100').
"""

import ml_collections

from vqdefense_jax.core import config as core_config


def base_config() -> ml_collections.ConfigDict:
  """The document's set-up on MNIST at full size (an accelerator job): CycleGAN's generator and discriminator
  widths, λ = 1, Adam 2e-4 with β1 = 0.5."""
  c = ml_collections.ConfigDict()
  c.system = "restore"                # which system train.py / evaluate.py run
  c.seed = 0
  c.data = core_config.data_section()
  c.data.image_size = 24              # the purification grid's size; H and W must be divisible by 4

  c.mosaic = ml_collections.ConfigDict()  # the de-identification (restore/mosaic.py)
  c.mosaic.block = 4                  # pixelation cell side b in pixels
  c.mosaic.region = "box"             # 'box': a random box of whole cells per image; 'image': the whole image
  c.mosaic.box_min = 0.3              # the box's height and width, as fractions of the image's, are drawn in
  c.mosaic.box_max = 0.5              # [box_min, box_max] (rounded to whole cells), per image from (seed, index)

  c.generator = ml_collections.ConfigDict()  # CycleGAN's ResNet generator, CBAM after each block (models.py)
  c.generator.width = 64              # first convolution's channels (ngf); the blocks have 4x
  c.generator.blocks = 9              # residual blocks (CycleGAN: 9 at 256×256, 6 at 128×128)

  c.discriminator = ml_collections.ConfigDict()  # CycleGAN's PatchGAN
  c.discriminator.width = 64          # first convolution's channels (ndf)
  c.discriminator.layers = 0          # stride-2 layers n (CycleGAN: 3, 70×70 patches); 0: the deepest n <= 3 whose
                                      # receptive field (16, 34, 70 pixels) fits in the image

  c.gan = ml_collections.ConfigDict()  # L = L_adv + λ·L1, alternating D and G updates (gan.py)
  c.gan.l1_weight = 1.0               # λ (the document: 1; pix2pix: 100)
  c.gan.learning_rate = 2e-4          # both Adams, β = (0.5, 0.999)
  c.gan.batch_size = 64
  c.gan.steps = 20000

  c.variants = ("cbam", "nocbam", "cbam_l1only", "cbam_lambda100")  # restorers to train and compare (see above)

  # The MNIST classifier (core/classifier.py): accuracy on clean, mosaicked and restored images, and its own
  # Grad-CAM on clean, attacked and restored images. Trained here with its own record when eval.classifier.
  c.classifier = core_config.classifier_section()

  c.eval = ml_collections.ConfigDict()
  c.eval.num_images = 0               # test images evaluated (0: all of data.test_subset)
  c.eval.classifier = True            # train and use the classifier (MNIST only: other datasets have no labels)
  c.eval.attack_epsilon = 0.2         # the classifier's Grad-CAM figure: grey-box FGSM at this ε (pixel units)
  c.eval.ssim_filter_size = 11        # SSIM window (odd; dm_pix's default), reflected at the border
  c.eval.ssim_sigma = 1.5
  c.eval.figure_examples = 8          # images per row in the figures

  c.train = core_config.train_section()  # checkpoint_every, log_every (sweep is unused: one restorer at a time)
  c.parallel = core_config.parallel_section()  # distributed, timeout_s (the *_model_axis and model_devices keys
                                      # are unused: every run is data-parallel, its batches split over the devices)
  c.lock()
  return c
