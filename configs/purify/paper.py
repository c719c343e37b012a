"""The paper's protocol (Kim, Hyun & Hong 2022, Table 1 and Secs. 2–4), full size: a GPU job.

  python evaluate.py --grid --config configs/purify/paper.py   # trains what is missing, then the grid

MNIST resized 28→24 (bilinear, no antialias); the PyTorch-MNIST-example classifier
(Adadelta lr 1.0, ×0.7 per epoch, 14 epochs, batch 64); No-Split and 4-Split
(k = 2) VQ-VAEs of Table 1 (128 channels, D = 128, authors' `nchw_chunks` code
layout, EMA codebook), Adam 2e-4, batch 512, 50 epochs, for each codebook size
100…1000 (step 100); grey-box FGSM at ε = 0…0.30 (step 0.02) on the 10,000 test
images.

Expected (the paper, Tables 2–3): clean classifier ≥ 0.99; purified accuracy at
ε = 0 of 0.976–0.983 (No-Split) and 0.982–0.987 (4-Split); at ε = 0.30
0.28–0.47 (No-Split) and 0.22–0.32 (4-Split); 4-Split beats No-Split below
ε ≈ 0.15 and loses above.

Measured here (REPRODUCTION.md, section 8; 2-core CPU, 2026-11-23): classifier
0.9931. With only the VQ-VAE training reduced (K = 300, batch 64, 6,000 steps),
purified accuracy at ε = 0 / 0.30 was 0.977 / 0.564 (No-Split) and 0.985 / 0.491
(4-Split). 4-Split beat No-Split up to ε = 0.16. The full-size run is not yet
measured: it needs a GPU.
"""

from vqdefense_jax.purify.config import base_config


def get_config():
  return base_config()  # the base config is the paper's protocol
