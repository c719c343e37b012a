"""Figures: accuracy vs ε (the paper's Fig. 3) and reconstructions (its Figs. 1–2)."""

import math
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def accuracy_vs_eps(results: dict, path: str) -> None:
  sizes = list(results["accuracy"])
  cols = min(len(sizes), 5)
  rows = math.ceil(len(sizes) / cols)
  fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False, sharey=True)
  for ax, size in zip(axes.flat, sizes):
    for p, accs in results["accuracy"][size].items():
      ax.plot(results["epsilons"], accs, marker="o", ms=3, label=p)
    ax.set_title(f"codebook size {size}")
    ax.set_xlabel("ε (pixel units)")
    ax.grid(alpha=0.3)
  for ax in axes.flat[len(sizes):]:
    ax.axis("off")
  axes[0, 0].set_ylabel("test accuracy")
  axes[0, 0].legend(fontsize=8)
  title = f"{results['threat_model']} ({results['num_test_images']} test images)"
  fig.suptitle(textwrap.fill(title, width=55 * cols), fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def reconstructions(images_FxRxNxHxWx1: np.ndarray, row_names: list[str], epsilons: list[float],
                    codebook_size: int, path: str) -> None:
  """One block per ε: rows clean / adversarial / each purifier, columns examples."""
  f, r, n = images_FxRxNxHxWx1.shape[:3]
  fig, axes = plt.subplots(f * r, n, figsize=(1.1 * n + 1.2, 1.1 * f * r), squeeze=False)
  for i in range(f):
    for j in range(r):
      for k in range(n):
        ax = axes[i * r + j, k]
        ax.imshow(np.clip(images_FxRxNxHxWx1[i, j, k, ..., 0], 0, 1), cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
      axes[i * r + j, 0].set_ylabel(f"{row_names[j]}\nε={epsilons[i]:g}", fontsize=7, rotation=0, ha="right",
                                    va="center")
  title = f"grey-box FGSM and purified reconstructions (codebook size {codebook_size}; display clipped to [0, 1])"
  fig.suptitle(textwrap.fill(title, width=int(14 * n)), fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
