"""The paper's protocol with the standard VQ-VAE code layout (`per_position`) instead of the authors' reshape.

  python train.py --config configs/purify/standard.py --workdir runs/standard
  python evaluate.py --config configs/purify/standard.py --workdir runs/standard

Everything else is configs/purify/paper.py. Here each code vector is the D = 128 channels
at one latent position (van den Oord et al. 2017), while the paper's code cuts
the NCHW latent row-major into 128-value rows (`nchw_chunks`). Expected: not yet
measured; the comparison with configs/purify/paper.py is the point of this file.
"""

from configs.purify import paper


def get_config():
  c = paper.get_config()
  c.vqvae.layout = "per_position"
  return c
