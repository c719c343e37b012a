"""Attack with grey-box FGSM over the ε grid, purify, classify; write results and figures.

  python evaluate.py --grid                      # quick config, runs/quick: ε × size × purifier in one computation
  python evaluate.py --grid --config configs/paper.py
  python evaluate.py --plot-only --workdir DIR   # tables and figures again, from DIR/grid.json + grid.npz
  python evaluate.py --config configs/quick.py   # per codebook size, one jitted call per test batch

--grid trains any missing checkpoint first; without it, evaluation needs
finished checkpoints (run train.py).
"""

import os
import sys

from vqdefense_jax import cli

FLAGS = {"grid": "the whole grid as one compiled computation (trains missing checkpoints first)",
         "plot-only": "only regenerate tables and figures from WORKDIR/grid.json and grid.npz"}


def main(argv: list[str]) -> int:
  args, overrides = cli.parse(argv, __doc__, FLAGS)
  cli.setup_logging()

  def go():
    from vqdefense_jax import config, evaluation, parallel, report
    workdir = os.path.abspath(args.workdir)
    if args.plot_only:
      written = report.render(workdir)
      print(f"wrote {len(written)} files to {workdir}")
      return
    c = config.load_config(args.config, overrides)
    parallel.initialize(c.parallel.distributed)
    if args.grid:
      results = evaluation.evaluate_grid(c, workdir)
      print(report.format_grid(results))
      print(f"\nwrote grid.json, grid.npz, tables (csv, md) and figures (png) to {workdir}")
      return
    results = evaluation.evaluate(c, workdir)
    print(evaluation.format_table(results))
    print(f"\nwrote results.json, results.csv, accuracy_vs_eps.png, reconstructions.png to {workdir}")

  return cli.run(go)


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
