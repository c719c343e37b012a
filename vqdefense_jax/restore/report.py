"""A restoration result's tables, figures and printed summary (restore/results.py holds the numbers)."""

import numpy as np
from matplotlib import colormaps

from vqdefense_jax.core import report as draw
from vqdefense_jax.core import results as saved
from vqdefense_jax.restore.results import RestorationResult


CAM_BAR = ("jet", "Grad-CAM (each map / its maximum)")  # the colour bar of every figure with Grad-CAM maps
UNITS = {"psnr": "PSNR (dB)", "ssim": "SSIM"}


def _jet(map_NxHxW: np.ndarray) -> np.ndarray:
  """Each map scaled by its own maximum and coloured (jet, as Grad-CAM figures are): (N, H, W, 3)."""
  peak = map_NxHxW.max(axis=(1, 2), keepdims=True)
  return colormaps["jet"](np.where(peak > 0, map_NxHxW / np.where(peak > 0, peak, 1), 0))[..., :3]


def _rgb(x_NxHxWxC: np.ndarray) -> np.ndarray:
  return np.repeat(x_NxHxWxC, 3, axis=-1) if x_NxHxWxC.shape[-1] == 1 else x_NxHxWxC


def overlay(x_NxHxWxC: np.ndarray, map_NxHxW: np.ndarray) -> np.ndarray:
  """Half the image, half its coloured map (Grad-CAM's overlays)."""
  return 0.5 * _rgb(np.clip(x_NxHxWxC, 0, 1)) + 0.5 * _jet(map_NxHxW)


def write(result: RestorationResult, workdir: str) -> list[str]:
  """The result's json and npz, its tables and figures, all at once."""
  return saved.write(result, workdir, render)


def replot(workdir: str) -> list[str]:
  """The tables and figures again from the result's json and npz (evaluate.py --plot-only)."""
  return saved.write(RestorationResult.load(workdir), workdir, render, save=False)


def render(result: RestorationResult, target) -> None:
  """The tables and figures of a result (`target(name)`: where file `name` goes)."""
  names, layers, figures = result.variants, result.layers, result.figures
  r = result.to_json()
  m = r["mosaic"]
  info = (f"{r['num_images']} test images {'×'.join(map(str, r['image_shape']))}; mosaic block "
          f"{m['block']} over {'a random box per image' if m['region'] == 'box' else 'the whole image'} "
          f"(mean box area {r['box_area']:.3f} of the image)")
  nan = float("nan")
  val = lambda x: nan if x is None else x
  cols = ["psnr_box", "psnr_image", "ssim_box", "ssim_image"]
  row = lambda v, inp: [val(r[mt][v][inp][reg]) for mt in ("psnr", "ssim") for reg in ("box", "image")]
  draw.table(target, "table_quality", "Restoration quality against the clean image (PSNR in dB; SSIM)", info,
             ["variant", "input"], [["-", "mosaic"]] + [[v, "restored"] for v in names],
             [row(names[0], "mosaic")] + [row(v, "restored") for v in names], cols)
  draw.table(target, "table_gradcam", "Grad-CAM of the CBAM layers (score D(G(x))): mass share in the box / box "
             "area share (1: uniform, > 1: concentrated on the box)", info, ["variant"], [[v] for v in names],
             [[val(r["gradcam_concentration"][v])] + [val(x) for x in r["gradcam_concentration_layers"][v]]
              + [r["realness"][v]] for v in names], ["concentration"] + layers + ["mean_D_logit"])
  acc = r["accuracy"]
  if acc is not None:
    cg = r["classifier_gradcam"]
    labels = ([["clean"], ["mosaic"]] + [[f"restored ({v})"] for v in names]
              + [[f"FGSM eps={cg['epsilon']:g}"], [f"FGSM, then {cg['purified_by']}"]])
    values = ([[acc["clean"]], [acc["mosaic"]]] + [[acc["restored"][v]] for v in names]
              + [[cg["accuracy"]["adversarial"]], [cg["accuracy"]["purified"]]])
    draw.table(target, "table_accuracy", "MNIST classifier accuracy", info, ["images"], labels, values, ["accuracy"])

  rows = [figures["clean"], figures["mosaic"]] + [figures[f"restored/{v}"] for v in names]
  draw.image_grid(np.stack(rows)[None], ["clean", "mosaic"] + [f"restored\n{v}" for v in names], [""],
                  "clean test images, their mosaic, and every variant's restoration", target("fig_restorations.png"))
  blocks = []
  for v in names:
    mean_map = figures[f"maps/{v}"].mean(axis=1)
    blocks.append(np.stack([_rgb(figures["mosaic"]), _rgb(np.clip(figures[f"restored/{v}"], 0, 1)), _jet(mean_map),
                            overlay(figures["mosaic"], mean_map)]))
  # The box (restoration.npz from before it was saved has none: the figures then go without the outline).
  box = figures.get("box")
  box_note = "; dashed white: the mosaic box" if box is not None else ""
  draw.image_grid(np.stack(blocks), ["input", "G(x)", "Grad-CAM", "overlay"], names,
                  "Grad-CAM of the CBAM layers (mean of the layers' maps), scoring D(G(x)): where each restorer "
                  f"attends (the document's Fig. 2){box_note}", target("fig_gradcam.png"), boxes_NxHxW=box,
                  colorbar=CAM_BAR)
  first = figures[f"maps/{names[0]}"]
  draw.image_grid(np.stack([overlay(figures["mosaic"], first[:, j]) for j in range(first.shape[1])])[None],
                  layers, [names[0]], f"Grad-CAM of each CBAM layer of {names[0]} on the mosaicked input{box_note}",
                  target("fig_gradcam_layers.png"), boxes_NxHxW=box, colorbar=CAM_BAR)
  views = {k.split("/")[1]: (figures[k], figures[k[:-len("/x")] + "/cam"])
           for k in figures if k.startswith("classifier/") and k.endswith("/x")}
  if views:
    cg = r["classifier_gradcam"]
    shown = {"adversarial": f"FGSM ε={cg['epsilon']:g}", "purified": f"purified by\n{cg['purified_by']}"}
    rows = [img for x, cam in views.values() for img in (_rgb(np.clip(x, 0, 1)), overlay(x, cam))]
    row_names = [label for name in views for label in (shown.get(name, name), f"{shown.get(name, name)}\nGrad-CAM")]
    draw.image_grid(np.stack(rows)[None], row_names, [""], f"the classifier's Grad-CAM ({cg['layer']}, "
                    f"{cg['target']}) on clean, grey-box FGSM (ε = {cg['epsilon']:g}) and purified images (the "
                    f"attacked images restored by {cg['purified_by']}, a restorer trained on mosaic pairs)",
                    target("fig_gradcam_classifier.png"), colorbar=CAM_BAR)
  fig, axes = draw.panels(2)
  series = ["mosaic"] + names
  for ax, metric in zip(axes, ("psnr", "ssim")):
    heights = [val(r[metric][names[0]]["mosaic"]["box"])] + [val(r[metric][v]["restored"]["box"]) for v in names]
    # Hook for spread: a result holding per-image or per-seed spread (`<metric>_spread`, same nesting as the
    # metric) gets error bars; restoration.json holds none today (PSNR is pooled over the test images' pixels).
    spread = r.get(f"{metric}_spread")
    err = None if spread is None else [spread[names[0]]["mosaic"]["box"]] + [spread[v]["restored"]["box"]
                                                                             for v in names]
    for b, (name, h) in enumerate(zip(series, heights)):
      draw.bars(ax, [b], [h], 0.8, name, draw.colour(name, "restorer"), err=None if err is None else [err[b]],
                fmt="{:.2f}" if metric == "psnr" else "{:.3f}")
    ax.set_xticks(np.arange(len(series)), ["mosaicked input"] + [f"restored\n{v}" for v in names], rotation=45,
                  ha="right", fontsize=8)
    ax.set_ylim(0, np.nanmax(heights + [1e-9]) * 1.15)  # room for the value labels above the bars
    ax.set_title(f"{UNITS[metric].split(' ')[0]} over the box (higher: closer to the clean image)", fontsize=9)
  draw.finish(fig, axes, f"restoration quality over the mosaic box ({r['num_images']} test images, against the "
              "clean image)", target("fig_quality.png"), "", [UNITS["psnr"], UNITS["ssim"]], legend=None)


def format_result(result: RestorationResult) -> str:
  r = result.to_json()
  fmt = lambda x, spec: "n/a" if x is None else format(x, spec)
  lines = [f"{r['num_images']} test images; mosaic block {r['mosaic']['block']} over "
           f"{r['mosaic']['region']} (mean box area {r['box_area']:.3f})", "",
           f"{'variant':<20}{'input':<10}{'PSNR box':>10}{'PSNR img':>10}{'SSIM box':>10}{'SSIM img':>10}"
           f"{'CAM conc.':>11}" + (f"{'accuracy':>10}" if r["accuracy"] else "")]
  v0 = r["variants"][0]
  quality_row = lambda v, inp: "".join(f"{fmt(r[m][v][inp][reg], '.3f' if m == 'ssim' else '.2f'):>10}"
                                       for m in ("psnr", "ssim") for reg in ("box", "image"))
  lines.append(f"{'-':<20}{'mosaic':<10}{quality_row(v0, 'mosaic')}{'':>11}"
               + (f"{r['accuracy']['mosaic']:>10.4f}" if r["accuracy"] else ""))
  for v in r["variants"]:
    lines.append(f"{v:<20}{'restored':<10}{quality_row(v, 'restored')}{fmt(r['gradcam_concentration'][v], '.3f'):>11}"
                 + (f"{r['accuracy']['restored'][v]:>10.4f}" if r["accuracy"] else ""))
  if r["accuracy"]:
    cg = r["classifier_gradcam"]
    lines += ["", f"classifier: clean {r['accuracy']['clean']:.4f}, FGSM ε={cg['epsilon']:g} "
              f"{cg['accuracy']['adversarial']:.4f}, FGSM then {cg['purified_by']} {cg['accuracy']['purified']:.4f}"]
  return "\n".join(lines)
