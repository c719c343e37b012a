"""Attack with grey-box FGSM over the ε grid, purify, classify; write results and figures.

  python evaluate.py --config configs/quick.py --workdir runs/quick
"""

import os
import sys

from vqdefense_jax import cli


def main(argv: list[str]) -> int:
  args, overrides = cli.parse(argv, __doc__)
  cli.setup_logging()

  def go():
    from vqdefense_jax import config, evaluation
    results = evaluation.evaluate(config.load_config(args.config, overrides), args.workdir)
    print(evaluation.format_table(results))
    print(f"\nwrote results.json, results.csv, accuracy_vs_eps.png, reconstructions.png to "
          f"{os.path.abspath(args.workdir)}")

  return cli.run(go)


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
