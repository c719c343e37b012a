"""Tables and figures of the grid evaluation, regenerable from `grid.json` and `grid.npz` alone.

The grid is sliced by (attack, training mode). The first attack with clean-trained VQ-VAEs keeps the plain
file names (table2_no_split.md, fig3_accuracy_vs_eps.png, ...); every other slice adds `__<attack>` and, for
adversarially trained VQ-VAEs, `__adversarial`. Tables are written for every slice, the per-slice figures only
for the first attack's slices. With more than one slice, `table_attacks` and `fig_attacks` put every slice's
curves side by side; with `split_k` results, `table_split_k` and `fig_split_k` show the Split purifier per tile
count k. With the restorer (restore/purifier.py) in the grid, `table_restorer` holds its row per attack, and
its curve joins the clean-trained slices' figures and tables (one model: no codebook size, no training mode).
Fig. 4 (the pipelines) is drawn only when the grid has pipelines. Every curve has one colour in every figure
(core/report.py `colour`); detect, then purify curves are dashed with open squares, so they do not hide the
purifier's own curve where the two agree. Accuracy curves carry a ±1 standard error band over the test images.
With AutoAttack in the grid, `table_autoattack` says what each member did to each defence; whenever an attack
sees the purifier, `table_masking` holds the gradient-masking checks (purify/masking.py).
"""

import os

import numpy as np

from vqdefense_jax.core import attacks as attacks_lib
from vqdefense_jax.core import files
from vqdefense_jax.core import report as draw
from vqdefense_jax.purify import masking
from vqdefense_jax.purify.grid import WORST, best_index
from vqdefense_jax.core.defence import GATED_PREFIX
from vqdefense_jax.purify.results import GridResult

plt = draw.plt
LABELS = {"none": "Original", "no_split": "No-Split-VAE", "split": "4-Split-VAE", "vae_to_split": "VAE to Split",
          "split_to_vae": "Split to VAE", "restorer": "Restorer (CBAM GAN)"}
SHORT = {"no_split": "N", "split": "S"}
# File stem and the paper's table or figure each table mirrors.
TABLES = {"no_split": ("table2_no_split", "the paper's Table 2"), "split": ("table3_split", "the paper's Table 3"),
          "vae_to_split": ("table_vae_to_split", "the pipeline curves of the paper's Fig. 4"),
          "split_to_vae": ("table_split_to_vae", "the pipeline curves of the paper's Fig. 4")}


def label(p: str) -> str:
  """A purifier's display name; detect, then purify ('detect_<p>') included."""
  if p.startswith(GATED_PREFIX):
    return f"Detect, then {LABELS[p[len(GATED_PREFIX):]]}"
  return LABELS.get(p, p)


def table_of(p: str) -> tuple[str, str]:
  """(file stem, what it mirrors) of a purifier's per-size table."""
  if p.startswith(GATED_PREFIX):
    return f"table_{p}", "no table of the paper (detect, then purify: only the images the detector flags)"
  return TABLES[p]


TRAINING = {"clean": "clean-trained VQ-VAEs",
            "adversarial": "adversarially trained VQ-VAEs (Defense-VAE style: FGSM inputs → clean targets)"}
FIG4_SMALL_EPS = 0.08  # the ε range of the paper's Fig. 4(a)
PIPELINES = ("vae_to_split", "split_to_vae")  # the purifiers Fig. 4 is about (gated or not)
SPREAD_NOTE = "bands: ±1 standard error over the test images"
EPS_NOTE = "ε in pixel units (the paper labels them ×10)"
COUNTING = {"final": "accuracy = images whose final prediction is right / all images",
            "clean_and_final": "accuracy = images the classifier gets right both clean and after attack and "
                               "purification / all images (the paper authors' counting)"}


def save(result: GridResult, workdir: str) -> list[str]:
  """Write `grid.json` and `grid.npz` into `workdir`, then every table and figure (`render`)."""
  result.save(workdir)
  return render(result, workdir)


def render(result: GridResult, workdir: str) -> list[str]:
  """Write every table and figure of `result` into `workdir`; returns the paths written.

  Each output goes to `.partial-<name>` first; only when all succeeded are they moved into place, so a
  failure leaves the previous set of outputs untouched.
  """
  with files.staged(workdir) as target:
    _render(result, target)
  return [os.path.join(workdir, n) for n in target.names]


def _box(attack: str) -> str:
  if attack == WORST:
    return "worst case"
  return attacks_lib.Attack(attack).threat_model


def _suffix(i: int, attack: str, mode: str = "clean") -> str:
  """File name suffix of slice (attack i, mode): none for the first attack with clean training."""
  return "" if i == 0 and mode == "clean" else f"__{attack}" + ("" if mode == "clean" else f"__{mode}")


def _threats(r: GridResult, attacks) -> str:
  """The threat-model description of each attack, one Markdown bullet each."""
  return "\n".join(f"- {r.threat_model[atk]}" for atk in attacks)


def _eps_columns(r: GridResult) -> list[str]:
  return [f"{e:.2f}" for e in r.epsilon]


def _finish(fig, axes, title: str, path: str) -> None:
  draw.finish(fig, axes, title, path, xlabel="ε (pixel units)", ylabel="test accuracy")


def _base(p: str) -> str:
  """The purifier a gated purifier ('detect_<p>') gates."""
  return p[len(GATED_PREFIX):] if p.startswith(GATED_PREFIX) else p


def _stderr(acc_E, n: int) -> np.ndarray:
  """The standard error of an accuracy over n test images (each right or wrong: a binomial share), the spread
  the grid holds for every curve."""
  acc_E = np.clip(np.asarray(acc_E, float), 0, 1)
  return np.sqrt(acc_E * (1 - acc_E) / max(n, 1))


def _plot(ax, eps, acc_E, key: tuple, label: str, n: int, keep=slice(None), mode: str = "clean") -> None:
  draw.curve(ax, eps, acc_E, label, keep, err=_stderr(acc_E, n), **_style(key, mode))


def _render(r: GridResult, target) -> None:
  slices = r.slices()
  for i, j, _, _ in slices:
    _render_slice(r, target, i, j, figures=i == 0)
  if len(slices) > 1:
    _render_attacks(r, target, slices)
  if r.split_k is not None:
    _render_split_k(r, target)
  if r.restorer is not None:
    _render_restorer(r, target)
  if r.convergence is not None:
    _render_convergence(r, target)
  if r.suite is not None:
    _render_suite(r, target)
  found = masking.checks(r)
  if found:
    _render_masking(r, found, target)
  if r.figure is not None:
    f = r.figure
    outside = [e for e in f.epsilons if not in_grid(e, r.epsilon)]
    note = (f"; ε marked * ({', '.join(f'{e:g}' for e in outside)}) "
            + ("is not one of the grid's ε values: no table holds its" if len(outside) == 1 else
               "are not among the grid's ε values: no table holds their") + " accuracy" if outside else "")
    draw.image_grid(f.images, list(f.rows), [f"ε={e:g}" + ("*" if e in outside else "") for e in f.epsilons],
                    f"grey-box FGSM and purified reconstructions (codebook size {f.no_split_size} (No-Split) and "
                    f"{f.split_size} (4-Split); display clipped to [0, 1]){note}", target("reconstructions.png"))


def in_grid(e: float, epsilons) -> bool:
  """Whether figure ε `e` is one of the grid's ε values (to float rounding)."""
  return any(abs(e - g) < 1e-6 for g in epsilons)


def _render_attacks(r: GridResult, target, slices) -> None:
  """`table_attacks` and `fig_attacks`: the curves of every (attack, training) slice."""
  eps, n = np.asarray(r.epsilon), r.num_test_images
  curves = [(s, _curves(r, s[0], s[1])) for s in slices]
  rows = [(atk, _box(atk), mode, *_columns(key, r), acc_E) for (_, _, atk, mode), cs in curves
          for key, acc_E in cs]
  draw.table(target, "table_attacks", "Accuracy by attack, training mode, purifier and ε: undefended, single "
             "VQ-VAEs at their best codebook size, pipelines paired or at their best size", f"{n} test images; "
             f"{EPS_NOTE}; pipeline sizes N<No-Split K>+S<Split K>. Threat models:\n\n" + _threats(r, r.attack),
             ["attack", "threat_model", "training", "purifier", "codebook_size"], [row[:-1] for row in rows],
             [row[-1] for row in rows], _eps_columns(r))
  fig, axes = draw.panels(len(r.attack))
  for (i, j, atk, mode), cs in curves:
    for key, acc_E in cs:
      if key[0] != "none" or j == 0:  # the undefended curve does not depend on the training mode
        _plot(axes[i], eps, acc_E, key, _label(key, r) if j == 0 else "_nolegend_", n, mode=mode)
    axes[i].set_title(draw.panel_title(atk, _box(atk)), fontsize=9)
  training = (f"solid: {TRAINING['clean']}, dotted: {TRAINING['adversarial']}" if len(r.training) > 1
              else TRAINING.get(r.training[0], r.training[0]))
  _finish(fig, axes, f"accuracy by attack ({n} test images; {SPREAD_NOTE}); {training}{_gated_note(r)}",
          target("fig_attacks.png"))


def _render_convergence(r: GridResult, target) -> None:
  """`table_convergence` and `fig_convergence`: accuracy of the iterative attacks against their step count
  (clean-trained VQ-VAEs; each purifier at the size of its curve in the main tables)."""
  c, eps, n = r.convergence, np.asarray(r.epsilon), r.num_test_images
  sizes = list(r.codebook_size)
  size_of = {key[0]: key[1] for key, _ in _curves(r, 0, 0) if key[0] != "none"}
  m_of = [sizes.index(size_of[name]) if size_of.get(name) in sizes else 0 for name in r.purifier]
  rows, labels = [], []
  for a, atk in enumerate(c.attack):
    for s, steps in enumerate(c.steps):
      labels.append([atk, _box(atk), "none", "-", steps])
      rows.append(c.undefended[s, a])
      for p, name in enumerate(r.purifier):
        labels.append([atk, _box(atk), name, sizes[m_of[p]], steps])
        rows.append(c.accuracy[s, a, 0, p, m_of[p]])
  draw.table(target, "table_convergence", "Convergence check: accuracy of the iterative attacks by number of steps "
             f"({TRAINING['clean']}); flat in the steps means the attack has converged", f"{n} test images; "
             f"{EPS_NOTE}; {COUNTING[r.counting]}. Threat models (at the main grid's step count):\n\n"
             + _threats(r, [a for a in c.attack if a in r.threat_model]),
             ["attack", "threat_model", "purifier", "codebook_size", "steps"], labels, rows, _eps_columns(r))
  fig, axes = draw.panels(len(c.attack))
  for a, (ax, atk) in enumerate(zip(axes, c.attack)):
    _plot(ax, c.steps, c.undefended[:, a, -1], ("none",), label("none"), n)
    for p, name in enumerate(r.purifier):
      _plot(ax, c.steps, c.accuracy[:, a, 0, p, m_of[p], -1], (name, sizes[m_of[p]]),
            f"{label(name)} K={sizes[m_of[p]]}", n)
    ax.set_xscale("log")
    ax.set_title(draw.panel_title(atk, _box(atk)), fontsize=9)
  draw.finish(fig, axes, f"accuracy at ε = {eps[-1]:g} against attack steps ({n} test images; {SPREAD_NOTE})"
              + _gated_note(r), target("fig_convergence.png"), xlabel="attack steps", ylabel="test accuracy")


MEMBER = {"apgd_ce": "APGD-CE", "apgd_t": "APGD-T", "fab_t": "FAB-T", "square": "Square"}


def suite_rows(r: GridResult) -> list[tuple[list, np.ndarray]]:
  """(labels, outcome shares (E, O)) per suite attack and defence: the undefended classifier, every purifier of
  the clean-trained slice at its curve's codebook size, the restorer."""
  u, sizes = r.suite, list(r.codebook_size)
  size_of = {key[0]: key[1] for key, _ in _curves(r, r.attack.index(u.attack[0]), 0) if key[0] != "none"}
  out = []
  for s, atk in enumerate(u.attack):
    out.append(([atk, "none", "-"], u.undefended[s]))
    for p, name in enumerate(r.purifier):
      m = sizes.index(size_of[name]) if size_of.get(name) in sizes else 0
      out.append(([atk, name, sizes[m]], u.defended[s, 0, p, m]))
    if u.restorer is not None:
      out.append(([atk, "restorer", "-"], u.restorer[s]))
  return out


def most_damage(u, shares_O: np.ndarray) -> str:
  """The member that fooled the most images first ('none' when no member fooled any)."""
  members = [o for o in u.outcome if o in MEMBER]
  counts = [shares_O[u.outcome.index(o)] for o in members]
  return MEMBER[members[int(np.argmax(counts))]] if max(counts) > 0 else "none"


def _render_suite(r: GridResult, target) -> None:
  """`table_autoattack`: per suite attack, defence and ε, the robust share and the share each member fooled
  first (the members run in order, each on what the earlier ones left), and the member that did the most."""
  u, eps = r.suite, r.epsilon
  labels, values = [], []
  for lab, shares_ExO in suite_rows(r):
    for e, shares_O in enumerate(shares_ExO):
      labels.append(lab + [f"{eps[e]:g}", most_damage(u, shares_O)])
      values.append(shares_O)
  settings = "\n".join(f"- {r.threat_model[a]}" for a in u.attack)
  draw.table(target, "table_autoattack", "AutoAttack (Croce & Hein 2020, standard L∞ suite): what each member did",
             f"{r.num_test_images} test images; {EPS_NOTE}. Shares of all test images: `robust` survived every "
             "member (the robust accuracy, counted the 'final' way), `clean` was wrong before any attack, each "
             "member's column is the share it fooled first. Clean-trained VQ-VAEs at the codebook size of their "
             f"curve. Settings:\n\n{settings}", ["attack", "purifier", "codebook_size", "epsilon", "most_damage"],
             labels, values, list(u.outcome))


def _render_masking(r: GridResult, found, target) -> None:
  """`table_masking.md`: every gradient-masking check, its verdict and the evidence."""
  lines = ["# Gradient-masking checks (Carlini et al. 2019)", "", "A number is suspect when", ""]
  lines += [f"- **{name}**: {text}" for name, text in masking.EXPLAIN.items()]
  lines += ["",
           f"{len(masking.suspects(found))} of {len(found)} checks flag a suspect number.", "",
           "| training | purifier | codebook size | check | verdict | evidence |", "|---|---|---|---|---|---|"]
  lines += [f"| {c.training} | {c.purifier} | {c.codebook_size} | {c.check} | {c.verdict} | {c.evidence} |"
            for c in found]
  with open(target("table_masking.md"), "w") as f:
    f.write("\n".join(lines) + "\n")


def _render_restorer(r: GridResult, target) -> None:
  """`table_restorer`: the restorer as a purifier, by attack and ε, beside the undefended classifier."""
  rows = [[atk, _box(atk), p] for atk in r.attack for p in ("none", "restorer")]
  values = np.stack([v for a in range(len(r.attack)) for v in (r.undefended[a], r.restorer.accuracy[a])])
  draw.table(target, "table_restorer", f"{label('restorer')} as a purifier (trained on FGSM → clean pairs): "
             "accuracy by attack and ε, with the undefended classifier", f"{r.num_test_images} test images; "
             f"{EPS_NOTE}; {COUNTING[r.counting]}. Threat models (white-box attacks differentiate through the "
             "restorer's generator):\n\n" + _threats(r, r.attack), ["attack", "threat_model", "purifier"], rows,
             values, _eps_columns(r))


def _render_split_k(r: GridResult, target) -> None:
  """`table_split_k` and `fig_split_k`: the Split purifier per tile count k (at Split's best size in the figure)."""
  eps, n, sizes, acc_AxKxMxE = np.asarray(r.epsilon), r.num_test_images, list(r.codebook_size), r.split_k.accuracy
  title = "Split purifier with k×k tiles (clean-trained VQ-VAEs; k = 1 is the whole image, i.e. the No-Split VQ-VAE)"
  draw.table(target, "table_split_k", f"{title}: accuracy by attack, k, codebook size and ε",
             f"{n} test images; {EPS_NOTE}. Threat models:\n\n" + _threats(r, r.attack),
             ["attack", "threat_model", "k", "codebook_size"],
             [[atk, _box(atk), k, s] for atk in r.attack for k in r.split_k.k for s in sizes],
             acc_AxKxMxE.reshape(-1, len(eps)), _eps_columns(r))
  size = r.best_size.get("split")
  m = sizes.index(size) if size in sizes else 0
  fig, axes = draw.panels(len(r.attack))
  for ax, atk, undefended_E, acc_KxMxE in zip(axes, r.attack, r.undefended, acc_AxKxMxE):
    _plot(ax, eps, undefended_E, ("none",), _label(("none",), r), n)
    for k, acc_MxE in zip(r.split_k.k, acc_KxMxE):
      _plot(ax, eps, acc_MxE[m], (f"split_k={k}", sizes[m]), f"k={k}", n)
    ax.set_title(draw.panel_title(atk, _box(atk)), fontsize=9)
  _finish(fig, axes, f"{title}, codebook size {sizes[m]} ({n} test images; {SPREAD_NOTE})",
          target("fig_split_k.png"))


def _render_slice(r: GridResult, target, i: int, j: int, figures: bool) -> None:
  """Tables (and with `figures`, Figs. 3, 4 and the heatmaps) of slice (attack i, training j)."""
  atk, mode = r.attack[i], r.training[j]
  sizes, eps = list(r.codebook_size), np.asarray(r.epsilon)
  acc_PxMxE, sfx, n = r.accuracy[i, j], _suffix(i, atk, mode), r.num_test_images
  tag = f"{_box(atk)} {atk}, {TRAINING.get(mode, mode)}"
  info = f"{r.threat_model[atk]}; {n} test images; {EPS_NOTE}; {COUNTING[r.counting]}"
  for p, acc_MxE in zip(r.purifier, acc_PxMxE):
    stem, mirrors = table_of(p)
    draw.table(target, stem + sfx, f"{label(p)} ({p}) accuracy by codebook size and ε, {tag}: analogue of "
               f"{mirrors}", info, ["codebook_size"], [[s] for s in sizes], acc_MxE, _eps_columns(r))
  if j == 0:  # the undefended classifier has no training mode
    draw.table(target, "table_undefended" + _suffix(i, atk), f"Undefended classifier accuracy by ε, {_box(atk)} "
               f"{atk}: the 'Original' curve of the paper's Figs. 3 and 4", info, ["purifier"], [["none"]],
               r.undefended[i][None], _eps_columns(r))
  if r.paired is not None:
    ns, s = r.paired.no_split_size, r.paired.split_size
    draw.table(target, "table_best_pair" + sfx, f"Pipelines with the best No-Split and 4-Split codebook sizes, "
               f"{tag}: analogue of the pipeline curves of the paper's Fig. 4", info,
               ["pipeline", "no_split_size", "split_size"], [[p, ns, s] for p in r.paired.purifier],
               r.paired.accuracy[i, j], _eps_columns(r))
  if not figures:
    return
  curves = _curves(r, i, j)
  title = f"{r.threat_model[atk]}; {TRAINING.get(mode, mode)} ({n} test images; {SPREAD_NOTE}){_gated_note(r)}"
  fig, ax = plt.subplots(figsize=(6, 4.2))
  for key, acc_E in [c for c in curves if _base(c[0][0]) in ("none", "no_split", "split", "restorer")]:
    _plot(ax, eps, acc_E, key, _label(key, r), n)
  _finish(fig, [ax], "accuracy vs ε (analogue of the paper's Fig. 3)\n" + title,
          target(f"fig3_accuracy_vs_eps{sfx}.png"))
  if has_pipelines(r):  # without pipelines Fig. 4 would only repeat Fig. 3
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    small = eps <= FIG4_SMALL_EPS + 1e-9
    for ax, keep, name in ((axes[0], small, f"(a) ε ≤ {FIG4_SMALL_EPS:g}"), (axes[1], slice(None), "(b) all ε")):
      for key, acc_E in curves:
        _plot(ax, eps, acc_E, key, _label(key, r), n, keep)
      ax.set_title(name, fontsize=9)
    _finish(fig, axes, "purifiers and pipelines vs ε (analogue of the paper's Fig. 4)\n" + title,
            target(f"fig4_pipelines{sfx}.png"))
  for p, acc_MxE in zip(r.purifier, acc_PxMxE):
    draw.heatmap(acc_MxE, [str(s) for s in sizes], _eps_columns(r), f"{label(p)} ({p}) accuracy\n{title}",
                 target(f"heatmap_{p}{sfx}.png"), xlabel="ε (pixel units)", ylabel="codebook size",
                 colorbar="test accuracy")


def has_pipelines(r: GridResult) -> bool:
  """Whether the grid has a pipeline (vae_to_split, split_to_vae; gated or paired included): Fig. 4's subject."""
  return any(_base(p) in PIPELINES for p in r.purifier) or r.paired is not None


def _gated_note(r: GridResult) -> str:
  gated = any(p.startswith(GATED_PREFIX) for p in r.purifier)
  return "; dashed, open squares: detect, then purify" if gated else ""


def _curves(r: GridResult, i: int, j: int) -> list[tuple[tuple, np.ndarray]]:
  """(label key, accuracy (E,)) per curve of slice (i, j): undefended, the restorer (in clean-trained slices),
  singles at their best size, pipelines paired or best."""
  sizes = list(r.codebook_size)
  paired = {} if r.paired is None else dict(zip(r.paired.purifier, r.paired.accuracy[i, j]))
  curves = [(("none",), r.undefended[i])]
  if r.restorer is not None and r.training[j] == "clean":
    curves.append((("restorer", None), r.restorer.accuracy[i]))
  for p, acc_MxE in zip(r.purifier, r.accuracy[i, j]):
    if p in paired:
      continue
    size = r.best_size.get(p) if p in SHORT else None
    m = sizes.index(size) if size in sizes else best_index(acc_MxE, r.epsilon, r.best_eps_max)
    curves.append(((p, sizes[m]), acc_MxE[m]))
  return curves + [((p, "paired"), acc_E) for p, acc_E in paired.items()]


def _columns(key: tuple, r: GridResult) -> tuple[str, str]:
  """(purifier, codebook size) of a curve for the tables; pipelines paired: N<No-Split K>+S<Split K>."""
  if key[0] == "none" or key[1] is None:
    return key[0], "-"
  if key[1] == "paired":
    return key[0], f"N{r.paired.no_split_size}+S{r.paired.split_size}"
  return key[0], str(key[1])


def _name(key: tuple) -> str:
  """A curve's short name in `format_grid`."""
  if key[0] == "none" or key[1] is None:
    return "undefended" if key[0] == "none" else key[0]
  return f"{key[0]} " + ("paired" if key[1] == "paired" else f"K={key[1]}")


def _label(key: tuple, r: GridResult) -> str:
  if key[0] == "none":
    return "Original (undefended)"
  if key[1] is None:
    return label(key[0])
  if key[1] == "paired":
    return f"{label(key[0])}: N K={r.paired.no_split_size} + S K={r.paired.split_size}"
  return f"{label(key[0])} K={key[1]}"


def _style(key: tuple, mode: str = "clean") -> dict:
  """A curve's colour (core/report.py's, the same in every figure), line style and marker.

  Undefended: black with crosses. Detect, then purify: its purifier's colour, dashed, with larger open squares,
  so where the gate passes every attacked image and the two curves agree, the purifier's own curve (solid, small
  filled circles) still shows through. Adversarially trained VQ-VAEs: dotted (dash-dot when gated).
  """
  if key[0] == "none":
    return dict(color=draw.colour("none"), ls="-", marker="x", ms=4)
  gated, clean = key[0].startswith(GATED_PREFIX), mode == "clean"
  ls = ("--" if clean else "-.") if gated else ("-" if clean else ":")
  marks = dict(marker="s", ms=6, mfc="none", mew=1.0) if gated else dict(marker="o", ms=3)
  return dict(color=draw.colour(key[0]), ls=ls, **marks)


def format_grid(r: GridResult) -> str:
  """A plain-text summary (every other ε past 8).

  The first attack with clean-trained VQ-VAEs in full: a table per purifier, undefended, best sizes, paired rows.
  Then the curves of every other (attack, training) slice, then the Split purifier per tile count k.
  """
  eps, sizes = r.epsilon, list(r.codebook_size)
  cols = list(range(len(eps))) if len(eps) <= 8 else sorted(set(range(0, len(eps), 2)) | {len(eps) - 1})
  head = lambda name: f"{name:<22}" + "".join(f"{eps[j]:>7.2f}" for j in cols)
  row = lambda name, acc_E: f"{name:<22}" + "".join(f"{acc_E[j]:>7.3f}" for j in cols)
  (_, _, atk, mode), *others = r.slices()
  lines = [f"{r.threat_model[atk]}; {TRAINING.get(mode, mode)}; {r.num_test_images} test images; "
           f"classifier clean accuracy {r.classifier_clean_accuracy:.4f}; ε in pixel units", COUNTING[r.counting]]
  for p, acc_MxE in zip(r.purifier, r.accuracy[0, 0]):
    lines += ["", f"{label(p)} ({p})   accuracy by ε", head("codebook size")]
    lines += [row(str(s), acc_E) for s, acc_E in zip(sizes, acc_MxE)]
  lines += ["", head(""), row("undefended", r.undefended[0])]
  if r.restorer is not None:
    lines.append(row("restorer", r.restorer.accuracy[0]))
  best = ", ".join(f"{k} K={v}" for k, v in r.best_size.items())
  lines.append(f"\nbest sizes (mean accuracy over ε <= {r.best_eps_max:g}): {best or 'none'}")
  if r.paired is not None:
    lines += [f"pipelines with No-Split K={r.paired.no_split_size} + Split K={r.paired.split_size}:", head("")]
    lines += [row(p, acc_E) for p, acc_E in zip(r.paired.purifier, r.paired.accuracy[0, 0])]
  for i, j, atk, mode in others:
    lines += ["", f"{r.threat_model[atk]}; {TRAINING.get(mode, mode)}", head("")]
    lines += [row(_name(key), acc_E) for key, acc_E in _curves(r, i, j)]
  if r.suite is not None:
    lines += ["", "AutoAttack: the member that fooled the most images first, by ε",
              "".ljust(22) + "".join(f"{r.epsilon[j]:>9.2f}" for j in cols)]
    for lab, shares_ExO in suite_rows(r):
      lines.append(f"{lab[0]} {lab[1]}".ljust(22) + "".join(f"{most_damage(r.suite, shares_ExO[j]):>9}"
                                                            for j in cols))
  found = masking.checks(r)
  if found:
    bad = masking.suspects(found)
    lines += ["", f"gradient-masking checks (table_masking.md): {len(bad)} of {len(found)} flag a suspect number"]
    lines += [f"  SUSPECT {c.purifier} {c.codebook_size} {c.training}: {c.check}: {c.evidence}" for c in bad[:12]]
    if len(bad) > 12:
      lines.append(f"  ... and {len(bad) - 12} more")
  if r.split_k is not None:
    lines += ["", "Split purifier with k×k tiles (clean-trained VQ-VAEs; k = 1: the whole image), accuracy by ε",
              head("attack k K")]
    lines += [row(f"{atk} k={k} K={s}", acc_E) for atk, acc_KxMxE in zip(r.attack, r.split_k.accuracy)
              for k, acc_MxE in zip(r.split_k.k, acc_KxMxE) for s, acc_E in zip(sizes, acc_MxE)]
  return "\n".join(lines)
