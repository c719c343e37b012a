"""Tables and figures of the grid evaluation, regenerable from `grid.json` and `grid.npz` alone.

The grid is sliced by (attack, training mode). The first attack with clean-trained VQ-VAEs keeps the plain
file names (table2_no_split.md, fig3_accuracy_vs_eps.png, ...); every other slice adds `__<attack>` and, for
adversarially trained VQ-VAEs, `__adversarial`. Tables are written for every slice, the per-slice figures only
for the first attack's slices. With more than one slice, `table_attacks` and `fig_attacks` put every slice's
curves side by side; with `split_k` results, `table_split_k` and `fig_split_k` show the Split purifier per tile
count k.
"""

import csv
import json
import os
import textwrap

import numpy as np

from vqdefense_jax import attacks as attacks_lib
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
TRAINING = {"clean": "clean-trained VQ-VAEs",
            "adversarial": "adversarially trained VQ-VAEs (Defense-VAE style: FGSM inputs → clean targets)"}
FIG4_SMALL_EPS = 0.08  # the ε range of the paper's Fig. 4(a)
EPS_NOTE = "ε in pixel units (the paper labels them ×10)"


def save(results: dict, figure: np.ndarray | None, workdir: str) -> None:
  """Write `grid.json` and `grid.npz` into `workdir`, then every table and figure (`render`)."""
  os.makedirs(workdir, exist_ok=True)
  experiment.write_json_atomic(os.path.join(workdir, "grid.json"), results)
  arrays = _arrays(results)
  if figure is not None:
    arrays["figure"] = np.asarray(figure, np.float32)
  tmp = os.path.join(workdir, ".partial-grid.npz")
  with open(tmp, "wb") as f:  # a file object, so numpy does not append another ".npz"
    np.savez(f, **arrays)
  os.replace(tmp, os.path.join(workdir, "grid.npz"))
  render(workdir)


def _arrays(results: dict) -> dict[str, np.ndarray]:
  """The arrays of `grid.npz` (all but `figure`) from the results dict."""
  axes = results["axes"]
  a = dict(accuracy=np.asarray(results["accuracy"], np.float64),  # (A, T, P, M, E)
           undefended=np.asarray(results["undefended"], np.float64),  # (A, E)
           attack=np.asarray(axes["attack"], str), training=np.asarray(axes["training"], str),
           purifier=np.asarray(axes["purifier"], str), codebook_size=np.asarray(axes["codebook_size"], np.int64),
           epsilon=np.asarray(axes["epsilon"], np.float64))
  if "paired" in results:
    a["paired_purifier"] = np.asarray(results["paired"]["purifier"], str)
    a["paired_accuracy"] = np.asarray(results["paired"]["accuracy"], np.float64)  # (A, T, P', E)
  if "split_k" in results:
    a["split_k"] = np.asarray(results["split_k"]["k"], np.int64)
    a["split_k_accuracy"] = np.asarray(results["split_k"]["accuracy"], np.float64)  # (A, K, M, E)
  return a


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


def best_index(acc_MxE: np.ndarray, eps, eps_max: float) -> int:
  """Row with the highest mean accuracy over ε <= eps_max (ties: the first), the paper's Sec. 3.2 criterion.

  config.validate guarantees some ε <= grid.best_eps_max.
  """
  low = np.asarray(eps) <= eps_max + 1e-9
  return int(np.argmax(np.asarray(acc_MxE)[:, low].mean(axis=1))) if low.any() else 0


def _box(attack: str) -> str:
  return attacks_lib.Attack(attack).threat_model


def _suffix(i: int, attack: str, mode: str = "clean") -> str:
  """File name suffix of slice (attack i, mode): none for the first attack with clean training."""
  return "" if i == 0 and mode == "clean" else f"__{attack}" + ("" if mode == "clean" else f"__{mode}")


def _slices(a: dict[str, np.ndarray]) -> list[tuple[int, int, str, str]]:
  """(attack index, training index, attack, training mode) of every slice, the first attack's first."""
  return [(i, j, str(atk), str(mode)) for i, atk in enumerate(a["attack"]) for j, mode in enumerate(a["training"])]


def _threats(results: dict, attacks) -> str:
  """The threat-model description of each attack, one Markdown bullet each."""
  return "\n".join(f"- {results['threat_model'][str(atk)]}" for atk in attacks)


def _render(results: dict, a: dict[str, np.ndarray], target) -> None:
  slices = _slices(a)
  for i, j, _, _ in slices:
    _render_slice(results, a, target, i, j, figures=i == 0)
  if len(slices) > 1:
    _render_attacks(results, a, target, slices)
  if "split_k" in a:
    _render_split_k(results, a, target)
  if "figure" in a:
    meta = results["figure"]
    plots.reconstructions(a["figure"], meta["rows"], meta["epsilons"],
                          f"{meta['no_split_size']} (No-Split) and {meta['split_size']} (4-Split)",
                          target("reconstructions.png"))


def _render_attacks(results: dict, a: dict[str, np.ndarray], target, slices) -> None:
  """`table_attacks` and `fig_attacks`: the curves of every (attack, training) slice."""
  eps, n = a["epsilon"], results["num_test_images"]
  curves = [(s, _curves(results, a, s[0], s[1])) for s in slices]
  rows = [(atk, _box(atk), mode, *_columns(key, results), acc_E) for (_, _, atk, mode), cs in curves
          for key, acc_E in cs]
  _table(target, "table_attacks", "Accuracy by attack, training mode, purifier and ε: undefended, single VQ-VAEs "
         "at their best codebook size, pipelines paired or at their best size", f"{n} test images; {EPS_NOTE}; "
         "pipeline sizes N<No-Split K>+S<Split K>. Threat models:\n\n" + _threats(results, a["attack"]),
         ["attack", "threat_model", "training", "purifier", "codebook_size"], [r[:-1] for r in rows],
         [r[-1] for r in rows], eps)
  fig, axes = _panels(len(a["attack"]))
  for (i, j, atk, mode), cs in curves:
    for c, (key, acc_E) in enumerate(cs):
      if key[0] != "none" or j == 0:  # the undefended curve does not depend on the training mode
        axes[i].plot(eps, acc_E, marker="o", ms=3, label=_label(key, results) if j == 0 else "_nolegend_",
                     **_style(key, c, mode))
    axes[i].set_title(f"{atk} ({_box(atk)})", fontsize=9)
  modes = [str(mode) for mode in a["training"]]
  training = (f"solid: {TRAINING['clean']}, dashed: {TRAINING['adversarial']}" if len(modes) > 1
              else TRAINING.get(modes[0], modes[0]))
  _finish(fig, axes, f"accuracy by attack ({n} test images); {training}", target("fig_attacks.png"))


def _render_split_k(results: dict, a: dict[str, np.ndarray], target) -> None:
  """`table_split_k` and `fig_split_k`: the Split purifier per tile count k (at Split's best size in the figure)."""
  eps, n, attacks = a["epsilon"], results["num_test_images"], [str(atk) for atk in a["attack"]]
  ks, sizes, acc_AxKxMxE = [int(k) for k in a["split_k"]], [int(s) for s in a["codebook_size"]], a["split_k_accuracy"]
  title = "Split purifier with k×k tiles (clean-trained VQ-VAEs; k = 1 is the whole image, i.e. the No-Split VQ-VAE)"
  _table(target, "table_split_k", f"{title}: accuracy by attack, k, codebook size and ε",
         f"{n} test images; {EPS_NOTE}. Threat models:\n\n" + _threats(results, attacks),
         ["attack", "threat_model", "k", "codebook_size"],
         [[atk, _box(atk), k, s] for atk in attacks for k in ks for s in sizes], acc_AxKxMxE.reshape(-1, len(eps)), eps)
  size = results["best_size"].get("split")
  m = sizes.index(size) if size in sizes else 0
  fig, axes = _panels(len(attacks))
  for ax, atk, undefended_E, acc_KxMxE in zip(axes, attacks, a["undefended"], acc_AxKxMxE):
    _plot(ax, eps, undefended_E, _label(("none",), results), slice(None))
    for k, acc_MxE in zip(ks, acc_KxMxE):
      _plot(ax, eps, acc_MxE[m], f"k={k}", slice(None))
    ax.set_title(f"{atk} ({_box(atk)})", fontsize=9)
  _finish(fig, axes, f"{title}, codebook size {sizes[m]} ({n} test images)", target("fig_split_k.png"))


def _render_slice(results: dict, a: dict[str, np.ndarray], target, i: int, j: int, figures: bool) -> None:
  """Tables (and with `figures`, Figs. 3, 4 and the heatmaps) of slice (attack i, training j)."""
  atk, mode = str(a["attack"][i]), str(a["training"][j])
  purifiers, sizes, eps = [str(p) for p in a["purifier"]], [int(s) for s in a["codebook_size"]], a["epsilon"]
  acc_PxMxE, sfx, n = a["accuracy"][i, j], _suffix(i, atk, mode), results["num_test_images"]
  tag = f"{_box(atk)} {atk}, {TRAINING.get(mode, mode)}"
  info = f"{results['threat_model'][atk]}; {n} test images; {EPS_NOTE}"
  for p, acc_MxE in zip(purifiers, acc_PxMxE):
    stem, mirrors = TABLES[p]
    _table(target, stem + sfx, f"{LABELS[p]} ({p}) accuracy by codebook size and ε, {tag}: analogue of {mirrors}",
           info, ["codebook_size"], [[s] for s in sizes], acc_MxE, eps)
  if j == 0:  # the undefended classifier has no training mode
    _table(target, "table_undefended" + _suffix(i, atk), f"Undefended classifier accuracy by ε, {_box(atk)} {atk}: "
           "the 'Original' curve of the paper's Figs. 3 and 4", info, ["purifier"], [["none"]],
           a["undefended"][i][None], eps)
  if "paired_accuracy" in a:
    ns, s = results["paired"]["no_split_size"], results["paired"]["split_size"]
    _table(target, "table_best_pair" + sfx, f"Pipelines with the best No-Split and 4-Split codebook sizes, {tag}: "
           "analogue of the pipeline curves of the paper's Fig. 4", info, ["pipeline", "no_split_size", "split_size"],
           [[str(p), ns, s] for p in a["paired_purifier"]], a["paired_accuracy"][i, j], eps)
  if not figures:
    return
  curves = _curves(results, a, i, j)
  title = f"{results['threat_model'][atk]}; {TRAINING.get(mode, mode)} ({n} test images)"
  fig, ax = plt.subplots(figsize=(6, 4.2))
  for key, acc_E in [c for c in curves if c[0][0] in ("none", "no_split", "split")]:
    _plot(ax, eps, acc_E, _label(key, results), slice(None))
  _finish(fig, [ax], "accuracy vs ε (analogue of the paper's Fig. 3)\n" + title,
          target(f"fig3_accuracy_vs_eps{sfx}.png"))
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
  small = eps <= FIG4_SMALL_EPS + 1e-9
  for ax, keep, name in ((axes[0], small, f"(a) ε ≤ {FIG4_SMALL_EPS:g}"), (axes[1], slice(None), "(b) all ε")):
    for key, acc_E in curves:
      _plot(ax, eps, acc_E, _label(key, results), keep)
    ax.set_title(name, fontsize=9)
  _finish(fig, axes, "purifiers and pipelines vs ε (analogue of the paper's Fig. 4)\n" + title,
          target(f"fig4_pipelines{sfx}.png"))
  for p, acc_MxE in zip(purifiers, acc_PxMxE):
    _heatmap(acc_MxE, sizes, eps, f"{LABELS[p]} ({p}) accuracy\n{title}", target(f"heatmap_{p}{sfx}.png"))


def _curves(results: dict, a: dict[str, np.ndarray], i: int, j: int) -> list[tuple[tuple, np.ndarray]]:
  """(label key, accuracy (E,)) per curve of slice (i, j): undefended, singles at their best size, pipelines
  paired or best."""
  sizes, eps = [int(s) for s in a["codebook_size"]], a["epsilon"]
  paired = {}
  if "paired_accuracy" in a:
    paired = {str(p): acc_E for p, acc_E in zip(a["paired_purifier"], a["paired_accuracy"][i, j])}
  curves = [(("none",), a["undefended"][i])]
  for p, acc_MxE in zip((str(p) for p in a["purifier"]), a["accuracy"][i, j]):
    if p in paired:
      continue
    size = results["best_size"].get(p) if p in SHORT else None
    m = sizes.index(size) if size in sizes else best_index(acc_MxE, eps, results["best_eps_max"])
    curves.append(((p, sizes[m]), acc_MxE[m]))
  return curves + [((p, "paired"), acc_E) for p, acc_E in paired.items()]


def _columns(key: tuple, results: dict) -> tuple[str, str]:
  """(purifier, codebook size) of a curve for the tables; pipelines paired: N<No-Split K>+S<Split K>."""
  if key[0] == "none":
    return "none", "-"
  if key[1] == "paired":
    return key[0], f"N{results['paired']['no_split_size']}+S{results['paired']['split_size']}"
  return key[0], str(key[1])


def _name(key: tuple) -> str:
  """A curve's short name in `format_grid`."""
  return "undefended" if key[0] == "none" else f"{key[0]} " + ("paired" if key[1] == "paired" else f"K={key[1]}")


def _label(key: tuple, results: dict) -> str:
  if key[0] == "none":
    return "Original (undefended)"
  if key[1] == "paired":
    pair = results["paired"]
    return f"{LABELS[key[0]]}: N K={pair['no_split_size']} + S K={pair['split_size']}"
  return f"{LABELS[key[0]]} K={key[1]}"


def _style(key: tuple, c: int, mode: str) -> dict:
  """Line style in fig_attacks: undefended black dashed; curve c in colour Cc, dashed when adversarially trained."""
  return dict(color="black", ls="--") if key[0] == "none" else dict(color=f"C{c}", ls="-" if mode == "clean" else "--")


def _plot(ax, eps, acc_E, label, keep) -> None:
  style = dict(color="black", ls="--") if label.startswith("Original") else {}
  ax.plot(eps[keep], np.asarray(acc_E)[keep], marker="o", ms=3, label=label, **style)


def _panels(n: int) -> tuple:
  """A figure with one panel per attack, at most 3 a row; returns (figure, the n axes)."""
  cols = min(3, n)
  rows = -(-n // cols)
  fig, grid = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.6 * rows + 0.8), squeeze=False)
  for ax in grid.flat[n:]:
    ax.set_visible(False)
  return fig, list(grid.flat[:n])


def _finish(fig, axes, title: str, path: str) -> None:
  for ax in axes:
    ax.set_xlabel("ε (pixel units)")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=7)
  width = int(11 * fig.get_figwidth())
  fig.suptitle("\n".join(textwrap.fill(t, width=width) for t in title.split("\n")), fontsize=9)
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
  """A plain-text summary (every other ε past 8).

  The first attack with clean-trained VQ-VAEs in full: a table per purifier, undefended, best sizes, paired rows.
  Then the curves of every other (attack, training) slice, then the Split purifier per tile count k.
  """
  a = _arrays(results)
  eps, sizes = a["epsilon"], [int(s) for s in a["codebook_size"]]
  cols = list(range(len(eps))) if len(eps) <= 8 else sorted(set(range(0, len(eps), 2)) | {len(eps) - 1})
  head = lambda name: f"{name:<22}" + "".join(f"{eps[j]:>7.2f}" for j in cols)
  row = lambda name, acc_E: f"{name:<22}" + "".join(f"{acc_E[j]:>7.3f}" for j in cols)
  (_, _, atk, mode), *others = _slices(a)
  lines = [f"{results['threat_model'][atk]}; {TRAINING.get(mode, mode)}; {results['num_test_images']} test images; "
           f"classifier clean accuracy {results['classifier_clean_accuracy']:.4f}; ε in pixel units"]
  for p, acc_MxE in zip(results["axes"]["purifier"], a["accuracy"][0, 0]):
    lines += ["", f"{LABELS.get(p, p)} ({p})   accuracy by ε", head("codebook size")]
    lines += [row(str(s), acc_E) for s, acc_E in zip(sizes, acc_MxE)]
  lines += ["", head(""), row("undefended", a["undefended"][0])]
  best = ", ".join(f"{k} K={v}" for k, v in results.get("best_size", {}).items())
  lines.append(f"\nbest sizes (mean accuracy over ε <= {results['best_eps_max']:g}): {best or 'none'}")
  if "paired" in results:
    pair = results["paired"]
    lines += [f"pipelines with No-Split K={pair['no_split_size']} + Split K={pair['split_size']}:", head("")]
    lines += [row(str(p), acc_E) for p, acc_E in zip(a["paired_purifier"], a["paired_accuracy"][0, 0])]
  for i, j, atk, mode in others:
    lines += ["", f"{results['threat_model'][atk]}; {TRAINING.get(mode, mode)}", head("")]
    lines += [row(_name(key), acc_E) for key, acc_E in _curves(results, a, i, j)]
  if "split_k" in a:
    lines += ["", "Split purifier with k×k tiles (clean-trained VQ-VAEs; k = 1: the whole image), accuracy by ε",
              head("attack k K")]
    lines += [row(f"{atk} k={k} K={s}", acc_E) for atk, acc_KxMxE in zip(a["attack"], a["split_k_accuracy"])
              for k, acc_MxE in zip(a["split_k"], acc_KxMxE) for s, acc_E in zip(sizes, acc_MxE)]
  return "\n".join(lines)
