"""Blur + JPEG augmentation: p = 0 changes nothing, the draws follow their distributions, the codec is
Pillow's real one (error falls as quality rises), blur is CNNDetection's filter, and batches are a pure
function of (seed, step) inside `HostTransform`."""

import io

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage, stats

from vqdefense_jax.core import training
from vqdefense_jax.core.errors import VQDefenseError
from vqdefense_jax.detect import augment


def _textured(n: int, h: int = 32, w: int = 32, c: int = 1, seed: int = 0) -> np.ndarray:
  """Smooth waves plus fine noise in [0, 1]: detail for JPEG to lose and for blur to smooth."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:h, :w] / 4.0
  waves_NxHxWxC = np.sin(xx[None, :, :, None] + rng.uniform(0, 6, (n, 1, 1, c))) * np.cos(yy[None, :, :, None])
  x = 0.5 + 0.3 * waves_NxHxWxC + 0.15 * rng.uniform(-1, 1, (n, h, w, c))
  return np.clip(x, 0, 1).astype(np.float32)


def _pillow_round_trip(x_HxWxC: np.ndarray, quality: int) -> np.ndarray:
  """The codec by hand, independently of `augment.jpeg`: uint8 pixels → JPEG bytes → uint8 pixels."""
  u8 = np.rint(x_HxWxC * 255).astype(np.uint8)
  buf = io.BytesIO()
  Image.fromarray(u8[..., 0] if u8.shape[-1] == 1 else u8).save(buf, format="JPEG", quality=quality)
  return np.asarray(Image.open(buf)).reshape(x_HxWxC.shape)


def _total_variation(x: np.ndarray) -> float:
  return float(np.abs(np.diff(x, axis=1)).sum() + np.abs(np.diff(x, axis=2)).sum())


# --- the transform --------------------------------------------------------------------------------------


def test_p_zero_is_the_identity_bit_for_bit():
  x, y = _textured(8, c=3), np.arange(8)
  out, y_out = augment.Augment(0.0, 0.0)((x, y), np.random.default_rng(0))
  assert out.dtype == np.float32 and out.shape == x.shape and out is not x
  assert np.array_equal(out.view(np.uint32), x.view(np.uint32)) and y_out is y


def test_p_one_always_applies_blur_then_jpeg():
  x, y = _textured(12), np.zeros(12)
  aug = augment.Augment(1.0, 1.0)
  draws = aug.draw(12, np.random.default_rng(3))
  assert draws.blur_N.all() and draws.jpeg_N.all()
  out, _ = aug((x, y), np.random.default_rng(3))
  assert all(not np.array_equal(o, i) for o, i in zip(out, x))
  # The order is blur first, then JPEG (CNNDetection's `data_augment`): the result is jpeg(blur(x)) exactly.
  np.testing.assert_array_equal(out, augment.jpeg(augment.blur(x, draws.sigma_N), draws.quality_N))
  assert not np.array_equal(out, augment.blur(augment.jpeg(x, draws.quality_N), draws.sigma_N))


def test_half_of_the_images_are_augmented_at_p_one_half():
  n = 2000
  draws = augment.Augment(0.5, 0.5).draw(n, np.random.default_rng(4))
  bound = 5 * np.sqrt(n * 0.5 * 0.5)   # 5 binomial standard deviations (≈ 112)
  for applied in (draws.blur_N, draws.jpeg_N):
    assert abs(applied.sum() - n / 2) < bound
  assert abs((draws.blur_N & draws.jpeg_N).sum() - n / 4) < 5 * np.sqrt(n * 0.25 * 0.75)   # independent
  rare = augment.Augment(0.1, 0.1).draw(n, np.random.default_rng(4)).blur_N.sum()
  assert abs(rare - n / 10) < 5 * np.sqrt(n * 0.1 * 0.9)


def test_sigmas_and_qualities_follow_their_uniform_distributions():
  n = 2000
  draws = augment.Augment(0.5, 0.5, sigma_max=3.0, quality_min=30, quality_max=100).draw(n, np.random.default_rng(5))
  assert draws.sigma_N.min() >= 0 and draws.sigma_N.max() <= 3.0
  assert stats.kstest(draws.sigma_N, stats.uniform(0, 3.0).cdf).pvalue > 1e-3
  q = draws.quality_N
  assert np.issubdtype(q.dtype, np.integer) and q.min() == 30 and q.max() == 100   # both ends are reached
  counts = np.bincount(q - 30, minlength=71)
  assert len(counts) == 71 and stats.chisquare(counts).pvalue > 1e-3
  narrow = augment.Augment(1, 1, sigma_max=0.0, quality_min=75, quality_max=75).draw(50, np.random.default_rng(0))
  assert np.all(narrow.sigma_N == 0) and np.all(narrow.quality_N == 75)


def test_the_same_rng_gives_the_same_batch():
  x, y = _textured(16), np.arange(16)
  aug = augment.Augment(0.5, 0.5)
  a, _ = aug((x, y), np.random.default_rng([7, 3]))
  b, _ = aug((x, y), np.random.default_rng([7, 3]))
  c, _ = aug((x, y), np.random.default_rng([7, 4]))
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_inside_host_transform_batches_are_a_pure_function_of_seed_and_step():
  x_all, y_all = _textured(64, 16, 16), np.arange(64) % 2
  index = training.IndexBatches(seed=2, num_examples=64, batch_size=16)
  make = lambda seed: training.HostTransform(lambda step: (x_all[index(step)], y_all[index(step)]),
                                             augment.Augment(0.5, 0.5), seed=seed)
  first, again = make(9), make(9)
  for step in (0, 3, 5):   # out of order, from two separately built pipelines
    (xa, ya), (xb, yb) = first(step), again(step)
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, yb)
  np.testing.assert_array_equal(ya, y_all[index(5)])   # labels untouched
  assert not np.array_equal(first(3)[0], first(4)[0]) and not np.array_equal(first(3)[0], make(10)(3)[0])
  assert not np.array_equal(first(3)[0], x_all[index(3)])   # something was augmented


# --- the codec ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("c", [1, 3])
def test_jpeg_is_pillows_real_codec(c):
  x = _textured(2, 24, 20, c)   # not a multiple of the 8×8 blocks
  out = augment.jpeg(x, 50)
  assert out.shape == x.shape and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
  assert np.abs(out - x).max() > 2 / 255   # really re-encoded, not just quantised to 8 bits
  for i in range(2):   # the very pixels Pillow decodes from bytes it encodes itself
    np.testing.assert_array_equal(np.rint(out[i] * 255).astype(np.uint8), _pillow_round_trip(x[i], 50))
    np.testing.assert_array_equal(out[i], _pillow_round_trip(x[i], 50).astype(np.float32) / np.float32(255))


@pytest.mark.parametrize("c", [1, 3])
def test_jpeg_error_falls_as_quality_rises(c):
  x = _textured(1, 32, 32, c, seed=1)
  rmse = {q: float(np.sqrt(np.mean((augment.jpeg(x, q) - x) ** 2))) for q in (30, 70, 95)}
  assert rmse[30] > rmse[70] > rmse[95] > 0


def test_jpeg_takes_one_quality_per_image():
  x = _textured(3, c=3)
  out = augment.jpeg(x, np.array([30, 60, 100]))
  for i, q in enumerate((30, 60, 100)):
    np.testing.assert_array_equal(out[i:i + 1], augment.jpeg(x[i:i + 1], q))


@pytest.mark.parametrize("x, quality, match", [
    (np.zeros((2, 8, 8, 2), np.float32), 50, "C=2"),
    (np.zeros((8, 8, 3), np.float32), 50, r"\(N, H, W, C\)"),
    (np.zeros((1, 8, 8, 1), np.uint8), 50, "float images"),
    (np.full((1, 8, 8, 1), -1.0, np.float32), 50, r"in \[0, 1\]"),
    (np.full((1, 8, 8, 1), np.nan, np.float32), 50, "non-finite"),
    (np.zeros((1, 8, 8, 1), np.float32), 0, "integer in 1..100"),
    (np.zeros((1, 8, 8, 1), np.float32), 101, "integer in 1..100"),
    (np.zeros((1, 8, 8, 1), np.float32), 50.5, "integer in 1..100"),
    (np.zeros((2, 8, 8, 1), np.float32), [50, 60, 70], "one value per image"),
])
def test_jpeg_rejects_bad_input(x, quality, match):
  with pytest.raises(VQDefenseError, match=match):
    augment.jpeg(x, quality)


# --- the blur -------------------------------------------------------------------------------------------


def test_blur_with_sigma_zero_is_the_identity_and_otherwise_smooths():
  x = _textured(3, c=3)
  np.testing.assert_array_equal(augment.blur(x, 0.0), x)
  out = augment.blur(x, np.array([0.0, 0.5, 2.0]))
  np.testing.assert_array_equal(out[0], x[0])
  tv = [_total_variation(o[None]) for o in out]
  assert tv[0] > tv[1] > tv[2]
  assert out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1


def test_blur_is_cnndetections_per_channel_gaussian_filter():
  x = _textured(2, 20, 28, 3)
  out = augment.blur(x, np.array([1.0, 2.5]))
  for i, sigma in enumerate((1.0, 2.5)):
    for ch in range(3):   # their gaussian_blur: gaussian_filter(img[:, :, c], sigma) for each channel
      np.testing.assert_array_equal(out[i, :, :, ch], ndimage.gaussian_filter(x[i, :, :, ch], sigma))


def test_blur_rejects_negative_sigma():
  with pytest.raises(VQDefenseError, match="sigma"):
    augment.blur(_textured(2), np.array([1.0, -0.5]))


# --- arguments ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, match", [
    (dict(p_blur=-0.1, p_jpeg=0.5), "p_blur"),
    (dict(p_blur=0.5, p_jpeg=1.5), "p_jpeg"),
    (dict(p_blur=float("nan"), p_jpeg=0.5), "p_blur"),
    (dict(p_blur=0.5, p_jpeg=0.5, sigma_max=-1.0), "sigma_max"),
    (dict(p_blur=0.5, p_jpeg=0.5, quality_min=0), "quality_min"),
    (dict(p_blur=0.5, p_jpeg=0.5, quality_min=90, quality_max=80), "quality_min"),
    (dict(p_blur=0.5, p_jpeg=0.5, quality_max=101), "quality_max"),
    (dict(p_blur=0.5, p_jpeg=0.5, quality_min=30.5), "quality_min"),
])
def test_augment_rejects_bad_arguments(kwargs, match):
  with pytest.raises(VQDefenseError, match=match):
    augment.Augment(**kwargs)


def test_augment_rejects_a_malformed_batch():
  with pytest.raises(VQDefenseError, match="batch"):
    augment.Augment(0.5, 0.5)((_textured(4), np.zeros(3)), np.random.default_rng(0))
