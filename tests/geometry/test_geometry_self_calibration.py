"""Self-calibration: fundamental matrices and epipolar theta from labelled joints of real rigs."""

import numpy as np
import pytest

from mf_tf.data import world
from mf_tf.fusion import calibrated
from mf_tf.geometry import epipolar, rigs, volume
from mf_tf.geometry.camera import undistort_points
from mf_tf.geometry.rig import ordered_pairs, pair_index
from mf_tf.fusion.calibrated import self_calibrated_theta
from mf_tf.geometry.epipolar import symmetric_epipolar_distance
from mf_tf.geometry.self_calibration import (estimate_pair_fundamentals, normalized_eight_point,
                                             robust_fundamental, sampson_distance)


def _heatmap_points(rig, points3d, heatmap_size):
  """[N, 3] world mm -> [V, N, 2] undistorted projections in heatmap px."""
  return np.stack([camera.project(points3d, distort=False)[0]
                   * [heatmap_size / camera.width, heatmap_size / camera.height]
                   for camera in rig.cameras])


def _labels(rig, num_frames, seed, heatmap_size):
  """Simulated ground-truth joints2d [K, V, J, 2], undistorted, NaN where not visible."""
  frames = world.simulate_frames(rig, num_frames, seed, "h36m17", heatmap_size,
                                 return_heatmaps=False)
  views = []
  for view, camera in enumerate(rig.cameras):
    to_image = np.array([camera.width / heatmap_size, camera.height / heatmap_size])
    views.append(undistort_points(camera, frames["joints2d"][:, view] * to_image) / to_image)
  joints2d = np.stack(views, axis=1)
  return np.where(frames["visibility"][..., None] > 0, joints2d, np.nan)


def _shared(joints2d, source, target):
  """Correspondences labelled in both views: ([N, 2], [N, 2])."""
  both = np.all(np.isfinite(joints2d[:, source]) & np.isfinite(joints2d[:, target]), axis=-1)
  return joints2d[:, source][both], joints2d[:, target][both]


def _same_up_to_sign(estimate, truth):
  return min(np.abs(estimate - truth).max(), np.abs(estimate + truth).max())


def _theta_lines(theta, heatmap_size):
  """Source-view lines (a, b, c), a^2 + b^2 = 1, encoded by `theta_from_fundamental` rows.

  Row 1 of theta's pixel-space matrix is (a, b, c + y_c) (see mf_tf.fusion.calibrated).
  """
  centre = 0.5 * (heatmap_size - 1)
  to_pixel = np.array([[centre, 0.0, centre], [0.0, centre, centre], [0.0, 0.0, 1.0]])
  rows = theta.astype(np.float64).reshape(theta.shape[:-1] + (2, 3))
  normalized = np.concatenate([rows, np.broadcast_to([[0.0, 0.0, 1.0]], rows.shape[:-2] + (1, 3))],
                              axis=-2)
  pixel = to_pixel @ normalized @ np.linalg.inv(to_pixel)
  return pixel[..., 1, :] - [0.0, 0.0, centre]


def _line_errors(theta_estimate, theta_truth, heatmap_size):
  """Angle (degrees) and offset at the source map's centre (px) between the encoded lines.

  Only target pixels whose true line crosses the source map count (elsewhere the line base reads
  nothing). Returns two 1-D arrays over those (pair, target pixel).
  """
  truth = _theta_lines(theta_truth, heatmap_size)
  estimate = _theta_lines(theta_estimate, heatmap_size)
  estimate = np.where(np.sum(truth[..., :2] * estimate[..., :2], -1, keepdims=True) < 0,
                      -estimate, estimate)
  last = heatmap_size - 1.0
  corners = np.array([[0, 0, 1], [last, 0, 1], [0, last, 1], [last, last, 1]])
  signs = np.sign(truth @ corners.T)
  crosses = (signs.min(-1) < 0) & (signs.max(-1) > 0)
  angle = np.abs(np.arctan2(truth[..., 1], truth[..., 0])
                 - np.arctan2(estimate[..., 1], estimate[..., 0]))
  angle = np.degrees(np.minimum(angle, 2 * np.pi - angle))
  centre = np.array([0.5 * last, 0.5 * last, 1.0])
  offset = np.abs(truth @ centre - estimate @ centre)
  return angle[crosses], offset[crosses]


@pytest.mark.parametrize("rig_name", ["h36m", "panoptic_heldout6"])
def test_noiseless_real_rig_recovers_heatmap_fundamentals(rig_name):
  rig = rigs.get_rig(rig_name)
  heatmap_size = 64
  truth = epipolar.pair_fundamental_matrices(rig, heatmap_size)
  center, half = volume.capture_volume(rig)
  points3d = center + np.random.default_rng(0).uniform(-1.0, 1.0, (300, 3)) * half
  points = _heatmap_points(rig, points3d, heatmap_size)
  fit, held_out = slice(0, 100), slice(100, None)
  for index, (source, target) in enumerate(ordered_pairs(rig.num_views)):
    F = normalized_eight_point(points[source, fit], points[target, fit])
    assert _same_up_to_sign(F, truth[index]) < 1e-6
    assert np.linalg.norm(F) == pytest.approx(1.0)
    assert abs(np.linalg.det(F)) < 1e-12  # Rank 2.
    assert symmetric_epipolar_distance(
        F, points[source, held_out], points[target, held_out]).mean() < 1e-3
  # The robust, pooled estimate from simulated frames' joints: every ordered pair in rig order.
  labels = _labels(rig, 20, 0, heatmap_size)
  F, info = estimate_pair_fundamentals(labels, rig.num_views, iterations=100)
  assert F.shape == truth.shape and np.all(info["pairs"] == ordered_pairs(rig.num_views))
  held = _labels(rig, 10, 1, heatmap_size)
  for index, (source, target) in enumerate(ordered_pairs(rig.num_views)):
    assert _same_up_to_sign(F[index], truth[index]) < 1e-5
    assert symmetric_epipolar_distance(F[index], *_shared(held, source, target)).mean() < 1e-3
  np.testing.assert_array_equal(info["num_inliers"], info["num_correspondences"])


def test_sampson_distance_is_the_geometric_distance_for_a_displaced_point():
  rig = rigs.get_rig("h36m")
  F = epipolar.pair_fundamental_matrices(rig, 64)[pair_index(0, 1, 4)]
  points3d = volume.capture_volume(rig)[0] + np.random.default_rng(1).uniform(-800, 800, (50, 3))
  points = _heatmap_points(rig, points3d, 64)
  np.testing.assert_array_less(sampson_distance(F, points[0], points[1]), 1e-9)
  # Moving the target point 2 px across its epipolar line: the first-order distance in R^4 is
  # 2 / sqrt(1 + |F^T x_t|^2 / |F x_s|^2) <= 2, and independent of F's scale.
  lines = epipolar.epipolar_lines(F, points[0])
  moved = points[1] + 2.0 * lines[:, :2]
  distance = sampson_distance(F, points[0], moved)
  np.testing.assert_allclose(distance, sampson_distance(-7.0 * F, points[0], moved))
  assert np.all(distance <= 2.0 + 1e-9) and np.all(distance > 0.5)
  assert sampson_distance(np.stack([F, F]), points[0], moved).shape == (2, 50)


def test_ransac_rejects_swapped_points_under_detection_noise():
  rig = rigs.get_rig("h36m")
  heatmap_size = 64
  truth = epipolar.pair_fundamental_matrices(rig, heatmap_size)
  labels, held = _labels(rig, 50, 1, heatmap_size), _labels(rig, 50, 2, heatmap_size)
  rng = np.random.default_rng(0)
  robust_errors, plain_errors = [], []
  for source, target in [(0, 1), (0, 2), (1, 3), (2, 3)]:
    x_source, x_target = _shared(labels, source, target)
    x_source = x_source + rng.normal(0.0, 1.0, x_source.shape)
    x_target = x_target + rng.normal(0.0, 1.0, x_target.shape)
    swapped = rng.choice(len(x_source), len(x_source) // 10, replace=False)
    x_target[swapped] = x_target[np.roll(swapped, 1)]  # 10% gross outliers.
    F, inliers = robust_fundamental(x_source, x_target, threshold_px=2.0, seed=3)
    assert not np.any(inliers[swapped][sampson_distance(
        truth[pair_index(source, target, 4)], x_source[swapped], x_target[swapped]) > 6.0])
    assert inliers.mean() > 0.75
    held_source, held_target = _shared(held, source, target)
    robust_errors.append(symmetric_epipolar_distance(F, held_source, held_target).mean())
    plain = normalized_eight_point(x_source, x_target)
    plain_errors.append(symmetric_epipolar_distance(plain, held_source, held_target).mean())
    # Deterministic for a seed.
    F_again, inliers_again = robust_fundamental(x_source, x_target, threshold_px=2.0, seed=3)
    np.testing.assert_array_equal(F, F_again)
    np.testing.assert_array_equal(inliers, inliers_again)
  robust_errors, plain_errors = np.array(robust_errors), np.array(plain_errors)
  assert np.all(robust_errors < 1.5), robust_errors
  # Swapped joints land ~15 px away at 64 px; the unweighted fit absorbs them (measured ratio 2.9).
  assert np.mean(plain_errors) > 2.0 * np.mean(robust_errors), (plain_errors, robust_errors)


def test_weights_remove_points_from_the_linear_fit():
  rig = rigs.get_rig("shelf")
  points3d = volume.capture_volume(rig)[0] + np.random.default_rng(2).uniform(-900, 900, (40, 3))
  points = _heatmap_points(rig, points3d, 32)
  x_source, x_target = points[1].copy(), points[3].copy()
  x_target[:5] = x_target[5:10]
  weights = np.r_[np.zeros(5), np.ones(35)]
  np.testing.assert_allclose(normalized_eight_point(x_source, x_target, weights),
                             normalized_eight_point(x_source[5:], x_target[5:]), atol=1e-9)


def test_self_calibrated_theta_matches_calibrated_lines():
  rig = rigs.get_rig("h36m")
  heatmap_size = 32
  labels = _labels(rig, 50, 0, heatmap_size)
  theta, info = self_calibrated_theta(labels, rig.num_views, heatmap_size, return_info=True)
  truth = calibrated.calibrated_theta(rig, heatmap_size)
  assert theta.shape == truth.shape == (12, heatmap_size * heatmap_size, 6)
  assert theta.dtype == np.float32
  np.testing.assert_allclose(theta, calibrated.theta_from_fundamental(info["fundamental"],
                                                                      heatmap_size))
  # The inlier count is reported per ordered pair; noiseless labels are all inliers.
  assert info["num_inliers"].shape == (12,)
  assert np.all(info["num_correspondences"] > 300)
  assert np.all(info["num_inliers"] >= 0.99 * info["num_correspondences"])
  for source, target in [(0, 1), (2, 3)]:
    forward, backward = pair_index(source, target, 4), pair_index(target, source, 4)
    np.testing.assert_array_equal(info["fundamental"][backward], info["fundamental"][forward].T)
  angle, offset = _line_errors(theta, truth, heatmap_size)
  assert angle.size > 0.5 * 12 * heatmap_size ** 2
  assert angle.mean() < 3.0 and offset.mean() < 1.0, (angle.mean(), offset.mean())
  # Label noise of 0.5 px at 32 px (1 px at 64 px), default 1 px threshold: still close.
  noisy = labels + np.random.default_rng(4).normal(0.0, 0.5, labels.shape)
  angle, offset = _line_errors(self_calibrated_theta(noisy, rig.num_views, heatmap_size), truth,
                               heatmap_size)
  assert angle.mean() < 3.0 and offset.mean() < 1.0, (angle.mean(), offset.mean())


def test_invalid_labels_are_ignored():
  rig = rigs.get_rig("h36m")
  labels = _labels(rig, 10, 0, 32)
  valid = np.isfinite(labels[..., 0])
  corrupted = np.where(valid[..., None], labels, 1e3)  # Garbage where not labelled.
  reference, info = estimate_pair_fundamentals(labels, 4, iterations=50)
  F, info_masked = estimate_pair_fundamentals(corrupted, 4, valid=valid, iterations=50)
  np.testing.assert_allclose(F, reference)
  np.testing.assert_array_equal(info_masked["num_correspondences"], info["num_correspondences"])


def test_errors_name_the_bad_value():
  points = np.random.default_rng(0).uniform(0, 32, (10, 2))
  with pytest.raises(ValueError, match=r"at least 8 correspondences, got N=7"):
    normalized_eight_point(points[:7], points[:7])
  with pytest.raises(ValueError, match=r"at least 8 correspondences, got N=7"):
    robust_fundamental(points[:7], points[:7])
  bad = points.copy()
  bad[3, 1] = np.nan
  with pytest.raises(ValueError, match=r"x_target holds 1 non-finite point\(s\), first at row 3"):
    normalized_eight_point(points, bad)
  with pytest.raises(ValueError, match=r"x_source holds 1 non-finite"):
    robust_fundamental(np.where(np.arange(10)[:, None] == 0, np.inf, points), points)
  with pytest.raises(ValueError, match=r"x_source has shape \(10, 3\), expected \[N, 2\]"):
    normalized_eight_point(np.ones((10, 3)), points)
  with pytest.raises(ValueError, match=r"x_source has 10 points and x_target 9"):
    normalized_eight_point(points, points[:9])
  with pytest.raises(ValueError, match=r"weights has shape \(9,\)"):
    normalized_eight_point(points, points, weights=np.ones(9))
  with pytest.raises(ValueError, match=r"positive weight, got 6"):
    normalized_eight_point(points, points, weights=np.r_[np.ones(6), np.zeros(4)])
  with pytest.raises(ValueError, match=r"F has shape \(3, 4\)"):
    sampson_distance(np.ones((3, 4)), points, points)
  with pytest.raises(ValueError, match=r"threshold_px .* got -1.0"):
    robust_fundamental(points, points, threshold_px=-1.0)
  joints2d = np.random.default_rng(1).uniform(0, 32, (5, 3, 4, 2))
  with pytest.raises(ValueError, match=r"joints2d has 3 views .* expected num_views=4"):
    estimate_pair_fundamentals(joints2d, 4)
  with pytest.raises(ValueError, match=r"joints2d has shape \(5, 3, 4\), expected \[K, V, J, 2\]"):
    estimate_pair_fundamentals(joints2d[..., 0], 3)
  with pytest.raises(ValueError, match=r"valid has shape \(5, 3\)"):
    estimate_pair_fundamentals(joints2d, 3, valid=np.ones((5, 3), bool))
  sparse = joints2d.copy()
  sparse[:, 2, :3] = np.nan  # View 2 keeps 5 frames x 1 joint = 5 labels.
  with pytest.raises(ValueError, match=r"views \(0, 2\) share 5 labelled joints"):
    estimate_pair_fundamentals(sparse, 3)
