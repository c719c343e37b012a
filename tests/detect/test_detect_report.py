"""detect/report.py: the AP figure as a reader sees it, drawn from a synthetic result (no training)."""

import os

import matplotlib
import numpy as np
import pytest

from vqdefense_jax.core import report as draw
from vqdefense_jax.detect import report
from vqdefense_jax.detect.results import DetectionResult

SOURCES = ["alae_samples", "dcgan_samples", "fgsm_eps0.1"]
VARIANTS = ["none", "p0.5", "adversarial"]


def make_result(num_real: int = 40, num_fakes: int = 40) -> DetectionResult:
  rng = np.random.default_rng(0)
  per = lambda: {v: {s: float(rng.uniform(0.5, 1)) for s in SOURCES} for v in VARIANTS}
  images = lambda: rng.uniform(0, 1, (2, 8, 8, 1)).astype(np.float32)
  return DetectionResult(
      sources=SOURCES, variants=VARIANTS, num_real=num_real, num_fakes=num_fakes, threshold=0.5, ap=per(),
      accuracy=per(), real_accuracy={v: 0.9 for v in VARIANTS}, fake_accuracy=per(),
      ap_blur={v: {"2": 0.7} for v in VARIANTS}, ap_jpeg={v: {"75": 0.8} for v in VARIANTS}, detector_params=123,
      robustness_source="alae_samples", figures={"reals": images(), **{f"fakes/{s}": images() for s in SOURCES}})


@pytest.fixture
def ap_axes(tmp_path, monkeypatch):
  """The axes of fig_detection_ap.png once drawn (image grids, not under test, left out)."""
  kept = {}
  finish = draw.finish

  def keep(fig, axes, title, path, *args, **kwargs):
    kept[os.path.basename(path)] = axes[0]
    finish(fig, axes, title, path, *args, **kwargs)

  monkeypatch.setattr(draw, "finish", keep)
  monkeypatch.setattr(draw, "image_grid", lambda *args, **kwargs: None)

  def draw_it(result):
    report.render(result, lambda name: str(tmp_path / name))
    assert os.path.exists(tmp_path / "fig_detection_ap.png")
    return kept["fig_detection_ap.png"]
  return draw_it


def test_ap_figure_has_a_chance_line_at_the_fakes_share(ap_axes):
  ax = ap_axes(make_result())
  chance = [line for line in ax.lines if line.get_label().startswith("chance")]
  assert len(chance) == 1 and set(chance[0].get_ydata()) == {0.5}
  ax = ap_axes(make_result(num_real=30, num_fakes=10))
  (chance,) = [line for line in ax.lines if line.get_label().startswith("chance")]
  assert set(chance.get_ydata()) == {0.25}


def test_ap_legend_sits_outside_the_bars_and_bars_take_the_detectors_colours(ap_axes):
  ax = ap_axes(make_result())
  legend = ax.get_legend() or ax.figure.legends[0]
  assert legend is not None
  # The legend is anchored right of the axes: it can cover no bar.
  assert legend.get_bbox_to_anchor().x0 >= ax.get_window_extent().x1 - 1
  for container, v in zip(ax.containers, VARIANTS):
    assert container.get_label() == f"detector {v}"
    assert all(matplotlib.colors.same_color(bar.get_facecolor(), draw.colour(v, "detector")) for bar in container)
  assert ax.get_ylim()[1] <= 1.1
