"""A detection result's tables, figures and printed summary (detect/results.py holds the numbers)."""

import numpy as np

from vqdefense_jax.core import report as draw
from vqdefense_jax.core import results as saved
from vqdefense_jax.core.defence import GATED_PREFIX
from vqdefense_jax.detect.results import DetectionResult

FIGURE_EXAMPLES = 8  # real and fake images per source in fakes.png (and in detection.npz)


def write(result: DetectionResult, workdir: str) -> list[str]:
  """The result's json and npz, its tables and figures, all at once."""
  return saved.write(result, workdir, render)


def replot(workdir: str) -> list[str]:
  """The tables and figures again from the result's json and npz (evaluate.py --plot-only)."""
  return saved.write(DetectionResult.load(workdir), workdir, render, save=False)


def render(result: DetectionResult, target) -> None:
  """The tables and figures of a result (`target(name)`: where file `name` goes)."""
  figures = result.figures
  result = result.to_json()
  variants, sources = result["variants"], result["sources"]
  fid_of = result.get("fid", {})
  info = (f"{result['num_real']} real test images against {result['num_fakes']} fakes per source; accuracy at "
          f"threshold {result['threshold']}")
  if fid_of:
    info += (f"; FID on the classifier's penultimate features (MNIST-specific, not Inception; real training "
             f"images: {fid_of['real_train']:.2f})")
  columns = ["ap", "accuracy", "real_accuracy", "fake_accuracy"] + (["fid"] if fid_of else [])
  labels = [[v, s] for v in variants for s in sources]
  rows = [[result["ap"][v][s], result["accuracy"][v][s], result["real_accuracy"][v], result["fake_accuracy"][v][s]]
          + ([fid_of[s]] if fid_of else []) for v, s in labels]
  draw.table(target, "table_detection", "Detection: average precision and accuracy per source (Wang et al. "
             "2020, Table 2)", info, ["variant", "source"], labels, rows, columns)
  rob_cols = [f"blur_{k}" for k in result["ap_blur"][variants[0]]] + [f"jpeg_{k}" for k in
                                                                     result["ap_jpeg"][variants[0]]]
  rob = [list(result["ap_blur"][v].values()) + list(result["ap_jpeg"][v].values()) for v in variants]
  draw.table(target, "table_robustness", f"AP on {result['robustness_source']} when every test image is blurred "
             "or JPEG-compressed", info, ["variant"], [[v] for v in variants], rob, rob_cols)
  fig, (ax,) = draw.panels(1)
  fig.set_size_inches(max(4.5, 0.6 * len(sources)) + 1.5, 4.8)  # + the legend beside the axes
  width = 0.8 / len(variants)
  # Hook for spread: a result holding AP spread over seeds or bootstrap resamples (`ap_spread`, nested as `ap`)
  # gets error bars; detection.json holds one detector per variant today, so there is none to draw.
  spread = result.get("ap_spread")
  for i, v in enumerate(variants):
    draw.bars(ax, np.arange(len(sources)) + i * width, [result["ap"][v][s] for s in sources], width,
              f"detector {v}", draw.colour(v, "detector"),
              err=None if spread is None else [spread[v][s] for s in sources], values=False)
  # A detector that guesses scores an AP of the fakes' share of the test set (0.5 when balanced, as in Wang et al.).
  level = result["num_fakes"] / (result["num_fakes"] + result["num_real"])
  draw.chance(ax, level, f"chance (AP {level:.2g})")
  ax.set_xticks(np.arange(len(sources)) + 0.4 - width / 2, sources, rotation=45, ha="right")
  ax.set_ylim(0, 1.05)
  ax.set_yticks(np.linspace(0, 1, 6))
  draw.finish(fig, [ax], f"detector AP per source of fakes ({result['num_real']} real test images against "
              f"{result['num_fakes']} fakes per source)", target("fig_detection_ap.png"), "source",
              "average precision", legend="outside")
  k = min(len(figures["reals"]), *(len(figures[f"fakes/{s}"]) for s in sources))
  grid = np.stack([figures["reals"][:k]] + [figures[f"fakes/{s}"][:k] for s in sources])[None]
  draw.image_grid(grid, ["real"] + list(sources), [""], "real test images and the fakes of every source",
                  target("fakes.png"))
  if "interpolations" in figures:
    inter = figures["interpolations"]
    draw.image_grid(inter[None], [f"pair {i + 1}" for i in range(len(inter))], [""], "ALAE latent "
                    "interpolations: G of points from E(x_a) to E(x_b) in w", target("interpolations.png"))
    g = figures["alae_grid"]
    draw.image_grid(g.reshape((1, 8, 8) + g.shape[1:]), [""] * 8, [""], "ALAE samples G(F(z))",
                    target("alae_samples.png"))


def format_result(result: DetectionResult) -> str:
  r = result.to_json()
  fid_of = r.get("fid", {})
  lines = [f"{r['num_real']} real test images, {r['num_fakes']} fakes per source; detector: {r['detector_params']} "
           "parameters" + (f"; FID of real training images: {fid_of['real_train']:.2f}" if fid_of else ""), "",
           f"{'variant':<12}{'source':<24}{'AP':>8}{'acc':>8}{'real acc':>10}{'fake acc':>10}"
           + (f"{'FID':>10}" if fid_of else "")]
  for v in r["variants"]:
    for s in r["sources"]:
      lines.append(f"{v:<12}{s:<24}{r['ap'][v][s]:>8.4f}{r['accuracy'][v][s]:>8.4f}{r['real_accuracy'][v]:>10.4f}"
                   f"{r['fake_accuracy'][v][s]:>10.4f}" + (f"{fid_of[s]:>10.2f}" if fid_of else ""))
  if "gate" in r:
    g = r["gate"]
    lines += ["", f"detect, then purify (detector {g['detector']}, threshold {g['threshold']}): the purification grid "
              f"with rows {', '.join(p for p in g['purifiers'] if p.startswith(GATED_PREFIX))} in "
              f"{g['grid']} and its tables"]
  return "\n".join(lines)
