"""Tables and figures of the grid evaluation, regenerable from `grid.json` and `grid.npz` alone."""

import csv
import json
import os
import textwrap

import numpy as np

from vqdefense_jax import experiment
from vqdefense_jax import plots
from vqdefense_jax.errors import VQDefenseError

plt = plots.plt  # plots has already selected the Agg backend

LABELS = {"none": "Original", "no_split": "No-Split-VAE", "split": "4-Split-VAE", "vae_to_split": "VAE to Split",
          "split_to_vae": "Split to VAE"}
SHORT = {"no_split": "N", "split": "S"}
# File stem and the paper's table or figure each table mirrors.
TABLES = {"no_split": ("table2_no_split", "the paper's Table 2"), "split": ("table3_split", "the paper's Table 3"),
          "vae_to_split": ("table_vae_to_split", "the pipeline curves of the paper's Fig. 4"),
          "split_to_vae": ("table_split_to_vae", "the pipeline curves of the paper's Fig. 4")}
FIG4_SMALL_EPS = 0.08  # the ε range of the paper's Fig. 4(a)


def save(results: dict, figure: np.ndarray | None, workdir: str) -> None:
  """Write `grid.json` and `grid.npz` into `workdir`, then every table and figure (`render`)."""
  os.makedirs(workdir, exist_ok=True)
  experiment.write_json_atomic(os.path.join(workdir, "grid.json"), results)
  eps = results["axes"]["epsilon"]
  arrays = dict(accuracy=np.asarray(results["accuracy"], np.float64),
                undefended=np.asarray(results["undefended"], np.float64),
                purifier=np.asarray(results["axes"]["purifier"], str),
                codebook_size=np.asarray(results["axes"]["codebook_size"], np.int64),
                epsilon=np.asarray(eps, np.float64))
  if "paired" in results:
    paired = results["paired"]["accuracy"]
    arrays["paired_purifier"] = np.asarray(list(paired), str)
    arrays["paired_accuracy"] = np.asarray(list(paired.values()), np.float64).reshape(len(paired), len(eps))
  if figure is not None:
    arrays["figure"] = np.asarray(figure, np.float32)
  tmp = os.path.join(workdir, ".partial-grid.npz")
  with open(tmp, "wb") as f:  # a file object, so numpy does not append another ".npz"
    np.savez(f, **arrays)
  os.replace(tmp, os.path.join(workdir, "grid.npz"))
  render(workdir)


def load(workdir: str) -> tuple[dict, dict[str, np.ndarray]]:
  """`grid.json` and the arrays of `grid.npz`; a `VQDefenseError` when either is missing."""
  paths = [os.path.join(workdir, n) for n in ("grid.json", "grid.npz")]
  for p in paths:
    if not os.path.exists(p):
      raise VQDefenseError(f"{p} not found: run `python evaluate.py --grid` first to create the grid results")
  with open(paths[0]) as f:
    results = json.load(f)
  with np.load(paths[1]) as z:
    arrays = {k: z[k] for k in z.files}
  return results, arrays


def render(workdir: str) -> list[str]:
  """Regenerate every table and figure from `grid.json` and `grid.npz`; returns the paths written.

  Each output goes to `.partial-<name>` first; only when all succeeded are they moved into place,
  so a failure leaves the previous set of outputs untouched.
  """
  results, a = load(workdir)
  tmp = {}
  target = lambda name: tmp.setdefault(name, os.path.join(workdir, ".partial-" + name))
  try:
    _render(results, a, target)
  except BaseException:
    for t in tmp.values():
      if os.path.exists(t):
        os.remove(t)
    raise
  written = []
  for name, t in tmp.items():
    os.replace(t, os.path.join(workdir, name))
    written.append(os.path.join(workdir, name))
  return written


def _render(results: dict, a: dict[str, np.ndarray], target) -> None:
  purifiers, sizes, eps = [str(p) for p in a["purifier"]], [int(s) for s in a["codebook_size"]], a["epsilon"]
  acc_PxMxE = a["accuracy"]
  info = (f"{results['threat_model']}; {results['num_test_images']} test images; "
          "ε in pixel units (the paper labels them ×10)")
  for i, p in enumerate(purifiers):
    stem, mirrors = TABLES[p]
    title = f"{LABELS[p]} ({p}) accuracy by codebook size and ε: analogue of {mirrors}"
    _table(target, stem, title, info, ["codebook_size"], [[s] for s in sizes], acc_PxMxE[i], eps)
  _table(target, "table_undefended", "Undefended classifier accuracy by ε: the 'Original' curve of the paper's "
         "Figs. 3 and 4", info, ["purifier"], [["none"]], a["undefended"][None], eps)
  if "paired_accuracy" in a:
    ns, s = results["paired"]["no_split_size"], results["paired"]["split_size"]
    _table(target, "table_best_pair", "Pipelines with the best No-Split and 4-Split codebook sizes: analogue of the "
           "pipeline curves of the paper's Fig. 4", info, ["pipeline", "no_split_size", "split_size"],
           [[str(p), ns, s] for p in a["paired_purifier"]], a["paired_accuracy"], eps)
  curves = _curves(results, purifiers, sizes, eps, acc_PxMxE, a)
  title = f"{results['threat_model']} ({results['num_test_images']} test images)"
  fig, ax = plt.subplots(figsize=(6, 4.2))
  for label, acc_E in [c for c in curves if c[0][0] in ("none", "no_split", "split")]:
    _plot(ax, eps, acc_E, _label(label, results), slice(None))
  _finish(fig, [ax], "accuracy vs ε (analogue of the paper's Fig. 3)\n" + title, target("fig3_accuracy_vs_eps.png"))
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
  small = eps <= FIG4_SMALL_EPS + 1e-9
  for ax, keep, name in ((axes[0], small, f"(a) ε ≤ {FIG4_SMALL_EPS:g}"), (axes[1], slice(None), "(b) all ε")):
    for label, acc_E in curves:
      _plot(ax, eps, acc_E, _label(label, results), keep)
    ax.set_title(name, fontsize=9)
  _finish(fig, axes, "purifiers and pipelines vs ε (analogue of the paper's Fig. 4)\n" + title,
          target("fig4_pipelines.png"))
  for i, p in enumerate(purifiers):
    _heatmap(acc_PxMxE[i], sizes, eps, f"{LABELS[p]} ({p}) accuracy\n{title}", target(f"heatmap_{p}.png"))
  if "figure" in a:
    meta = results["figure"]
    plots.reconstructions(a["figure"], meta["rows"], meta["epsilons"],
                          f"{meta['no_split_size']} (No-Split) and {meta['split_size']} (4-Split)",
                          target("reconstructions.png"))


def best_index(acc_MxE: np.ndarray, eps, eps_max: float) -> int:
  """Row with the highest mean accuracy over ε <= eps_max (ties: the first), the paper's Sec. 3.2 criterion.

  config.validate guarantees some ε <= grid.best_eps_max.
  """
  low = np.asarray(eps) <= eps_max + 1e-9
  return int(np.argmax(np.asarray(acc_MxE)[:, low].mean(axis=1))) if low.any() else 0


def _curves(results, purifiers, sizes, eps, acc_PxMxE, a) -> list[tuple[tuple, np.ndarray]]:
  """(label key, accuracy (E,)) per curve: undefended, singles at their best size, pipelines paired or best."""
  curves = [(("none",), a["undefended"])]
  paired = {str(p): acc for p, acc in zip(a.get("paired_purifier", []), a.get("paired_accuracy", []))}
  for i, p in enumerate(purifiers):
    if p in paired:
      continue
    size = results["best_size"].get(p) if p in SHORT else None
    m = sizes.index(size) if size in sizes else best_index(acc_PxMxE[i], eps, results["best_eps_max"])
    curves.append(((p, sizes[m]), acc_PxMxE[i, m]))
  curves += [((p, "paired"), acc) for p, acc in paired.items()]
  return curves


def _label(key: tuple, results: dict) -> str:
  if key[0] == "none":
    return "Original (undefended)"
  if key[1] == "paired":
    pair = results["paired"]
    return f"{LABELS[key[0]]}: N K={pair['no_split_size']} + S K={pair['split_size']}"
  return f"{LABELS[key[0]]} K={key[1]}"


def _plot(ax, eps, acc_E, label, keep) -> None:
  style = dict(color="black", ls="--") if label.startswith("Original") else {}
  ax.plot(eps[keep], np.asarray(acc_E)[keep], marker="o", ms=3, label=label, **style)


def _finish(fig, axes, title: str, path: str) -> None:
  for ax in axes:
    ax.set_xlabel("ε (pixel units)")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=7)
  fig.suptitle("\n".join(textwrap.fill(t, width=60 * len(axes)) for t in title.split("\n")), fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=120, format="png")
  plt.close(fig)


def _heatmap(acc_MxE: np.ndarray, sizes: list[int], eps: np.ndarray, title: str, path: str) -> None:
  m, e = acc_MxE.shape
  fig, ax = plt.subplots(figsize=(max(5, 0.6 * e + 2), max(3, 0.45 * m + 2)))
  im = ax.imshow(acc_MxE, aspect="auto", cmap="viridis", vmin=0, vmax=1, origin="lower")
  ax.set_xticks(range(e), [f"{x:.2f}" for x in eps], rotation=90 if e > 12 else 0, fontsize=7)
  ax.set_yticks(range(m), [str(s) for s in sizes], fontsize=7)
  ax.set_xlabel("ε (pixel units)")
  ax.set_ylabel("codebook size")
  if e <= 20 and m <= 12:
    for (i, j), v in np.ndenumerate(acc_MxE):
      ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6, color="white" if v < 0.6 else "black")
  fig.colorbar(im, ax=ax, label="test accuracy")
  ax.set_title("\n".join(textwrap.fill(t, width=70) for t in title.split("\n")), fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120, format="png")
  plt.close(fig)


def _table(target, stem: str, title: str, info: str, label_cols: list[str], labels: list[list], acc_RxE, eps) -> None:
  """`<stem>.csv` (4 decimals) and `<stem>.md` (3 decimals): one row per label, one column per ε."""
  header = [f"{e:.2f}" for e in eps]
  with open(target(stem + ".csv"), "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(label_cols + header)
    for lab, row in zip(labels, acc_RxE):
      w.writerow(list(lab) + [f"{v:.4f}" for v in row])
  lines = [f"# {title}", "", info, "", "| " + " | ".join(c.replace("_", " ") for c in label_cols + header) + " |",
           "|" + "---|" * len(label_cols) + "---:|" * len(header)]
  lines += ["| " + " | ".join([str(x) for x in lab] + [f"{v:.3f}" for v in row]) + " |"
            for lab, row in zip(labels, acc_RxE)]
  with open(target(stem + ".md"), "w") as f:
    f.write("\n".join(lines) + "\n")


def format_grid(results: dict) -> str:
  """A plain-text summary: a table per purifier (every other ε past 8), undefended, best sizes, paired rows."""
  eps, sizes = results["axes"]["epsilon"], results["axes"]["codebook_size"]
  cols = list(range(len(eps))) if len(eps) <= 8 else sorted(set(range(0, len(eps), 2)) | {len(eps) - 1})
  head = lambda name: f"{name:<22}" + "".join(f"{eps[j]:>7.2f}" for j in cols)
  row = lambda name, acc_E: f"{name:<22}" + "".join(f"{acc_E[j]:>7.3f}" for j in cols)
  lines = [f"{results['threat_model']}; {results['num_test_images']} test images; "
           f"classifier clean accuracy {results['classifier_clean_accuracy']:.4f}; ε in pixel units"]
  for p, acc_MxE in zip(results["axes"]["purifier"], results["accuracy"]):
    lines += ["", f"{LABELS.get(p, p)} ({p})   accuracy by ε", head("codebook size")]
    lines += [row(str(s), acc_E) for s, acc_E in zip(sizes, acc_MxE)]
  lines += ["", head(""), row("undefended", results["undefended"])]
  best = ", ".join(f"{k} K={v}" for k, v in results.get("best_size", {}).items())
  lines.append(f"\nbest sizes (mean accuracy over ε <= {results['best_eps_max']:g}): {best or 'none'}")
  if "paired" in results:
    pair = results["paired"]
    lines += [f"pipelines with No-Split K={pair['no_split_size']} + Split K={pair['split_size']}:", head("")]
    lines += [row(p, acc_E) for p, acc_E in pair["accuracy"].items()]
  return "\n".join(lines)
