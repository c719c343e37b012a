"""Blur + JPEG augmentation of Wang et al. (2020), on the host, as a pure function of a numpy Generator.

Per image, independently: with probability p_blur a Gaussian blur with σ ~ U[0, σ_max]; then, with
probability p_jpeg, a real JPEG round trip at quality q ~ U{q_min, …, q_max}. Blur comes first, as in
CNNDetection's `data_augment` (data/datasets.py, lines 67-79); the paper trains with p ∈ {0, 0.1, 0.5},
σ_max = 3 and q ∈ {30, …, 100}.

The codec is Pillow's libjpeg, not an approximation in JAX: the detector must learn to ignore the artefacts
real compressors leave (8×8 blocks, chroma subsampling, quantised DCT coefficients), and only the real codec
leaves exactly those. That is why this runs on the host, inside `core.training.HostTransform`, which hands
it `np.random.default_rng([seed, step])`: every batch stays a pure function of (seed, step).
"""

import dataclasses
import io

import numpy as np
from PIL import Image
from scipy import ndimage

from vqdefense_jax.core.errors import VQDefenseError

QUALITY_RANGE = (1, 100)  # what Pillow's `quality=` accepts and means


def _images(x_NxHxWxC, what: str) -> np.ndarray:
  x = np.asarray(x_NxHxWxC)
  if x.ndim != 4:
    raise VQDefenseError(f"{what} expects images shaped (N, H, W, C), got shape {x.shape}")
  if not np.issubdtype(x.dtype, np.floating):
    raise VQDefenseError(f"{what} expects float images in [0, 1], got dtype {x.dtype}")
  return x.astype(np.float32, copy=False)


def _per_image(value, n: int, what: str) -> np.ndarray:
  """A scalar or one value per image, as an (N,) array."""
  v = np.asarray(value)
  if v.ndim == 0:
    return np.full(n, v)
  if v.shape != (n,):
    raise VQDefenseError(f"{what} must be a scalar or one value per image ({n}), got shape {v.shape}")
  return v


def jpeg(x_NxHxWxC, quality) -> np.ndarray:
  """Each image encoded to JPEG bytes by Pillow at `quality` (a scalar or one per image) and decoded again.

  C = 1 is coded as greyscale ('L'), C = 3 as RGB with Pillow's defaults (4:2:0 chroma subsampling, as
  CNNDetection's `pil_jpg`). Pixels are rounded to 8 bits first, as every real JPEG file holds them; values
  that round outside 0…255 are an error rather than silently clipped (images in [-1, 1] by mistake).
  Returns float32 in [0, 1] (multiples of 1/255), the shape of the input.
  """
  x = _images(x_NxHxWxC, "jpeg")
  n, _, _, c = x.shape
  if c not in (1, 3):
    raise VQDefenseError(f"jpeg codes greyscale (C=1) or RGB (C=3) images, got C={c}")
  q_N = _per_image(quality, n, "jpeg quality")
  lo, hi = QUALITY_RANGE
  if q_N.size and not (np.all(np.isfinite(q_N)) and np.all(q_N == np.round(q_N)) and lo <= q_N.min()
                       and q_N.max() <= hi):
    raise VQDefenseError(f"jpeg quality must be an integer in {lo}..{hi}, got {np.unique(q_N)[:5]}")
  if not np.all(np.isfinite(x)):
    raise VQDefenseError("jpeg got non-finite pixel values")
  levels = np.rint(x * 255.0)
  if levels.size and (levels.min() < 0 or levels.max() > 255):
    raise VQDefenseError(f"jpeg expects pixels in [0, 1], got values in [{x.min():.4g}, {x.max():.4g}]")
  u8_NxHxWxC = levels.astype(np.uint8)
  out = np.empty(x.shape, np.float32)
  for i in range(n):
    pixels = u8_NxHxWxC[i, :, :, 0] if c == 1 else u8_NxHxWxC[i]
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=int(q_N[i]))
    decoded = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
    out[i] = decoded.reshape(x.shape[1:]).astype(np.float32) / np.float32(255.0)
  return out


def blur(x_NxHxWxC, sigma) -> np.ndarray:
  """Gaussian blur of each image and channel over H and W, σ a scalar or one per image (σ = 0: unchanged).

  The filter is CNNDetection's: `scipy.ndimage.gaussian_filter` on each channel, default mode 'reflect'
  and truncate 4 (data/datasets.py, lines 97-100). Theirs writes into the uint8 image, which floors the
  result to whole grey levels; ours stays float (a following JPEG rounds it to 8 bits anyway).
  """
  x = _images(x_NxHxWxC, "blur")
  s_N = _per_image(sigma, x.shape[0], "blur sigma").astype(np.float64)
  if not np.all(np.isfinite(s_N) & (s_N >= 0)):
    raise VQDefenseError(f"blur sigma must be finite and >= 0, got {s_N[~(np.isfinite(s_N) & (s_N >= 0))][:5]}")
  out = x.copy()
  for i in np.flatnonzero(s_N > 0):
    out[i] = ndimage.gaussian_filter(x[i], sigma=(s_N[i], s_N[i], 0.0), mode="reflect")  # σ 0: channels apart
  return out


@dataclasses.dataclass(frozen=True)
class Draws:
  """What `Augment.draw` decided for each image of a batch. `sigma_N` and `quality_N` are drawn for every
  image, so the stream of random numbers does not depend on p; they are used only where `blur_N`/`jpeg_N`."""
  blur_N: np.ndarray      # bool: this image is blurred
  sigma_N: np.ndarray     # float64 in [0, sigma_max)
  jpeg_N: np.ndarray      # bool: this image is JPEG re-encoded (after the blur)
  quality_N: np.ndarray   # int64 in quality_min..quality_max


@dataclasses.dataclass(frozen=True)
class Augment:
  """Wang et al.'s augmentation as a `HostTransform` transform: `(x_NxHxWxC, y_N), rng -> (x_aug, y_N)`.

  Hashable and frozen like the other configuration objects here; all randomness comes from `rng`, so the
  same Generator state gives the same batch bit for bit. Labels pass through unchanged.
  """
  p_blur: float
  p_jpeg: float
  sigma_max: float = 3.0
  quality_min: int = 30
  quality_max: int = 100

  def __post_init__(self):
    for name in ("p_blur", "p_jpeg"):
      p = getattr(self, name)
      if not (isinstance(p, (int, float, np.number)) and 0 <= p <= 1):
        raise VQDefenseError(f"Augment.{name} must be a probability in [0, 1], got {p!r}")
    if not (isinstance(self.sigma_max, (int, float, np.number)) and 0 <= self.sigma_max < np.inf):
      raise VQDefenseError(f"Augment.sigma_max must be finite and >= 0, got {self.sigma_max!r}")
    lo, hi = QUALITY_RANGE
    qs = (self.quality_min, self.quality_max)
    if not (all(isinstance(q, (int, np.integer)) and not isinstance(q, bool) for q in qs)
            and lo <= self.quality_min <= self.quality_max <= hi):
      raise VQDefenseError(f"Augment needs integer JPEG qualities with {lo} <= quality_min <= quality_max <= {hi}, "
                           f"got quality_min={self.quality_min!r}, quality_max={self.quality_max!r}")

  def draw(self, n: int, rng: np.random.Generator) -> Draws:
    """The random choices for a batch of n images, in a fixed order (four vectorised draws)."""
    blur_N = rng.random(n) < self.p_blur
    sigma_N = rng.uniform(0.0, self.sigma_max, n)
    jpeg_N = rng.random(n) < self.p_jpeg
    quality_N = rng.integers(self.quality_min, self.quality_max + 1, n)
    return Draws(blur_N, sigma_N, jpeg_N, quality_N)

  def apply(self, x_NxHxWxC, draws: Draws) -> np.ndarray:
    """Blur the chosen images, then JPEG the chosen ones; the others are returned bit for bit."""
    x = _images(x_NxHxWxC, "Augment").copy()
    if draws.blur_N.shape != (x.shape[0],):
      raise VQDefenseError(f"Augment drew for {draws.blur_N.shape[0]} images but the batch has {x.shape[0]}")
    b = np.flatnonzero(draws.blur_N)
    if b.size:
      x[b] = blur(x[b], draws.sigma_N[b])
    j = np.flatnonzero(draws.jpeg_N)
    if j.size:
      x[j] = jpeg(x[j], draws.quality_N[j])
    return x

  def __call__(self, batch, rng: np.random.Generator):
    x_NxHxWxC, y_N = batch
    if np.ndim(x_NxHxWxC) != 4 or np.shape(y_N)[:1] != np.shape(x_NxHxWxC)[:1]:
      raise VQDefenseError(f"Augment expects a batch (x of shape (N, H, W, C), y of shape (N,)), "
                           f"got shapes {np.shape(x_NxHxWxC)} and {np.shape(y_N)}")
    return self.apply(x_NxHxWxC, self.draw(np.shape(x_NxHxWxC)[0], rng)), y_N
