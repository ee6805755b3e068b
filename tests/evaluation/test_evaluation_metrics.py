"""Metrics on hand-computed cases."""

import numpy as np
import pytest

from mf_tf.evaluation import metrics
from mf_tf.data import world
from mf_tf.geometry.camera import Camera
from mf_tf.geometry.rig import Rig


def _case():
  # N=1 frame, V=2 views, J=3 joints; errors (px) per view/joint:
  #   view 0: 1, 3, 5      view 1: 0, 2.5, 10
  gt = np.zeros((1, 2, 3, 2))
  pred = np.zeros((1, 2, 3, 2))
  pred[0, 0, :, 0] = [1.0, 3.0, 5.0]
  pred[0, 1, :, 1] = [0.0, 2.5, 10.0]
  return pred, gt


def test_jdr_scalar_head_size():
  pred, gt = _case()
  result = metrics.jdr(pred, gt, head_size=6.0)  # threshold 3 px, strict
  np.testing.assert_allclose(result["per_joint"], [100.0, 50.0, 0.0])
  assert result["mean"] == pytest.approx(50.0)
  np.testing.assert_array_equal(result["count"], [2, 2, 2])


def test_jdr_per_view_head_size_and_valid():
  pred, gt = _case()
  head = np.array([[12.0, 4.0]])  # thresholds: view 0 -> 6 px, view 1 -> 2 px
  valid = np.ones((1, 2, 3))
  valid[0, 1, 0] = 0  # joint 0 only counts in view 0
  result = metrics.jdr(pred, gt, head, valid)
  np.testing.assert_allclose(result["per_joint"], [100.0, 50.0, 50.0])
  np.testing.assert_array_equal(result["count"], [1, 2, 2])
  assert result["mean"] == pytest.approx(200.0 / 3.0)


def test_jdr_nan_handling():
  pred, gt = _case()
  gt[0, :, 2] = np.nan  # joint 2 has no ground truth anywhere
  pred[0, 0, 0] = np.nan  # a failed estimate is a miss
  result = metrics.jdr(pred, gt, 6.0)
  assert np.isnan(result["per_joint"][2])
  np.testing.assert_allclose(result["per_joint"][:2], [50.0, 50.0])
  assert result["mean"] == pytest.approx(50.0)


def test_jdr_split():
  pred, gt = _case()
  visibility = np.array([[[1, 0, 1], [1, 1, 0]]])
  result = metrics.jdr_split(pred, gt, 6.0, visibility)
  # visible: errors 1, 5, 0, 2.5 -> 3 of 4 detected; occluded: 3, 10 -> 0 of 2.
  assert result["visible"] == pytest.approx(75.0)
  assert result["occluded"] == pytest.approx(0.0)
  assert (result["visible_count"], result["occluded_count"]) == (4, 2)
  none_occluded = metrics.jdr_split(pred, gt, 6.0, np.ones((1, 2, 3)))
  assert np.isnan(none_occluded["occluded"]) and none_occluded["occluded_count"] == 0


def test_jdr_rejects_bad_shapes():
  pred, gt = _case()
  with pytest.raises(ValueError, match="head_size"):
    metrics.jdr(pred, gt, np.ones(5))
  with pytest.raises(ValueError, match="gt2d"):
    metrics.jdr(pred, gt[0], 6.0)


def test_mpjpe_known_answer():
  gt = np.zeros((2, 2, 3))
  pred = np.zeros((2, 2, 3))
  pred[0, 0] = [3.0, 4.0, 0.0]  # 5
  pred[0, 1] = [0.0, 0.0, 1.0]  # 1
  pred[1, 0] = [0.0, 6.0, 8.0]  # 10
  pred[1, 1] = [2.0, 0.0, 0.0]  # 2
  assert metrics.mpjpe(pred, gt) == pytest.approx(4.5)
  np.testing.assert_allclose(metrics.mpjpe_per_joint(pred, gt), [7.5, 1.5])
  valid = np.array([[1, 1], [0, 1]])
  assert metrics.mpjpe(pred, gt, valid) == pytest.approx(8.0 / 3.0)
  # No alignment: a constant offset is fully counted.
  assert metrics.mpjpe(gt + [0.0, 0.0, 7.0], gt) == pytest.approx(7.0)


def test_head_sizes():
  assert metrics.crossview_head_size(64) == pytest.approx(6.4)
  assert metrics.crossview_head_size(256) == pytest.approx(25.6)
  camera = Camera("c", [[1000.0, 0, 500], [0, 1000.0, 250], [0, 0, 1]], np.eye(3),
                  [0.0, 0.0, 0.0], None, 1000, 500)
  rig = Rig("one", (camera,))
  # At 4 m: 1000 px * HEAD_SIZE_MM / 4000 mm image px; heatmap scales 64/1000 and 64/500 ->
  # their geometric mean 64 / sqrt(1000 * 500).
  size = metrics.projected_head_size([[0.0, 0.0, 4000.0], [0.0, 0.0, -1.0]], rig, 64)
  expected = 1000.0 * world.HEAD_SIZE_MM / 4000.0 * 64.0 / np.sqrt(1000.0 * 500.0)
  assert size.shape == (2, 1)
  assert size[0, 0] == pytest.approx(expected, rel=1e-5)
  assert np.isnan(size[1, 0])
