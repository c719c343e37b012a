"""The paper authors' own weights, imported from PyTorch: reproduces their acc.txt exactly (2-core CPU: 5 minutes).

  python evaluate.py --grid --config configs/purify/authors.py   # imports the weights if the workdir has none

Imports the classifier and the No-Split and 4-Split VQ-VAEs (768 codes) of a clone of
noodles8436/Split-Defense-VAE (weights.torch_dir; the copy in ../shared/authors by default) into
runs/authors, then runs the paper's grid: grey-box FGSM at ε = 0…0.30 (step 0.02) on all 10,000 MNIST test
images resized to 24×24, every purifier (No-Split, 4-Split on 12×12 tiles, both pipelines). The
authors' classifier takes raw [0, 1] pixels (classifier.input_mean = 0, input_std = 1). Accuracy is counted
the authors' way (eval.counting = 'clean_and_final': an image the classifier misclassifies clean never
counts, and every image is in the denominator); the per-image predictions are kept in grid.npz, so the
'final' rule is recomputable from the same run.

Expected: the rows of acc.txt (undefended, No-Split, 4-Split) within 0.15 percentage points; measured
(REPRODUCTION.md, section 10; 2-core CPU, 2026-11-25): at most 0.07, 0.15 and 0.14, in 4 min 33 s. Other
fields keep the paper's protocol.
"""

from vqdefense_jax.purify.config import base_config


def get_config():
  c = base_config()
  c.weights.source = "torch"
  c.weights.torch_dir = "../shared/authors"
  c.classifier.input_mean = 0.0
  c.classifier.input_std = 1.0
  c.vqvae.codebook_sizes = (768,)
  c.eval.counting = "clean_and_final"
  c.eval.save_predictions = True
  return c
