"""report: grid tables and figures written from a synthetic results dict (no training)."""

import csv
import os
import shutil

import numpy as np
import pytest

from vqdefense_jax import plots
from vqdefense_jax import report
from vqdefense_jax.errors import VQDefenseError

PURIFIERS = ["no_split", "split", "vae_to_split", "split_to_vae"]
SIZES = [100, 300, 1000]
EPS = [0.0, 0.02, 0.05, 0.1, 0.3]
STEMS = {"no_split": "table2_no_split", "split": "table3_split", "vae_to_split": "table_vae_to_split",
         "split_to_vae": "table_split_to_vae"}


def make_results(pairing: str = "same") -> tuple[dict, np.ndarray]:
  rng = np.random.default_rng(0)
  purifiers = PURIFIERS if pairing == "same" else PURIFIERS[:2]
  results = dict(axes=dict(purifier=purifiers, codebook_size=SIZES, epsilon=EPS),
                 accuracy=rng.uniform(0, 1, (len(purifiers), len(SIZES), len(EPS))).tolist(),
                 undefended=rng.uniform(0, 1, len(EPS)).tolist(), pairing=pairing, best_eps_max=0.08,
                 best_size={"no_split": 300, "split": 100}, threat_model="grey-box FGSM: test",
                 num_test_images=10000, classifier_clean_accuracy=0.9931, timing=[dict(what="grid", run_s=1.0)],
                 figure=dict(rows=["clean", "adversarial", "no_split"], epsilons=[0.1, 0.3], no_split_size=300,
                             split_size=100))
  if pairing == "best":
    results["paired"] = dict(no_split_size=300, split_size=100,
                             accuracy={p: rng.uniform(0, 1, len(EPS)).tolist() for p in PURIFIERS[2:]})
  return results, rng.uniform(0, 1, (2, 3, 2, 8, 8, 1)).astype(np.float32)


def expected_files(results: dict) -> list[str]:
  names = ["grid.json", "grid.npz", "fig3_accuracy_vs_eps.png", "fig4_pipelines.png", "reconstructions.png",
           "table_undefended.csv", "table_undefended.md"]
  for p in results["axes"]["purifier"]:
    names += [STEMS[p] + ".csv", STEMS[p] + ".md", f"heatmap_{p}.png"]
  if "paired" in results:
    names += ["table_best_pair.csv", "table_best_pair.md"]
  return names


def read_csv(path: str) -> list[list[str]]:
  with open(path, newline="") as f:
    return list(csv.reader(f))


def table_names(workdir) -> list[str]:
  return sorted(n for n in os.listdir(workdir) if n.startswith("table"))


@pytest.mark.parametrize("pairing", ["same", "best"])
def test_save_writes_every_file_and_tables_round_trip(tmp_path, pairing):
  results, figure = make_results(pairing)
  report.save(results, figure, str(tmp_path))
  for name in expected_files(results):
    assert (tmp_path / name).exists(), name
  assert not [n for n in os.listdir(tmp_path) if n.startswith(".partial-")]
  for i, p in enumerate(results["axes"]["purifier"]):
    rows = read_csv(tmp_path / (STEMS[p] + ".csv"))
    assert rows[0] == ["codebook_size"] + [f"{e:.2f}" for e in EPS]
    assert [int(r[0]) for r in rows[1:]] == SIZES
    np.testing.assert_allclose(np.array([r[1:] for r in rows[1:]], float), results["accuracy"][i], atol=5e-5)
    md = (tmp_path / (STEMS[p] + ".md")).read_text().splitlines()
    assert md[0].startswith("#") and "ε in pixel units (the paper labels them ×10)" in md[2]
    body = [line for line in md if line.startswith("| ") and line[2].isdigit()]
    assert [int(line.split("|")[1]) for line in body] == SIZES
  assert "Table 2" in (tmp_path / "table2_no_split.md").read_text()
  assert "Table 3" in (tmp_path / "table3_split.md").read_text()
  undefended = read_csv(tmp_path / "table_undefended.csv")
  assert len(undefended) == 2
  np.testing.assert_allclose(np.array(undefended[1][1:], float), results["undefended"], atol=5e-5)
  with np.load(tmp_path / "grid.npz") as z:
    assert z["accuracy"].shape == (len(results["axes"]["purifier"]), 3, 5) and z["accuracy"].dtype == np.float64
    assert list(z["purifier"]) == results["axes"]["purifier"] and list(z["codebook_size"]) == SIZES
    assert z["figure"].shape == figure.shape
    assert ("paired_accuracy" in z.files) == (pairing == "best")
  if pairing == "best":
    rows = read_csv(tmp_path / "table_best_pair.csv")
    assert [r[:3] for r in rows[1:]] == [["vae_to_split", "300", "100"], ["split_to_vae", "300", "100"]]
    np.testing.assert_allclose(np.array([r[3:] for r in rows[1:]], float),
                               list(results["paired"]["accuracy"].values()), atol=5e-5)


def test_render_alone_regenerates_identical_tables(tmp_path):
  results, figure = make_results("best")
  first, second = tmp_path / "first", tmp_path / "second"
  report.save(results, figure, str(first))
  second.mkdir()
  for name in ("grid.json", "grid.npz"):
    shutil.copy(first / name, second / name)
  written = report.render(str(second))
  assert sorted(os.path.basename(p) for p in written) == sorted(expected_files(results)[2:])
  assert table_names(first) == table_names(second)
  for name in table_names(first):
    assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_missing_results_name_the_grid_flag(tmp_path):
  with pytest.raises(VQDefenseError, match="--grid"):
    report.render(str(tmp_path))


def test_failed_render_leaves_no_partials_and_no_half_outputs(tmp_path, monkeypatch):
  results, figure = make_results("same")

  def broken(*args, **kwargs):
    raise RuntimeError("plot failed")

  fresh, done = tmp_path / "fresh", tmp_path / "done"
  report.save(results, figure, str(done))
  before = {n: (done / n).read_bytes() for n in os.listdir(done)}
  monkeypatch.setattr(plots, "reconstructions", broken)
  with pytest.raises(RuntimeError, match="plot failed"):
    report.save(results, figure, str(fresh))
  assert sorted(os.listdir(fresh)) == ["grid.json", "grid.npz"]
  # A failed re-render keeps the previous complete set, byte for byte.
  with pytest.raises(RuntimeError, match="plot failed"):
    report.render(str(done))
  assert {n: (done / n).read_bytes() for n in os.listdir(done)} == before


def test_format_grid_lists_sizes_undefended_and_pairs():
  results, _ = make_results("best")
  text = report.format_grid(results)
  for s in SIZES:
    assert f"\n{s} " in text
  assert "undefended" in text and "vae_to_split" in text and "K=300" in text
  results["axes"]["epsilon"] = [i / 100 for i in range(11)]
  results["accuracy"] = np.zeros((2, 3, 11)).tolist()
  results["undefended"] = [0.5] * 11
  results["paired"]["accuracy"] = {"vae_to_split": [0.25] * 11}
  header = [line for line in report.format_grid(results).splitlines() if line.startswith("codebook size")][0]
  assert header.split()[2:] == ["0.00", "0.02", "0.04", "0.06", "0.08", "0.10"]
