"""Detector metrics as Wang et al. (2020) report them: average precision, and accuracy at a fixed threshold.

Average precision (AP) is scikit-learn's `average_precision_score`, which CNNDetection calls
(validate.py, line 23), written out here so the project does not depend on scikit-learn:

    AP = Σ_k (R_k − R_{k−1}) · P_k,   R_0 = 0,

over the distinct scores t_1 > t_2 > … taken as thresholds (an image is called fake when score ≥ t_k), with
P_k, R_k the precision and recall of that call and positives the fakes (label 1). Tied scores enter or leave
together, so a tie that straddles the classes counts at the precision of the whole tied group, not at an
optimistic or pessimistic order within it. This is the step-wise sum, not the trapezoidal area.

Accuracies use CNNDetection's convention (validate.py, lines 20-22): a score is the probability of "fake",
and an image is called fake when its score is strictly greater than the threshold (0.5).
"""

import numpy as np

from vqdefense_jax.core.errors import VQDefenseError


def _scores_and_labels(scores_N, labels_N, what: str) -> tuple[np.ndarray, np.ndarray]:
  s = np.asarray(scores_N, np.float64)
  y = np.asarray(labels_N)
  if s.ndim != 1 or y.shape != s.shape:
    raise VQDefenseError(f"{what} needs scores and labels of the same shape (N,), got {s.shape} and {y.shape}")
  if s.size == 0:
    raise VQDefenseError(f"{what} of no images is undefined")
  if not np.all(np.isfinite(s)):
    raise VQDefenseError(f"{what} got {np.count_nonzero(~np.isfinite(s))} non-finite scores")
  if not np.all((y == 0) | (y == 1)):
    raise VQDefenseError(f"{what} needs labels 0 (real) or 1 (fake), got {np.unique(y)[:5]}")
  return s, y.astype(bool)


def average_precision(scores_N, labels_N) -> float:
  """AP of ranking fakes (label 1) above reals by score, exactly as sklearn's `average_precision_score`."""
  s, fake = _scores_and_labels(scores_N, labels_N, "average precision")
  if fake.all() or not fake.any():
    raise VQDefenseError(f"average precision needs both real and fake images, got only "
                         f"{'fake' if fake.all() else 'real'} ones ({s.size})")
  order = np.argsort(-s, kind="stable")
  s, fake = s[order], fake[order]
  last_of_tie = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # where each distinct score's group ends
  tp_K = np.cumsum(fake)[last_of_tie]
  called_K = last_of_tie + 1
  precision_K = tp_K / called_K
  recall_K = tp_K / tp_K[-1]
  return float(np.sum(np.diff(recall_K, prepend=0.0) * precision_K))


def accuracies(scores_N, labels_N, threshold: float = 0.5) -> dict[str, float]:
  """Accuracy over all images, over the reals (label 0) and over the fakes (label 1); nan for a class with
  no images. An image is called fake when its score is > threshold (CNNDetection's `y_pred > 0.5`)."""
  s, fake = _scores_and_labels(scores_N, labels_N, "accuracy")
  if not np.isfinite(threshold):
    raise VQDefenseError(f"accuracy threshold must be finite, got {threshold}")
  correct = (s > threshold) == fake
  mean = lambda c: float(np.mean(c)) if c.size else float("nan")
  return dict(accuracy=mean(correct), real_accuracy=mean(correct[~fake]), fake_accuracy=mean(correct[fake]))
