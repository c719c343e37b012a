"""restore/report.py: the quality and Grad-CAM figures as a reader sees them, from a synthetic result (no
training)."""

import os

import matplotlib
import numpy as np
import pytest

from vqdefense_jax.core import report as draw
from vqdefense_jax.restore import report
from vqdefense_jax.restore.results import RestorationResult

VARIANTS = ["cbam", "cbam_l1only"]
LAYERS = ["block_0", "block_1"]


def make_result(box: bool = True) -> RestorationResult:
  rng = np.random.default_rng(0)
  k, hw = 3, 8
  img = lambda: rng.uniform(0, 1, (k, hw, hw, 1)).astype(np.float32)
  quality = lambda base: {v: {"mosaic": {"box": base, "image": base + 5}, "restored": {"box": base + 0.01 * (i + 1),
                                                                                       "image": base + 6}}
                          for i, v in enumerate(VARIANTS)}
  mask = np.zeros((k, hw, hw), np.float32)
  mask[:, 2:5, 3:7] = 1
  figures = {"clean": img(), "mosaic": img(), **{f"restored/{v}": img() for v in VARIANTS},
             **{f"maps/{v}": rng.uniform(0, 1, (k, len(LAYERS), hw, hw)).astype(np.float32) for v in VARIANTS},
             **{f"classifier/{name}/{part}": img()[..., 0] if part == "cam" else img()
                for name in ("clean", "adversarial", "purified") for part in ("x", "cam")}}
  if box:
    figures["box"] = mask
  return RestorationResult(
      variants=VARIANTS, num_images=10, image_shape=[hw, hw, 1], mosaic={"block": 2, "region": "box"},
      box_area=0.2, psnr=quality(14.0), ssim=quality(0.5), gradcam_concentration={v: 1.2 for v in VARIANTS},
      gradcam_concentration_layers={v: [1.1, 1.3] for v in VARIANTS}, gradcam_defined={v: 10 for v in VARIANTS},
      realness={v: 0.1 for v in VARIANTS}, layers=LAYERS,
      accuracy={"clean": 0.9, "mosaic": 0.8, "restored": {v: 0.85 for v in VARIANTS}},
      classifier_gradcam={"epsilon": 0.2, "purified_by": "restorer_cbam", "layer": "Conv_1", "target": "true class",
                          "accuracy": {"clean": 0.9, "adversarial": 0.3, "purified": 0.6}},
      figures=figures)


@pytest.fixture
def drawn(tmp_path, monkeypatch):
  """Renders a result; returns ({figure: axes} of the charts, {figure: the image grid's arguments})."""
  charts, grids = {}, {}
  finish = draw.finish

  def keep(fig, axes, title, path, *args, **kwargs):
    charts[os.path.basename(path)] = list(axes)
    finish(fig, axes, title, path, *args, **kwargs)

  def keep_grid(images, rows, blocks, title, path, **kwargs):
    grids[os.path.basename(path)] = dict(rows=rows, title=title, **kwargs)

  monkeypatch.setattr(draw, "finish", keep)
  monkeypatch.setattr(draw, "image_grid", keep_grid)

  def render(result):
    report.render(result, lambda name: str(tmp_path / name))
    return charts, grids
  return render


def test_quality_bars_have_units_values_colours_and_no_legend_over_them(drawn):
  charts, _ = drawn(make_result())
  psnr, ssim = charts["fig_quality.png"]
  assert psnr.get_ylabel() == "PSNR (dB)" and ssim.get_ylabel() == "SSIM"
  assert psnr.get_legend() is None and ssim.get_legend() is None
  # Every bar's value is written on it: 0.01 dB apart still reads as two numbers.
  assert [t.get_text() for t in psnr.texts] == ["14.00", "14.01", "14.02"]
  assert [t.get_text() for t in ssim.texts] == ["0.500", "0.510", "0.520"]
  for container, name in zip(psnr.containers, ["mosaic"] + VARIANTS):
    assert matplotlib.colors.same_color(container[0].get_facecolor(), draw.colour(name, "restorer"))


def test_gradcam_figures_draw_the_box_and_a_colour_bar(drawn):
  _, grids = drawn(make_result())
  for name in ("fig_gradcam.png", "fig_gradcam_layers.png"):
    assert grids[name]["colorbar"] == report.CAM_BAR and grids[name]["boxes_NxHxW"] is not None, name
    assert "mosaic box" in grids[name]["title"]
  classifier = grids["fig_gradcam_classifier.png"]
  assert classifier["colorbar"] == report.CAM_BAR
  assert "ε = 0.2" in classifier["title"] and "restorer_cbam" in classifier["title"]
  assert "FGSM ε=0.2" in classifier["rows"]
  # A restoration.npz saved before the box was: the figure goes without the outline, and says nothing of it.
  _, grids = drawn(make_result(box=False))
  assert grids["fig_gradcam.png"]["boxes_NxHxW"] is None and "mosaic box" not in grids["fig_gradcam.png"]["title"]


def test_image_grid_outlines_each_box_and_adds_a_colour_bar(tmp_path, monkeypatch):
  mask = np.zeros((2, 8, 8))
  mask[0, 1:3, 2:6] = 1
  mask[1, 4:8, 0:2] = 1
  fig_of, close = {}, draw.plt.close
  monkeypatch.setattr(draw.plt, "close", lambda fig: fig_of.setdefault("fig", fig))  # keep the figure to read it
  draw.image_grid(np.zeros((1, 2, 2, 8, 8, 1)), ["a", "b"], [""], "t", str(tmp_path / "g.png"), boxes_NxHxW=mask,
                  colorbar=("jet", "map"))
  fig = fig_of["fig"]
  image_axes = [ax for ax in fig.axes if ax.images]
  assert len(fig.axes) == len(image_axes) + 1                     # the colour bar's axes
  rect = image_axes[0].patches[0]
  assert (rect.get_x(), rect.get_y(), rect.get_width(), rect.get_height()) == (1.5, 0.5, 4, 2)
  assert all(len(ax.patches) == 1 for ax in image_axes)
  close(fig)
