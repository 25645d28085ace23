"""Tests for aprec/rpm/study.py: the headline ratio on a hand-made case."""

from __future__ import annotations

import numpy as np
import scipy.stats

from aprec.rpm import study


def test_gain_recovered_on_a_hand_made_case():
  # Per-step quality of three policies on a 4-step trace: static* never adapts, hindsight
  # takes both good steps, learned takes one of them.
  static = np.array([0.50, 0.50, 0.50, 0.50])
  hindsight = np.array([0.50, 0.90, 0.90, 0.50])
  learned = np.array([0.50, 0.90, 0.50, 0.50])
  gain = study.gain_recovered(learned.mean(), static.mean(), hindsight.mean())
  assert abs(gain - 0.5) < 1e-12  # (0.6 - 0.5) / (0.7 - 0.5)
  assert study.gain_recovered(hindsight.mean(), static.mean(), hindsight.mean()) == 1.0
  assert np.isnan(study.gain_recovered(0.6, 0.5, 0.5))


def test_mean_ci_is_the_student_t_interval():
  values = [0.7, 0.9, 0.8, 1.1, 0.6]
  mean, half = study.mean_ci(values)
  lo, hi = scipy.stats.t.interval(
      0.95, len(values) - 1, loc=np.mean(values), scale=scipy.stats.sem(values)
  )
  assert abs(mean - np.mean(values)) < 1e-12
  assert abs(half - (hi - lo) / 2) < 1e-3 * half  # the t quantile is tabulated to 4 digits


def test_mode_share_by_layer_counts_each_layer():
  names = ["layers/0/query", "layers/0/key", "layers/1/query"]
  a = np.array([[5, 6, 5], [5, 5, 6]])
  share = study.mode_share_by_layer(a, names)
  assert share == {"layer_0": {"int8": 0.75, "int4": 0.25}, "layer_1": {"int8": 0.5, "int4": 0.5}}
