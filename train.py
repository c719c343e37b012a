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
    experiment.train_all(config.load_config(args.config, overrides), args.workdir)
    print(f"trained; checkpoints and metrics.jsonl under {args.workdir}")

  return cli.run(go)


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
