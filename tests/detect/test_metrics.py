"""Detector metrics: AP on rankings worked out by hand (ties included), sklearn's value on random data,
accuracies at CNNDetection's strict threshold, and clear errors on input AP cannot be defined for."""

import numpy as np
import pytest

from vqdefense_jax.core.errors import VQDefenseError
from vqdefense_jax.detect import metrics


def test_ap_of_a_hand_ranking():
  # Ranked by score: fake, real, fake, fake, real; 3 fakes. AP = Σ ΔR·P at each distinct score:
  #   .9: P = 1/1, R = 1/3 → 1/3 · 1     .8: R unchanged → 0
  #   .7: P = 2/3, R = 2/3 → 1/3 · 2/3   .4: P = 3/4, R = 1 → 1/3 · 3/4     .3: R unchanged → 0
  #   AP = 1/3 + 2/9 + 1/4 = 29/36
  ap = metrics.average_precision([.9, .8, .7, .4, .3], [1, 0, 1, 1, 0])
  assert ap == pytest.approx(29 / 36, abs=1e-15)


def test_ap_is_1_for_a_perfect_ranking_and_smallest_for_the_reverse_one():
  assert metrics.average_precision([.9, .8, .3, .1], [1, 1, 0, 0]) == 1.0
  assert metrics.average_precision([5.0, -2.0], [1, 0]) == 1.0   # scores need not be probabilities
  # Both reals above both fakes: the fakes come 3rd and 4th, AP = 1/2 · (1/3 + 2/4) = 5/12.
  worst = metrics.average_precision([.9, .8, .7, .6], [0, 0, 1, 1])
  assert worst == pytest.approx(5 / 12, abs=1e-15)
  rng = np.random.default_rng(0)
  for _ in range(20):   # no ordering of these labels does worse
    assert metrics.average_precision(rng.permutation(4) / 4, [0, 0, 1, 1]) >= worst - 1e-15


def test_ap_counts_a_tie_that_straddles_the_classes_as_one_group():
  # Scores .9 (real), then .5 for two fakes and a real, then .1 (fake); 3 fakes.
  #   .9: R = 0 → 0      .5: called fake 4, of them 2 fakes: P = 2/4, R = 2/3 → 2/3 · 1/2 = 1/3
  #   .1: P = 3/5, R = 1 → 1/3 · 3/5 = 1/5                                  AP = 1/3 + 1/5 = 8/15
  # Breaking the tie either way gives something else: fakes first 53/90, the real first 43/90.
  scores, labels = [.9, .5, .5, .5, .1], [0, 1, 1, 0, 1]
  assert metrics.average_precision(scores, labels) == pytest.approx(8 / 15, abs=1e-15)
  assert metrics.average_precision([.9, .5, .5, .5, .1], [0, 0, 1, 1, 1]) == pytest.approx(8 / 15, abs=1e-15)
  assert metrics.average_precision([.9, .8, .7, .6, .1], [0, 1, 1, 0, 1]) == pytest.approx(53 / 90, abs=1e-15)
  assert metrics.average_precision([.9, .8, .7, .6, .1], [0, 0, 1, 1, 1]) == pytest.approx(43 / 90, abs=1e-15)


def test_ap_agrees_with_sklearn_on_random_data():
  sklearn_metrics = pytest.importorskip("sklearn.metrics")
  rng = np.random.default_rng(1)
  for trial in range(100):
    n = int(rng.integers(2, 80))
    labels = rng.integers(0, 2, n)
    labels[:2] = (0, 1)
    scores = np.round(rng.random(n), 1) if trial % 2 else rng.normal(size=n)   # odd trials: many ties
    expected = sklearn_metrics.average_precision_score(labels, scores)
    assert metrics.average_precision(scores, labels) == pytest.approx(expected, abs=1e-12)


def test_accuracies_on_a_hand_case_at_the_strict_threshold():
  scores = np.array([.9, .5, .2, .7, .5, .1])   # called fake: .9, .7 (.5 is not > .5)
  labels = np.array([1, 1, 0, 0, 0, 1])
  # reals .2, .7, .5: right, wrong, right → 2/3; fakes .9, .5, .1: right, wrong, wrong → 1/3; all 3/6
  acc = metrics.accuracies(scores, labels)
  assert acc == pytest.approx(dict(accuracy=1 / 2, real_accuracy=2 / 3, fake_accuracy=1 / 3))
  assert metrics.accuracies(scores, labels, threshold=0.4)["fake_accuracy"] == pytest.approx(2 / 3)
  only_reals = metrics.accuracies([.1, .6], [0, 0])
  assert only_reals["accuracy"] == only_reals["real_accuracy"] == 0.5 and np.isnan(only_reals["fake_accuracy"])


@pytest.mark.parametrize("scores, labels, match", [
    ([], [], "no images"),
    ([.2, .7], [1, 1], "both real and fake"),
    ([.2, .7], [0, 0], "both real and fake"),
    ([.2, np.nan, .3], [0, 1, 1], "non-finite"),
    ([.2, np.inf], [0, 1], "non-finite"),
    ([.2, .7], [0, 2], "labels 0"),
    ([.2, .7, .1], [0, 1], "same shape"),
    ([[.2, .7]], [[0, 1]], "same shape"),
])
def test_ap_rejects_input_it_cannot_score(scores, labels, match):
  with pytest.raises(VQDefenseError, match=match):
    metrics.average_precision(scores, labels)


def test_accuracies_reject_bad_input():
  with pytest.raises(VQDefenseError, match="non-finite"):
    metrics.accuracies([np.nan, .3], [0, 1])
  with pytest.raises(VQDefenseError, match="no images"):
    metrics.accuracies([], [])
  with pytest.raises(VQDefenseError, match="threshold"):
    metrics.accuracies([.1, .3], [0, 1], threshold=float("nan"))
