"""Report primitives every system renders with: tables (CSV + Markdown), curve panels, heatmaps, image grids.

Each writer takes the path (or a `target(name) -> path` function) it writes to; what goes in the tables
and figures is the caller's. Figures use matplotlib's Agg backend (no display needed).
"""

import csv
import textwrap
import zlib
from typing import Callable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import patches  # noqa: E402

from vqdefense_jax.core.defence import GATED_PREFIX  # noqa: E402

Target = Callable[[str], str]  # output name -> path to write it to

# One colour per series across every figure of the three systems, so a reader follows a series from one figure to
# the next by its colour. Keys: a purifier's name (the purification curves; 'none' is the undefended classifier),
# 'detector:<variant>' (detection), 'restorer:<variant>' and 'restorer:mosaic' (restoration). A gated purifier
# ('detect_<p>') takes p's colour: its figures tell the two apart by line style and marker (purify/report.py).
COLOURS = {
    "none": "black", "no_split": "tab:blue", "split": "tab:orange", "vae_to_split": "tab:green",
    "split_to_vae": "tab:red", "restorer": "tab:purple",
    "detector:none": "tab:gray", "detector:p0.1": "tab:cyan", "detector:p0.5": "tab:olive",
    "detector:adversarial": "tab:brown",
    "restorer:mosaic": "darkgrey", "restorer:cbam": "tab:purple", "restorer:nocbam": "tab:pink",
    "restorer:cbam_l1only": "teal", "restorer:cbam_lambda100": "navy",
}
# Names not in COLOURS (a new variant, a Split tile count) get one of these by a hash of the name: the same name
# the same colour in every figure and every run (Python's hash() is salted per process; crc32 is not).
SPARE_COLOURS = ("#8c564b", "#e377c2", "#17becf", "#bcbd22", "#393b79", "#637939", "#8c6d31", "#843c39",
                 "#7b4173", "#3182bd", "#e6550d", "#31a354")


def colour(name: str, kind: str = "") -> str:
  """The colour of series `name` ('' kind: a purifier; 'detector', 'restorer': a variant of that system)."""
  if not kind and name.startswith(GATED_PREFIX):
    name = name[len(GATED_PREFIX):]
  key = f"{kind}:{name}" if kind else name
  return COLOURS.get(key) or SPARE_COLOURS[zlib.crc32(key.encode()) % len(SPARE_COLOURS)]


def table(target: Target, stem: str, title: str, info: str, label_cols: list[str], labels: list[list],
          values_RxC, columns: Sequence[str]) -> None:
  """`<stem>.csv` (4 decimals) and `<stem>.md` (3 decimals): one row per label, one column per value."""
  header = list(columns)
  with open(target(stem + ".csv"), "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(label_cols + header)
    for lab, row in zip(labels, values_RxC):
      w.writerow(list(lab) + [f"{v:.4f}" for v in row])
  lines = [f"# {title}", "", info, "", "| " + " | ".join(c.replace("_", " ") for c in label_cols + header) + " |",
           "|" + "---|" * len(label_cols) + "---:|" * len(header)]
  lines += ["| " + " | ".join([str(x) for x in lab] + [f"{v:.3f}" for v in row]) + " |"
            for lab, row in zip(labels, values_RxC)]
  with open(target(stem + ".md"), "w") as f:
    f.write("\n".join(lines) + "\n")


def curve(ax, x, y, label: str, keep=slice(None), err=None, **style) -> None:
  """A curve with markers; `err` (same shape as y): a ±err band in the curve's colour (its spread)."""
  style = dict(dict(marker="o", ms=3), **style)
  x, y = np.asarray(x)[keep], np.asarray(y)[keep]
  (line,) = ax.plot(x, y, label=label, **style)
  if err is not None:
    err = np.asarray(err)[keep]
    ax.fill_between(x, y - err, y + err, color=line.get_color(), alpha=0.15, lw=0)


def bars(ax, x, heights, width: float, label: str, color: str, err=None, fmt: str = "{:.2f}",
         values: bool = True) -> None:
  """Bars with, when `err` is given (the result holds a spread), ±err error bars; with `values`, each bar's
  value written on it, so differences too small to see in the bar heights can still be read."""
  heights = np.asarray(heights, float)
  drawn = ax.bar(x, heights, width, label=label, color=color, yerr=err, capsize=3 if err is not None else 0,
                 error_kw=dict(lw=0.8))
  if values:
    ax.bar_label(drawn, labels=["n/a" if not np.isfinite(h) else fmt.format(h) for h in heights], fontsize=6,
                 rotation=90 if width < 0.3 else 0, padding=2)


def chance(ax, level: float, label: str) -> None:
  """A horizontal line at what guessing scores (a detector's AP of 0.5, a classifier's 0.1)."""
  ax.axhline(level, color="black", ls=":", lw=1, label=label, zorder=0.5)


def panel_title(name: str, kind: str) -> str:
  """'<name> (<kind>)', or `kind` alone when it only repeats the name ('worst_case (worst case)')."""
  return kind if name.replace("_", " ").lower() == kind.lower() else f"{name} ({kind})"


def panels(n: int, cols_max: int = 3) -> tuple:
  """A figure with n panels, at most `cols_max` a row; returns (figure, the n axes)."""
  cols = min(cols_max, n)
  rows = -(-n // cols)
  fig, grid = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.6 * rows + 0.8), squeeze=False)
  for ax in grid.flat[n:]:
    ax.set_visible(False)
  return fig, list(grid.flat[:n])


def finish(fig, axes, title: str, path: str, xlabel: str, ylabel: str | Sequence[str],
           legend: str | None = "inside") -> None:
  """Label, grid and legend the axes, add the wrapped title, save as PNG and close.

  `ylabel`: one for all axes or one per axis. `legend`: 'inside' the first axes (where it covers least), 'outside'
  (right of the last axes: it can cover no bar or curve), or None (the axes' tick labels already name every series).
  """
  ylabels = [ylabel] * len(axes) if isinstance(ylabel, str) else list(ylabel)
  for ax, yl in zip(axes, ylabels):
    ax.set_xlabel(xlabel)
    ax.set_ylabel(yl)
    ax.grid(alpha=0.3)
  if legend == "inside":
    axes[0].legend(fontsize=7)
  elif legend == "outside":
    axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
  width = int(11 * fig.get_figwidth())
  fig.suptitle("\n".join(textwrap.fill(t, width=width) for t in title.split("\n")), fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=120, format="png", bbox_inches="tight")
  plt.close(fig)


def heatmap(values_RxC: np.ndarray, rows: list[str], columns: list[str], title: str, path: str, xlabel: str,
            ylabel: str, colorbar: str) -> None:
  """Values in [0, 1] as colours, printed in the cells when the grid is small enough to read."""
  m, e = values_RxC.shape
  fig, ax = plt.subplots(figsize=(max(5, 0.6 * e + 2), max(3, 0.45 * m + 2)))
  im = ax.imshow(values_RxC, aspect="auto", cmap="viridis", vmin=0, vmax=1, origin="lower")
  ax.set_xticks(range(e), columns, rotation=90 if e > 12 else 0, fontsize=7)
  ax.set_yticks(range(m), rows, fontsize=7)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  if e <= 20 and m <= 12:
    for (i, j), v in np.ndenumerate(values_RxC):
      ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6, color="white" if v < 0.6 else "black")
  fig.colorbar(im, ax=ax, label=colorbar)
  ax.set_title("\n".join(textwrap.fill(t, width=70) for t in title.split("\n")), fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120, format="png")
  plt.close(fig)


def _outline(ax, mask_HxW: np.ndarray) -> None:
  """The bounding rectangle of a mask's nonzero pixels (the mosaic box), drawn on the image."""
  rows, cols = np.nonzero(mask_HxW)
  if len(rows):
    ax.add_patch(patches.Rectangle((cols.min() - 0.5, rows.min() - 0.5), cols.max() - cols.min() + 1,
                                   rows.max() - rows.min() + 1, fill=False, ec="white", lw=1.0, ls="--"))


def image_grid(images_FxRxNxHxWxC: np.ndarray, row_names: list[str], block_names: list[str], title: str,
               path: str, boxes_NxHxW: np.ndarray | None = None, colorbar: tuple[str, str] | None = None) -> None:
  """Blocks F of rows R of N images each, grey (C = 1) or RGB (C = 3), display clipped to [0, 1]; rows labelled
  name + block.

  `boxes_NxHxW`: a mask per column (the same images in every row), whose box is outlined on every image.
  `colorbar`: (colormap, label) of a colour bar over [0, 1] beside the grid, for images that are coloured maps.
  """
  f, r, n = images_FxRxNxHxWxC.shape[:3]
  rgb = images_FxRxNxHxWxC.shape[-1] == 3
  # Constrained layout keeps the (wrapped) title, the row labels and the colour bar clear of the images;
  # tight_layout let a multi-line title overlap the first row.
  height = 1.1 * f * r + 0.5
  if colorbar:  # a colour bar beside a single row needs the height to hold its label
    height = max(height, 2.8)
  fig, axes = plt.subplots(f * r, n, figsize=(1.1 * n + 1.2 + (0.8 if colorbar else 0), height), squeeze=False,
                           layout="constrained")
  for i in range(f):
    for j in range(r):
      for k in range(n):
        ax = axes[i * r + j, k]
        image = np.clip(images_FxRxNxHxWxC[i, j, k], 0, 1)
        ax.imshow(image if rgb else image[..., 0], cmap=None if rgb else "gray", vmin=0, vmax=1)
        if boxes_NxHxW is not None:
          _outline(ax, boxes_NxHxW[k])
        ax.set_xticks([])
        ax.set_yticks([])
      axes[i * r + j, 0].set_ylabel(f"{row_names[j]}\n{block_names[i]}", fontsize=7, rotation=0, ha="right",
                                    va="center")
  if colorbar is not None:
    cmap, label = colorbar
    bar = fig.colorbar(matplotlib.cm.ScalarMappable(matplotlib.colors.Normalize(0, 1), cmap), ax=axes,
                       shrink=3.0 / (f * r) if f * r > 3 else 1.0, aspect=20)
    bar.set_label(label, fontsize=7)
    bar.ax.tick_params(labelsize=6)
  fig.suptitle(textwrap.fill(title, width=int(14 * n + (8 if colorbar else 0))), fontsize=8)
  fig.savefig(path, dpi=100)
  plt.close(fig)
