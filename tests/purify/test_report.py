"""report: grid tables and figures written from a synthetic results dict (no training)."""

import csv
import dataclasses
import os
import shutil

import matplotlib
import numpy as np
import pytest

from vqdefense_jax.core import report as draw
from vqdefense_jax.purify import grid, report
from vqdefense_jax.purify.results import Convergence, Figure, GridResult, Paired, Predictions, SplitK
from vqdefense_jax.core.errors import VQDefenseError

PURIFIERS = ["no_split", "split", "vae_to_split", "split_to_vae"]
SIZES = [100, 300, 1000]
EPS = [0.0, 0.02, 0.05, 0.1, 0.3]
ATTACKS = ["fgsm", "bpda_pgd"]
TRAINING = ["clean", "adversarial"]
SPLIT_KS = [1, 2, 4]
STEMS = {"no_split": "table2_no_split", "split": "table3_split", "vae_to_split": "table_vae_to_split",
         "split_to_vae": "table_split_to_vae"}
THREATS = {"fgsm": "grey-box fgsm (one FGSM step): the attacker differentiates the classifier only, not the purifier",
           "bpda_pgd": "white-box bpda_pgd (PGD, 10 steps of 0.25·ε, random start): BPDA: forward through the "
                       "purifier, backward as if it were the identity"}


def make_results(pairing: str = "same", attacks=ATTACKS, training=TRAINING, split_ks=SPLIT_KS) -> GridResult:
  """Random results; `split_ks=()` leaves `split_k` out."""
  rng = np.random.default_rng(0)
  purifiers = PURIFIERS if pairing == "same" else PURIFIERS[:2]
  a, t = len(attacks), len(training)
  paired = split_k = None
  accuracy = rng.uniform(0, 1, (a, t, len(purifiers), len(SIZES), len(EPS)))
  undefended = rng.uniform(0, 1, (a, len(EPS)))
  if pairing == "best":
    paired = Paired(300, 100, tuple(PURIFIERS[2:]), rng.uniform(0, 1, (a, t, 2, len(EPS))))
  if split_ks:
    split_k = SplitK(tuple(split_ks), rng.uniform(0, 1, (a, len(split_ks), len(SIZES), len(EPS))))
  figure = Figure(("clean", "adversarial", "no_split"), (0.1, 0.3), 300, 100,
                  rng.uniform(0, 1, (2, 3, 2, 8, 8, 1)).astype(np.float32))
  return GridResult(attack=tuple(attacks), training=tuple(training), purifier=tuple(purifiers),
                    codebook_size=tuple(SIZES), epsilon=tuple(EPS), accuracy=accuracy, undefended=undefended,
                    threat_model={k: THREATS[k] for k in attacks}, pairing=pairing, best_eps_max=0.08,
                    best_size={"no_split": 300, "split": 100}, timing=(dict(what="grid", run_s=1.0),),
                    paired=paired, split_k=split_k, figure=figure, num_test_images=10000,
                    classifier_clean_accuracy=0.9931)


def suffix(i: int, attack: str, mode: str = "clean") -> str:
  return "" if i == 0 and mode == "clean" else f"__{attack}" + ("__adversarial" if mode == "adversarial" else "")


def expected_files(results: dict) -> list[str]:
  names = ["grid.json", "grid.npz", "reconstructions.png"]
  for i, attack in enumerate(results.attack):
    names += [f"table_undefended{suffix(i, attack)}.{ext}" for ext in ("csv", "md")]
    for mode in results.training:
      s = suffix(i, attack, mode)
      for p in results.purifier:
        names += [STEMS[p] + s + ".csv", STEMS[p] + s + ".md"] + ([f"heatmap_{p}{s}.png"] if i == 0 else [])
      if results.paired is not None:
        names += [f"table_best_pair{s}.csv", f"table_best_pair{s}.md"]
      if i == 0:
        names += [f"fig3_accuracy_vs_eps{s}.png", f"fig4_pipelines{s}.png"]
  if len(results.attack) * len(results.training) > 1:
    names += ["table_attacks.csv", "table_attacks.md", "fig_attacks.png"]
  if results.split_k is not None:
    names += ["table_split_k.csv", "table_split_k.md", "fig_split_k.png"]
  if any(a in grid.attacks.ATTACKS and grid.attacks.Attack(a).white_box for a in results.attack):
    names.append("table_masking.md")                     # gradient-masking checks: an attack sees the purifier
  return names


def read_csv(path: str) -> list[list[str]]:
  with open(path, newline="") as f:
    return list(csv.reader(f))


def table_names(workdir) -> list[str]:
  return sorted(n for n in os.listdir(workdir) if n.startswith("table"))


@pytest.mark.slow
@pytest.mark.parametrize("pairing", ["same", "best"])
def test_save_writes_every_file_and_tables_round_trip(tmp_path, pairing):
  results = make_results(pairing)
  report.save(results, str(tmp_path))
  assert sorted(os.listdir(tmp_path)) == sorted(expected_files(results))
  assert "table2_no_split__bpda_pgd.md" in os.listdir(tmp_path)
  assert "table3_split__fgsm__adversarial.csv" in os.listdir(tmp_path)
  assert "heatmap_split__fgsm__adversarial.png" in os.listdir(tmp_path)
  assert "heatmap_split__bpda_pgd.png" not in os.listdir(tmp_path)  # per-slice figures: first attack only
  acc = results.accuracy
  for i, attack in enumerate(ATTACKS):
    for j, mode in enumerate(TRAINING):
      for k, p in enumerate(list(results.purifier)):
        stem = STEMS[p] + suffix(i, attack, mode)
        rows = read_csv(tmp_path / (stem + ".csv"))
        assert rows[0] == ["codebook_size"] + [f"{e:.2f}" for e in EPS]
        assert [int(r[0]) for r in rows[1:]] == SIZES
        np.testing.assert_allclose(np.array([r[1:] for r in rows[1:]], float), acc[i, j, k], atol=5e-5)
        md = (tmp_path / (stem + ".md")).read_text().splitlines()
        assert md[0].startswith("#") and "ε in pixel units (the paper labels them ×10)" in md[2]
        assert THREATS[attack] in md[2] and report.TRAINING[mode] in md[0]
        assert ("white-box" if attack == "bpda_pgd" else "grey-box") in md[0]
        body = [line for line in md if line.startswith("| ") and line[2].isdigit()]
        assert [int(line.split("|")[1]) for line in body] == SIZES
    undefended = read_csv(tmp_path / f"table_undefended{suffix(i, attack)}.csv")
    assert len(undefended) == 2
    np.testing.assert_allclose(np.array(undefended[1][1:], float), results.undefended[i], atol=5e-5)
  assert "Table 2" in (tmp_path / "table2_no_split.md").read_text()
  assert "Table 3" in (tmp_path / "table3_split.md").read_text()
  assert "white-box bpda_pgd" in (tmp_path / "table_undefended__bpda_pgd.md").read_text().splitlines()[0]
  with np.load(tmp_path / "grid.npz") as z:
    assert z["accuracy"].shape == (2, 2, len(list(results.purifier)), 3, 5) and z["accuracy"].dtype == np.float64
    assert z["undefended"].shape == (2, 5) and list(z["attack"]) == ATTACKS and list(z["training"]) == TRAINING
    assert list(z["purifier"]) == list(results.purifier) and list(z["codebook_size"]) == SIZES
    assert list(z["split_k"]) == SPLIT_KS and z["split_k_accuracy"].shape == (2, 3, 3, 5)
    assert z["figure"].shape == results.figure.images.shape
    assert ("paired_accuracy" in z.files) == (pairing == "best")
  if pairing == "best":
    paired = results.paired.accuracy
    for i, attack in enumerate(ATTACKS):
      for j, mode in enumerate(TRAINING):
        rows = read_csv(tmp_path / f"table_best_pair{suffix(i, attack, mode)}.csv")
        assert [r[:3] for r in rows[1:]] == [["vae_to_split", "300", "100"], ["split_to_vae", "300", "100"]]
        np.testing.assert_allclose(np.array([r[3:] for r in rows[1:]], float), paired[i, j], atol=5e-5)


@pytest.mark.slow
@pytest.mark.parametrize("pairing", ["same", "best"])
def test_table_attacks_holds_every_slice_curve(tmp_path, pairing):
  results = make_results(pairing)
  report.save(results, str(tmp_path))
  rows = read_csv(tmp_path / "table_attacks.csv")
  assert rows[0] == ["attack", "threat_model", "training", "purifier", "codebook_size"] + [f"{e:.2f}" for e in EPS]
  # Per slice: undefended, No-Split and Split at their best size, then the two pipelines (paired or best).
  assert len(rows) == 1 + len(ATTACKS) * len(TRAINING) * 5
  by_key = {tuple(r[:5]): np.array(r[5:], float) for r in rows[1:]}
  assert len(by_key) == len(rows) - 1
  acc = results.accuracy
  np.testing.assert_allclose(by_key["fgsm", "grey-box", "clean", "none", "-"], results.undefended[0], atol=5e-5)
  np.testing.assert_allclose(by_key["bpda_pgd", "white-box", "adversarial", "none", "-"], results.undefended[1],
                             atol=5e-5)
  np.testing.assert_allclose(by_key["bpda_pgd", "white-box", "adversarial", "no_split", "300"], acc[1, 1, 0, 1],
                             atol=5e-5)
  np.testing.assert_allclose(by_key["fgsm", "grey-box", "adversarial", "split", "100"], acc[0, 1, 1, 0], atol=5e-5)
  if pairing == "best":
    np.testing.assert_allclose(by_key["bpda_pgd", "white-box", "clean", "split_to_vae", "N300+S100"],
                               results.paired.accuracy[1, 0, 1], atol=5e-5)
  else:  # unpaired pipelines at their own best size
    best = grid.best_index(acc[1, 0, 3], EPS, 0.08)
    np.testing.assert_allclose(by_key["bpda_pgd", "white-box", "clean", "split_to_vae", str(SIZES[best])],
                               acc[1, 0, 3, best], atol=5e-5)
  md = (tmp_path / "table_attacks.md").read_text()
  assert THREATS["fgsm"] in md and THREATS["bpda_pgd"] in md


@pytest.mark.slow
def test_table_split_k_rows_per_attack_k_and_size(tmp_path):
  results = make_results("best")
  report.save(results, str(tmp_path))
  rows = read_csv(tmp_path / "table_split_k.csv")
  assert rows[0] == ["attack", "threat_model", "k", "codebook_size"] + [f"{e:.2f}" for e in EPS]
  assert [r[:4] for r in rows[1:]] == [[a, box, str(k), str(s)] for a, box in zip(ATTACKS, ["grey-box", "white-box"])
                                       for k in SPLIT_KS for s in SIZES]
  np.testing.assert_allclose(np.array([r[4:] for r in rows[1:]], float),
                             results.split_k.accuracy.reshape(-1, len(EPS)), atol=5e-5)


@pytest.mark.slow
def test_single_attack_clean_only_keeps_the_plain_file_names(tmp_path):
  results = make_results("best", attacks=["fgsm"], training=["clean"], split_ks=())
  report.save(results, str(tmp_path))
  assert sorted(os.listdir(tmp_path)) == sorted([
      "grid.json", "grid.npz", "fig3_accuracy_vs_eps.png", "fig4_pipelines.png", "reconstructions.png",
      "table_undefended.csv", "table_undefended.md", "table2_no_split.csv", "table2_no_split.md",
      "heatmap_no_split.png", "table3_split.csv", "table3_split.md", "heatmap_split.png", "table_best_pair.csv",
      "table_best_pair.md"])


@pytest.mark.slow
def test_render_alone_regenerates_identical_tables(tmp_path):
  results = make_results("best")
  first, second = tmp_path / "first", tmp_path / "second"
  report.save(results, str(first))
  second.mkdir()
  for name in ("grid.json", "grid.npz"):
    shutil.copy(first / name, second / name)
  written = report.render(GridResult.load(str(second)), str(second))
  assert sorted(os.path.basename(p) for p in written) == sorted(expected_files(results)[2:])
  assert table_names(first) == table_names(second)
  for name in table_names(first):
    assert (first / name).read_bytes() == (second / name).read_bytes(), name
  # Deleting every output in place and rendering again restores them all.
  for name in os.listdir(first):
    if name not in ("grid.json", "grid.npz"):
      os.remove(first / name)
  report.render(GridResult.load(str(first)), str(first))
  assert sorted(os.listdir(first)) == sorted(expected_files(results))


def test_missing_results_name_the_grid_flag(tmp_path):
  with pytest.raises(VQDefenseError, match="--grid"):
    GridResult.load(str(tmp_path))
  (tmp_path / "grid.json").write_text('{"axes": ')
  (tmp_path / "grid.npz").write_bytes(b"")
  with pytest.raises(VQDefenseError, match="cannot read the grid results"):
    GridResult.load(str(tmp_path))


def test_grid_result_round_trips_through_its_files(tmp_path):
  for pairing, split_ks in (("best", SPLIT_KS), ("same", ())):
    results = make_results(pairing, split_ks=split_ks)
    results.save(str(tmp_path))
    loaded = GridResult.load(str(tmp_path))
    for field in ("attack", "training", "purifier", "codebook_size", "epsilon", "threat_model", "pairing",
                  "best_eps_max", "best_size", "timing", "num_test_images", "classifier_clean_accuracy"):
      assert getattr(loaded, field) == getattr(results, field), field
    np.testing.assert_array_equal(loaded.accuracy, results.accuracy)
    np.testing.assert_array_equal(loaded.undefended, results.undefended)
    np.testing.assert_array_equal(loaded.figure.images, results.figure.images)
    assert (loaded.paired is None) == (pairing == "same") and (loaded.split_k is None) == (not split_ks)
    if loaded.paired is not None:
      np.testing.assert_array_equal(loaded.paired.accuracy, results.paired.accuracy)
      np.testing.assert_array_equal(loaded.split_k.accuracy, results.split_k.accuracy)
  with pytest.raises(VQDefenseError, match="do not match the axes"):
    dataclasses.replace(results, epsilon=EPS[:2])


@pytest.mark.slow
def test_failed_render_leaves_no_partials_and_no_half_outputs(tmp_path, monkeypatch):
  results = make_results("same")

  def broken(*args, **kwargs):
    raise RuntimeError("plot failed")

  fresh, done = tmp_path / "fresh", tmp_path / "done"
  report.save(results, str(done))
  before = {n: (done / n).read_bytes() for n in os.listdir(done)}
  monkeypatch.setattr(draw, "image_grid", broken)
  with pytest.raises(RuntimeError, match="plot failed"):
    report.save(results, str(fresh))
  assert sorted(os.listdir(fresh)) == ["grid.json", "grid.npz"]
  # A failed re-render keeps the previous complete set, byte for byte.
  with pytest.raises(RuntimeError, match="plot failed"):
    report.render(GridResult.load(str(done)), str(done))
  assert {n: (done / n).read_bytes() for n in os.listdir(done)} == before


def test_format_grid_lists_sizes_undefended_pairs_attacks_and_split_k():
  results = make_results("best")
  text = report.format_grid(results)
  for s in SIZES:
    assert f"\n{s} " in text
  assert "undefended" in text and "vae_to_split" in text and "K=300" in text
  assert text.splitlines()[0].startswith(THREATS["fgsm"])
  for attack in ATTACKS:
    assert THREATS[attack] in text
  for mode in TRAINING:
    assert report.TRAINING[mode] in text
  assert "bpda_pgd k=4 K=1000" in text
  results = dataclasses.replace(
      results, epsilon=tuple(i / 100 for i in range(11)), accuracy=np.zeros((2, 2, 2, 3, 11)),
      undefended=np.full((2, 11), 0.5), paired=dataclasses.replace(results.paired, accuracy=np.full((2, 2, 2, 11), 0.25)),
      split_k=dataclasses.replace(results.split_k, accuracy=np.zeros((2, 3, 3, 11))))
  header = [line for line in report.format_grid(results).splitlines() if line.startswith("codebook size")][0]
  assert header.split()[2:] == ["0.00", "0.02", "0.04", "0.06", "0.08", "0.10"]


def test_format_grid_single_slice_has_no_extra_sections():
  results = make_results("same", attacks=["fgsm"], training=["clean"], split_ks=())
  text = report.format_grid(results)
  assert text.count(THREATS["fgsm"]) == 1 and "k×k" not in text


def test_predictions_round_trip_and_give_either_counting_rule(tmp_path):
  r = make_results("same", split_ks=())
  a, t, p, m, e = r.accuracy.shape
  rng = np.random.default_rng(3)
  n = 50
  labels = rng.integers(0, 10, n).astype(np.int8)
  pick = lambda shape, right: np.where(rng.uniform(size=shape) < right, labels, (labels + 1) % 10).astype(np.int8)
  preds = Predictions(labels=labels, clean=pick((n,), 0.9), undefended=pick((a, e, n), 0.7),
                      defended=pick((a, t, p, m, e, n), 0.8))
  und, acc = preds.accuracy("final")
  r = dataclasses.replace(r, accuracy=acc, undefended=und, predictions=preds, counting="final")
  r.save(str(tmp_path))
  loaded = GridResult.load(str(tmp_path))
  assert loaded.counting == "final"
  for f in dataclasses.fields(Predictions):
    np.testing.assert_array_equal(getattr(loaded.predictions, f.name), getattr(preds, f.name))
  und_a, acc_a = loaded.predictions.accuracy("clean_and_final")
  ok = preds.clean == labels
  np.testing.assert_allclose(acc_a, np.mean((preds.defended == labels) & ok, axis=-1))
  assert (acc_a <= acc + 1e-12).all() and (acc_a < acc).any()   # the authors' rule never counts more
  assert (und_a <= und + 1e-12).all()
  with pytest.raises(VQDefenseError, match="unknown counting rule"):
    preds.accuracy("majority")
  with pytest.raises(VQDefenseError, match="per-image predictions"):
    dataclasses.replace(r, predictions=dataclasses.replace(preds, clean=preds.clean[:-1]))
  # Grids saved without the option (or before it existed) load with counting 'final' and no predictions.
  make_results("same", split_ks=()).save(str(tmp_path))
  assert GridResult.load(str(tmp_path)).predictions is None


@pytest.mark.slow
def test_convergence_and_worst_case_rows_round_trip_and_render(tmp_path):
  rng = np.random.default_rng(1)
  attacks = ["fgsm", "bpda_pgd", "worst_case"]
  threats = dict(THREATS, worst_case="per image, the worst case over fgsm, bpda_pgd")
  base = make_results(attacks=attacks[:2], training=["clean"], split_ks=())
  a = len(attacks)
  base = dataclasses.replace(base, attack=tuple(attacks), accuracy=rng.uniform(0, 1, (a,) + base.accuracy.shape[1:]),
                             undefended=rng.uniform(0, 1, (a, len(EPS))))
  conv = Convergence((10, 20, 50), ("bpda_pgd",), rng.uniform(0, 1, (3, 1, 1, 4, len(SIZES), len(EPS))),
                     rng.uniform(0, 1, (3, 1, len(EPS))))
  results = dataclasses.replace(base, threat_model=threats, convergence=conv)
  report.save(results, str(tmp_path))
  loaded = GridResult.load(str(tmp_path))
  assert loaded.convergence.steps == (10, 20, 50) and loaded.convergence.attack == ("bpda_pgd",)
  np.testing.assert_array_equal(loaded.convergence.accuracy, conv.accuracy)
  rows = read_csv(os.path.join(tmp_path, "table_convergence.csv"))
  assert rows[0][:5] == ["attack", "threat_model", "purifier", "codebook_size", "steps"]
  assert len(rows) == 1 + 3 * (1 + len(PURIFIERS))                    # per step count: undefended + each purifier
  undefended = [r for r in rows[1:] if r[2] == "none"]
  assert [r[4] for r in undefended] == ["10", "20", "50"]
  np.testing.assert_allclose([float(v) for v in undefended[1][5:]], conv.undefended[1, 0], atol=5e-5)
  assert os.path.exists(os.path.join(tmp_path, "fig_convergence.png"))
  attack_rows = read_csv(os.path.join(tmp_path, "table_attacks.csv"))
  assert {r[0] for r in attack_rows[1:]} == set(attacks) and any(r[1] == "worst case" for r in attack_rows[1:])


# --- figures as a reader sees them ---------------------------------------------------------------------------

@pytest.fixture
def drawn(monkeypatch):
  """{file name: axes} of every figure `draw.finish` saves (the axes stay readable after the figure is closed)."""
  figures = {}
  finish = draw.finish

  def keep(fig, axes, title, path, *args, **kwargs):
    figures[os.path.basename(path)] = list(axes)
    finish(fig, axes, title, path, *args, **kwargs)

  monkeypatch.setattr(draw, "finish", keep)
  # Not under test here, and the slowest to draw: heatmaps and image grids are left out.
  monkeypatch.setattr(draw, "heatmap", lambda *args, **kwargs: None)
  monkeypatch.setattr(draw, "image_grid", lambda *args, **kwargs: None)
  return figures


def gated_results(attacks=("fgsm", "worst_case")) -> GridResult:
  """Singles and their detect, then purify rows, no pipelines (the detection run's grid)."""
  rng = np.random.default_rng(2)
  purifiers = ("no_split", "split", "detect_no_split", "detect_split")
  a = len(attacks)
  base = make_results("same", attacks=["fgsm"], training=["clean"], split_ks=())
  return dataclasses.replace(base, attack=tuple(attacks), purifier=purifiers,
                             accuracy=rng.uniform(0, 1, (a, 1, 4, len(SIZES), len(EPS))),
                             undefended=rng.uniform(0, 1, (a, len(EPS))), num_test_images=1000,
                             threat_model=dict(THREATS, worst_case="per image, the worst case over fgsm"))


def render_only(results: GridResult, tmp_path) -> list[str]:
  """The names of the files rendering `results` writes."""
  names = []

  def target(name):
    names.append(name)
    return str(tmp_path / name)

  report._render(results, target)
  return sorted(names)


def test_fig4_is_drawn_only_when_the_grid_has_pipelines(tmp_path, drawn):
  names = render_only(gated_results(attacks=("fgsm",)), tmp_path)
  assert "fig3_accuracy_vs_eps.png" in names and not any(n.startswith("fig4") for n in names)
  # Fig. 3 carries the detect, then purify curves instead (the only figure they would otherwise miss).
  labels = [line.get_label() for line in drawn["fig3_accuracy_vs_eps.png"][0].lines]
  assert any(lab.startswith(report.label("detect_split") + " K=") for lab in labels)
  assert not report.has_pipelines(gated_results()) and report.has_pipelines(make_results("same"))
  assert report.has_pipelines(make_results("best"))        # paired pipelines only


def test_gated_curves_are_dashed_and_every_curve_takes_the_one_colour_mapping(tmp_path, drawn):
  render_only(gated_results(), tmp_path)
  colours = {}
  for name in ("fig_attacks.png", "fig3_accuracy_vs_eps.png"):
    for ax in drawn[name]:
      for line in ax.lines:
        if line.get_label().startswith("_"):
          continue
        p = max((p for p in ("none",) + gated_results().purifier
                 if line.get_label().startswith(report.label(p))), key=lambda p: len(report.label(p)))
        assert matplotlib.colors.same_color(line.get_color(), draw.colour(p)), (name, p)
        assert (line.get_linestyle() == "--") == p.startswith("detect_"), (name, p)
        assert (line.get_marker() == "s") == p.startswith("detect_")
        colours.setdefault(p, set()).add(matplotlib.colors.to_hex(line.get_color()))
  assert all(len(c) == 1 for c in colours.values()) and len(colours) == 5   # one colour per series across figures
  assert draw.colour("detect_split") == draw.colour("split") != draw.colour("no_split")


def test_panel_titles_do_not_repeat_the_attack(tmp_path, drawn):
  assert draw.panel_title("worst_case", "worst case") == "worst case"
  assert draw.panel_title("fgsm", "grey-box") == "fgsm (grey-box)"
  render_only(gated_results(), tmp_path)
  titles = [ax.get_title() for ax in drawn["fig_attacks.png"]]
  assert titles == ["fgsm (grey-box)", "worst case"]
  for title in titles:
    words = title.replace("_", " ").replace("(", " ").replace(")", " ").split()
    assert len(words) == len(set(words)), title


def test_accuracy_curves_carry_their_standard_error(tmp_path, drawn):
  results = gated_results(attacks=("fgsm",))
  render_only(results, tmp_path)
  (ax,) = drawn["fig3_accuracy_vs_eps.png"]
  bands = ax.collections
  assert len(bands) == len([line for line in ax.lines if not line.get_label().startswith("_")])
  top = bands[0].get_paths()[0].vertices[:, 1].max()
  acc = results.undefended[0]
  assert top == pytest.approx((acc + np.sqrt(acc * (1 - acc) / 1000)).max(), abs=1e-9)


def test_reconstructions_mark_an_epsilon_outside_the_grid(tmp_path, monkeypatch, drawn):
  shown = {}
  monkeypatch.setattr(draw, "image_grid", lambda images, rows, blocks, title, path, **kw: shown.update(
      blocks=blocks, title=title))
  results = make_results("same", attacks=["fgsm"], training=["clean"], split_ks=())
  report._render(results, lambda name: str(tmp_path / name))
  assert shown["blocks"] == ["ε=0.1", "ε=0.3"] and "*" not in shown["title"]          # both in EPS
  results = dataclasses.replace(results, figure=dataclasses.replace(results.figure, epsilons=(0.1, 0.25)))
  report._render(results, lambda name: str(tmp_path / name))
  assert shown["blocks"] == ["ε=0.1", "ε=0.25*"] and "0.25) is not one of the grid's ε" in shown["title"]


def test_the_quick_demo_figure_shows_epsilons_of_its_grid():
  from configs.purify import quick
  c = quick.get_config()
  assert all(report.in_grid(e, c.attack.epsilons) for e in c.eval.figure_epsilons)


def test_one_colour_per_name_and_a_stable_one_for_new_names():
  assert draw.colour("none") == "black" and draw.colour("p0.1", "detector") != draw.colour("none", "detector")
  assert draw.colour("brand_new") == draw.colour("brand_new") in draw.SPARE_COLOURS
  assert len(set(draw.COLOURS[k] for k in draw.COLOURS if ":" not in k)) == len([k for k in draw.COLOURS
                                                                                 if ":" not in k])
