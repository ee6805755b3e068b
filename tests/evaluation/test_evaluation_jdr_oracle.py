"""JDR on hand-worked errors exactly at, just below and just above the threshold.

One definition (MetaFuse Sec. 5.1): a joint is detected when its 2D error is STRICTLY below half
the head size. The errors here are exact in binary floating point (axis-aligned offsets of
integers and powers of two, and a 3-4-5 triangle), so "at the threshold" means equal, and the
expected rates are counted by hand.
"""

import numpy as np
import pytest

from mf_tf.evaluation import metrics
from mf_tf.train import selection

SIZE = 16
TRUTH = np.array([8.0, 7.0])

# [N=2, V=2, J=3, 2] offsets of the estimates from the truth; threshold 2 (head size 4).
OFFSETS = np.array([
    [[[1.0, 0.0], [0.0, 2.0], [-2.0, 0.0]],  # below, AT, AT
     [[1.999, 0.0], [0.0, -2.0], [0.0, 0.0]]],  # below, AT, below
    [[[2.0, 0.0], [2.001, 0.0], [2.0 + 1e-9, 0.0]],  # AT, above, above
     [[0.0, 0.0], [0.0, 1.9999], [1.99999999, 0.0]]],  # below, below, below
])
# Detected (strictly below 2): joint 0: 3 of 4, joint 1: 1 of 4, joint 2: 2 of 4.
EXPECTED_PER_JOINT = [75.0, 25.0, 50.0]
EXPECTED_POOLED = 100.0 * 6 / 12


def test_jdr_counts_errors_strictly_below_half_the_head_size():
  gt = np.broadcast_to(TRUTH, OFFSETS.shape)
  result = metrics.jdr(gt + OFFSETS, gt, head_size=4.0)
  np.testing.assert_array_equal(result["per_joint"], EXPECTED_PER_JOINT)
  assert result["mean"] == pytest.approx(50.0, abs=1e-12)
  np.testing.assert_array_equal(result["count"], [4, 4, 4])


def test_jdr_at_the_threshold_of_a_diagonal_error_and_per_view_head_sizes():
  gt = np.zeros((1, 3, 1, 2))
  pred = np.array([[[[3.0, 4.0]], [[3.0, 4.0]], [[3.0, 4.0]]]])  # Error 5 exactly.
  head = np.array([[10.0, 10.0 + 1e-9, 10.0 - 1e-9]])  # Thresholds 5 (at), above, below.
  detected, valid = metrics.detections(pred, gt, head)
  np.testing.assert_array_equal(detected[0, :, 0], [False, True, False])
  assert valid.all()
  assert metrics.jdr(pred, gt, head)["mean"] == pytest.approx(100.0 / 3, abs=1e-12)


def _peaked_heatmaps(estimates):
  """[N, V, H, W, J] maps with one isolated peak per channel at the integer pixel `estimates`.

  The peak's neighbours are equal on both sides, so the sub-pixel refinement adds exactly 0 and
  the read-out is the peak pixel itself.
  """
  n, v, j, _ = estimates.shape
  maps = np.zeros((n, v, SIZE, SIZE, j), np.float32)
  for index in np.ndindex(n, v, j):
    x, y = (int(c) for c in estimates[index])
    maps[index[0], index[1], y, x, index[2]] = 6.0
  return maps


def test_validation_jdr_uses_the_same_strict_threshold():
  estimates = np.broadcast_to(TRUTH, OFFSETS.shape)  # Every read-out at the truth pixel ...
  truth = estimates - OFFSETS  # ... and the truth moved by the offsets instead.
  rate = selection.validation_jdr(_peaked_heatmaps(estimates), truth, threshold_px=2.0,
                                  temperature=0.2)
  assert rate == pytest.approx(EXPECTED_POOLED, abs=1e-9)
  # Per frame and view thresholds: view 1 of frame 1 (all three below 2) is dropped (nan), and
  # view 0 of frame 1 gets 2 + 5e-10, which detects its joint 0 (error 2) but not 2 + 1e-9 or
  # 2.001: frame 0 detects 3 of 6, frame 1 1 of 3.
  threshold = np.array([[2.0, 2.0], [2.0 + 5e-10, np.nan]])
  rate = selection.validation_jdr(_peaked_heatmaps(estimates), truth, threshold, 0.2)
  assert rate == pytest.approx(100.0 * 4 / 9, abs=1e-9)


def test_validation_jdr_agrees_with_metrics_jdr():
  estimates = np.broadcast_to(TRUTH, OFFSETS.shape)
  truth = estimates - OFFSETS
  result = metrics.jdr(estimates, truth, head_size=4.0)
  pooled = np.sum(result["per_joint"] * result["count"]) / np.sum(result["count"])
  assert selection.validation_jdr(_peaked_heatmaps(estimates), truth, 2.0, 0.2) == pooled
