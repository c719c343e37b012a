"""Report primitives every system renders with: tables (CSV + Markdown), curve panels, heatmaps, image grids.

Each writer takes the path (or a `target(name) -> path` function) it writes to; what goes in the tables
and figures is the caller's. Figures use matplotlib's Agg backend (no display needed).
"""

import csv
import textwrap
from typing import Callable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

Target = Callable[[str], str]  # output name -> path to write it to


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


def curve(ax, x, y, label: str, keep=slice(None), **style) -> None:
  ax.plot(np.asarray(x)[keep], np.asarray(y)[keep], marker="o", ms=3, label=label, **style)


def panels(n: int, cols_max: int = 3) -> tuple:
  """A figure with n panels, at most `cols_max` a row; returns (figure, the n axes)."""
  cols = min(cols_max, n)
  rows = -(-n // cols)
  fig, grid = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.6 * rows + 0.8), squeeze=False)
  for ax in grid.flat[n:]:
    ax.set_visible(False)
  return fig, list(grid.flat[:n])


def finish(fig, axes, title: str, path: str, xlabel: str, ylabel: str) -> None:
  """Label, grid and legend the axes, add the wrapped title, save as PNG and close."""
  for ax in axes:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=7)
  width = int(11 * fig.get_figwidth())
  fig.suptitle("\n".join(textwrap.fill(t, width=width) for t in title.split("\n")), fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=120, format="png")
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


def image_grid(images_FxRxNxHxWxC: np.ndarray, row_names: list[str], block_names: list[str], title: str,
               path: str) -> None:
  """Blocks F of rows R of N images each, grey (C = 1) or RGB (C = 3), display clipped to [0, 1]; rows labelled
  name + block."""
  f, r, n = images_FxRxNxHxWxC.shape[:3]
  rgb = images_FxRxNxHxWxC.shape[-1] == 3
  fig, axes = plt.subplots(f * r, n, figsize=(1.1 * n + 1.2, 1.1 * f * r), squeeze=False)
  for i in range(f):
    for j in range(r):
      for k in range(n):
        ax = axes[i * r + j, k]
        image = np.clip(images_FxRxNxHxWxC[i, j, k], 0, 1)
        ax.imshow(image if rgb else image[..., 0], cmap=None if rgb else "gray", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
      axes[i * r + j, 0].set_ylabel(f"{row_names[j]}\n{block_names[i]}", fontsize=7, rotation=0, ha="right",
                                    va="center")
  fig.suptitle(textwrap.fill(title, width=int(14 * n)), fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
