"""VQ-VAE purification of adversarial images (Kim, Hyun & Hong 2022): No-Split, k×k-Split and pipelines.

  vqvae, quantizer   the Table 1 VQ-VAE with a padded EMA codebook (size as data)
  purifiers          R_N, T_k(R_S) and their compositions
  kinds              the `vqvae` section: VQ-VAE kinds (tiles, training mode) and sizes
  experiment         `Experiment.from_config`, training runs, `evaluate`
  grid               attack × training × purifier × codebook size × ε as one compiled computation
  results            `GridResult`, the typed result with named axes (grid.json + grid.npz)
  report             Tables 2/3 and Figs. 3/4 of the paper, rendered from a `GridResult`
  config             the config schema (`base_config`)
"""
