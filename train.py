"""Train the classifier and every VQ-VAE a config names (resumes from checkpoints).

  python train.py --config configs/purify/quick.py --workdir runs/quick
"""

import sys

from vqdefense_jax.core import cli


def main(argv: list[str]) -> int:
  cli.setup_logging()

  def go():
    args = cli.parse(argv, __doc__)
    from vqdefense_jax.core import parallel
    from vqdefense_jax.purify import experiment
    exp = experiment.Experiment.from_config(args.config)
    parallel.initialize(exp.parallel.distributed)
    experiment.train_all(exp, args.workdir)
    print(f"trained; checkpoints and metrics.jsonl under {args.workdir}")

  return cli.run(go)


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
