"""Rerun the quick configs and compare their results with the numbers the docs quote.

  python scripts/check_quoted_numbers.py                        # every quick config (about 35 min on a 2-core CPU)
  python scripts/check_quoted_numbers.py --only restore,purify  # some of them
  python scripts/check_quoted_numbers.py --compare-only         # the results already in the workdirs

Each quick config runs as `evaluate.py --grid` into runs/quoted/<name> (training what is missing; a finished
workdir is only evaluated again). Then every quote below is read from its file and compared, at the precision
the file prints it, with the same number of the fresh results; the purification demo's whole printed grid is
compared with the block README.md shows. One line per quote (ok, DIFFERS, or NOT FOUND in the file); exit
status 1 if any quote differs or is not found. Run it before changing a quoted number, and after a change
that may move one.
"""

import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUMBER = re.compile(r"-?\d+\.\d+")
CONFIGS = {"purify": "configs/purify/quick.py", "detect": "configs/detect/quick.py",
           "restore": "configs/restore/quick.py"}
RESULTS = {"purify": "grid.json", "detect": "detection.json", "restore": "restoration.json"}


@dataclasses.dataclass(frozen=True)
class Quote:
  """The `index`-th decimal number after `anchor` (after `section`, when given) in `file` quotes the results'
  value at `path` (keys), printed with `fmt`."""
  file: str
  section: str
  anchor: str
  index: int
  path: tuple
  fmt: str = "{:.3f}"


def _row(file, section, anchor, paths, fmts):
  return [Quote(file, section, anchor, i, p, f) for i, (p, f) in enumerate(zip(paths, fmts)) if p is not None]


def restore_quotes() -> list[Quote]:
  sec, out = "## 6. Restoration of mosaicked images", []
  f2, f3 = "{:.2f}", "{:.3f}"
  out += _row("RESULTS.md", sec, "| — | mosaic |", [("psnr", "cbam", "mosaic", "box"), ("psnr", "cbam", "mosaic", "image"),
              ("ssim", "cbam", "mosaic", "box"), ("ssim", "cbam", "mosaic", "image"), ("accuracy", "mosaic")],
              [f2, f2, f3, f3, f3])
  labels = {"cbam": "| `cbam` (the document: CBAM, λ = 1) | restored |", "nocbam": "| `nocbam` | restored |",
            "cbam_l1only": "| `cbam_l1only` | restored |",
            "cbam_lambda100": "| `cbam_lambda100` (pix2pix's λ) | restored |"}
  for v, anchor in labels.items():
    out += _row("RESULTS.md", sec, anchor, [("psnr", v, "restored", "box"), ("psnr", v, "restored", "image"),
                ("ssim", v, "restored", "box"), ("ssim", v, "restored", "image"), ("gradcam_concentration", v),
                ("accuracy", "restored", v)], [f2, f2, f3, f3, f3, f3])
  out.append(Quote("RESULTS.md", sec, "Clean accuracy of the classifier", 0, ("accuracy", "clean")))
  out.append(Quote("configs/restore/quick.py", "", "Over the box, PSNR", 0, ("psnr", "cbam", "mosaic", "box"), f2))
  out.append(Quote("configs/restore/quick.py", "", "Over the box, PSNR", 1, ("ssim", "cbam", "mosaic", "box")))
  out.append(Quote("configs/restore/quick.py", "", "mosaic; ", 0, ("psnr", "cbam", "restored", "box"), f2))
  out.append(Quote("configs/restore/quick.py", "", "mosaic; ", 1, ("ssim", "cbam", "restored", "box")))
  out.append(Quote("configs/restore/quick.py", "", "Classifier accuracy", 0, ("accuracy", "clean")))
  out.append(Quote("configs/restore/quick.py", "", "Classifier accuracy", 1, ("accuracy", "mosaic")))
  return out


def detect_quotes() -> list[Quote]:
  sec, out = "## 4. Fake-image detection", []
  variants = ("none", "p0.1", "p0.5", "adversarial")
  for source in ("alae_samples", "alae_reconstructions", "dcgan_samples", "vqvae_no_split", "vqvae_split",
                 "fgsm_eps0.1", "pgd_eps0.1"):
    out += _row("RESULTS.md", sec, f"| {source} |",
                [("ap", v, source) for v in variants] + [("fake_accuracy", v, source) for v in variants]
                + [("fid", source)], ["{:.3f}"] * 8 + ["{:.1f}"])
  for v in variants:
    out += [Quote("RESULTS.md", sec + "|Robustness", f"| {v} |", i, p) for i, p in
            enumerate([("ap_blur", v, "1"), ("ap_blur", v, "2"), ("ap_jpeg", v, "75"), ("ap_jpeg", v, "50")])]
  return out


def _value(results: dict, path: tuple):
  for key in path:
    results = results[key]
  return results


def _find(text: str, q: Quote) -> str | None:
  start = 0
  for part in filter(None, q.section.split("|")):
    at = text.find(part, start)
    if at < 0:
      return None
    start = at + len(part)
  at = text.find(q.anchor, start)
  if at < 0:
    return None
  numbers = NUMBER.findall(text[at + len(q.anchor):].split("\n", 1)[0] if q.anchor.startswith("|") else
                           text[at + len(q.anchor):at + len(q.anchor) + 400])
  return numbers[q.index] if q.index < len(numbers) else None


def compare(quotes: list[Quote], results: dict) -> int:
  bad = 0
  texts: dict[str, str] = {}
  for q in quotes:
    text = texts.setdefault(q.file, open(os.path.join(ROOT, q.file)).read())
    quoted, fresh = _find(text, q), q.fmt.format(_value(results, q.path))
    status = "ok" if quoted == fresh else ("NOT FOUND" if quoted is None else "DIFFERS")
    bad += status != "ok"
    print(f"{status:9s} {q.file}: {q.anchor.strip('| ')[:40]!r} #{q.index} {'.'.join(q.path)}: "
          f"quoted {quoted}, run {fresh}")
  return bad


def compare_demo(workdir: str) -> int:
  """The purification demo's printed grid, line by line, against README.md's block."""
  sys.path.insert(0, ROOT)
  from vqdefense_jax.purify import report
  from vqdefense_jax.purify.results import GridResult
  printed = report.format_grid(GridResult.load(workdir)).splitlines()
  readme = open(os.path.join(ROOT, "README.md")).read().splitlines()
  missing = [line for line in printed if line.strip() and line not in readme]
  for line in missing:
    print(f"DIFFERS   README.md: the demo prints {line!r}, which README.md does not show")
  print(f"{'ok' if not missing else 'DIFFERS':9s} README.md: the demo grid ({len(printed)} lines)")
  return len(missing)


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--only", default=",".join(CONFIGS), help="systems to check, comma-separated")
  parser.add_argument("--compare-only", action="store_true", help="do not run: compare the workdirs' results")
  parser.add_argument("--runs", default=os.path.join(ROOT, "runs", "quoted"), help="where the workdirs go")
  args = parser.parse_args(argv)
  bad = 0
  for name in args.only.split(","):
    if name not in CONFIGS:
      parser.error(f"--only takes {', '.join(CONFIGS)}, not {name!r}")
    workdir = os.path.join(args.runs, name)
    if not args.compare_only:
      cmd = [sys.executable, os.path.join(ROOT, "evaluate.py"), "--grid", "--config",
             os.path.join(ROOT, CONFIGS[name]), "--workdir", workdir]
      print("$", " ".join(cmd), flush=True)
      if subprocess.run(cmd, cwd=ROOT).returncode:
        print(f"{name}: the run failed")
        return 1
    path = os.path.join(workdir, RESULTS[name])
    if not os.path.exists(path):
      print(f"NOT FOUND {path}: run without --compare-only")
      bad += 1
      continue
    if name == "purify":
      bad += compare_demo(workdir)
    else:
      with open(path) as f:
        bad += compare({"detect": detect_quotes, "restore": restore_quotes}[name](), json.load(f))
  print(f"{bad} quote(s) differ or were not found" if bad else "every quote agrees with its run")
  return 1 if bad else 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
