"""The paper's protocol with a reduced VQ-VAE sweep that a 2-core CPU finishes in about 75 minutes.

  python evaluate.py --grid --config configs/purify/paper_cpu.py

Same as configs/purify/paper.py (60,000/10,000 images at 24×24, the classifier
protocol, Table 1 VQ-VAEs at width 128, `nchw_chunks`, all 16 ε, all 10,000
test images) except the VQ-VAE sweep: three codebook sizes (100, 300, 900 —
900 and 300 are the paper's best No-Split and 4-Split sizes) trained with batch
64 for 1,500 steps (1.6 epochs) instead of batch 512 for 50 epochs.

Expected: classifier ≈ 0.993 clean; purified accuracy at ε = 0 ≈ 0.97–0.98,
4-Split above No-Split at small ε. Measured: REPRODUCTION.md.
"""

from configs.purify import paper


def get_config():
  c = paper.get_config()
  c.vqvae.codebook_sizes = (100, 300, 900)
  c.vqvae.batch_size = 64
  c.vqvae.epochs = 0
  c.vqvae.steps = 1500
  return c
