"""Attack, purify, classify over the whole grid (ε × codebook size × purifier × attack) as one computation.

  python evaluate.py --grid                      # quick config, runs/quick: trains what is missing first
  python evaluate.py --grid --config configs/purify/paper.py
  python evaluate.py --config configs/purify/quick.py   # the same grid on finished checkpoints only
  python evaluate.py --plot-only --workdir DIR   # tables and figures again, from DIR/grid.json + grid.npz

Writes grid.json, grid.npz, the tables (csv, md) and the figures (png) to the workdir.
"""

import os
import sys

from vqdefense_jax.core import cli

SWITCHES = {"grid": "train any missing or unfinished checkpoint first, then evaluate",
            "plot-only": "only regenerate tables and figures from WORKDIR/grid.json and grid.npz"}


def main(argv: list[str]) -> int:
  cli.setup_logging()

  def go():
    args = cli.parse(argv, __doc__, SWITCHES, config_optional="--plot-only" in argv)
    from vqdefense_jax.purify import report
    from vqdefense_jax.purify.results import GridResult
    workdir = os.path.abspath(args.workdir)
    if args.switches["plot-only"]:
      written = report.render(GridResult.load(workdir), workdir)
      print(f"wrote {len(written)} files to {workdir}")
      return
    from vqdefense_jax.core import parallel
    from vqdefense_jax.purify import experiment
    exp = experiment.Experiment.from_config(args.config)
    parallel.initialize(exp.parallel.distributed)
    result = experiment.evaluate(exp, workdir, train_missing=args.switches["grid"])
    print(report.format_grid(result))
    print(f"\nwrote grid.json, grid.npz, tables (csv, md) and figures (png) to {workdir}")

  return cli.run(go)


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
