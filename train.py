"""Train the classifier and every VQ-VAE a config names (resumes from checkpoints).

  python train.py --config configs/quick.py --workdir runs/quick
"""

import sys

from vqdefense_jax import cli


def main(argv: list[str]) -> int:
  args, overrides = cli.parse(argv, __doc__)
  cli.setup_logging()

  def go():
    from vqdefense_jax import config, experiment
    from vqdefense_jax import parallel
    c = config.load_config(args.config, overrides)
    parallel.initialize(c.parallel.distributed)
    experiment.train_all(c, args.workdir)
    print(f"trained; checkpoints and metrics.jsonl under {args.workdir}")

  return cli.run(go)


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
