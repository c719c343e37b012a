"""Attack, purify, classify over the whole grid (ε × codebook size × purifier × attack) as one computation.

  python evaluate.py --grid                      # quick config, runs/quick: trains what is missing first
  python evaluate.py --grid --config configs/purify/paper.py
  python evaluate.py --config configs/purify/quick.py   # the same grid on finished checkpoints only
  python evaluate.py --plot-only --workdir DIR   # tables and figures again, from DIR's results (grid.json + grid.npz,
                                                 # restoration.json + restoration.npz)
  python evaluate.py --grid --retrain ...       # replace checkpoints in the workdir that another config made
  python evaluate.py --config configs/detect/quick.py --workdir W   # detection: AP and accuracy per source
  python evaluate.py --config configs/restore/quick.py --workdir W  # restoration: PSNR, SSIM, Grad-CAM

Writes grid.json, grid.npz, the tables (csv, md) and the figures (png) to the workdir.
"""

import os
import sys

from vqdefense_jax.core import cli

SWITCHES = {"grid": "train any missing or unfinished checkpoint first, then evaluate",
            "plot-only": "only regenerate tables and figures from the results in WORKDIR (purification, restoration)", **cli.RETRAIN}


def main(argv: list[str]) -> int:
  cli.setup_logging()

  def go():
    args = cli.parse(argv, __doc__, SWITCHES, config_optional="--plot-only" in argv)
    from vqdefense_jax.core import files
    from vqdefense_jax.core import systems
    from vqdefense_jax.core import workdir as workdir_lib
    from vqdefense_jax.core.errors import VQDefenseError
    if args.switches["retrain"] and not args.switches["grid"]:
      raise VQDefenseError("--retrain trains: use it with --grid (or with train.py)")
    if args.switches["plot-only"]:
      workdir = os.path.abspath(args.workdir)
      if not os.path.isdir(workdir):
        raise VQDefenseError(f"workdir {workdir} does not exist: --plot-only redraws the results evaluate.py wrote there")
      system = systems.SYSTEMS[workdir_lib.owner(workdir) or "purify"]
      with files.locked(workdir):
        written = system.experiment.replot(workdir)
      print(f"wrote {len(written)} files to {workdir}")
      return
    system, exp, lead = systems.start(args.config)
    train_missing = args.switches["grid"]
    with files.locked(workdir_lib.claim(args.workdir, system.name, create=train_missing), lead) as workdir:
      result = system.experiment.evaluate(exp, workdir, train_missing=train_missing,
                                          retrain=args.switches["retrain"])
    if lead:  # on several processes, process 0 writes and reports
      print(system.experiment.format_result(result))
      print(f"\nwrote {system.results}, tables (csv, md) and figures (png) to {workdir}")

  return cli.run(go)


if __name__ == "__main__":
  cli.exit_on_interrupt()
  sys.exit(main(sys.argv[1:]))
