"""Train every model a config names (resumes from checkpoints): purification, detection or restoration
(`system`).

  python train.py --config configs/purify/quick.py --workdir runs/quick
  python train.py --config configs/detect/quick.py --workdir runs/detect_quick
  python train.py --config configs/restore/quick.py --workdir runs/restore_quick
  python train.py ... --retrain     # replace checkpoints in the workdir that another config made
"""

import sys

from vqdefense_jax.core import cli


def main(argv: list[str]) -> int:
  cli.setup_logging()

  def go():
    args = cli.parse(argv, __doc__, cli.RETRAIN)
    from vqdefense_jax.core import files
    from vqdefense_jax.core import systems
    from vqdefense_jax.core import workdir as workdir_lib
    system, exp, lead = systems.start(args.config)
    with files.locked(workdir_lib.claim(args.workdir, system.name), lead) as workdir:
      system.experiment.train_all(exp, workdir, retrain=args.switches["retrain"])
    if lead:  # on several processes, process 0 writes and reports
      print(f"trained; checkpoints and metrics.jsonl under {workdir}")

  return cli.run(go)


if __name__ == "__main__":
  cli.exit_on_interrupt()
  sys.exit(main(sys.argv[1:]))
