"""Epipolar-line fusion without dense matrices agrees with the dense calibrated MetaFuse^0."""

import numpy as np
import pytest
import tensorflow as tf

from mf_tf.fusion import calibrated
from mf_tf.fusion import epipolar_fusion
from mf_tf.fusion import layers
from mf_tf.fusion import ops
from mf_tf.geometry import epipolar
from mf_tf.geometry import rigs
from mf_tf.geometry import volume
from mf_tf.geometry.rig import ordered_pairs

WIDTH, VALUE = 1.0, 0.1  # The calibrated MetaFuse^0 defaults (config.fusion).
# Stated tolerance of the messages (fused - initial) against the dense path, as a fraction of the
# largest dense message: measured 2.9 % (max) and 1.3 % (99th percentile) at 32 px.
MAX_ERROR, P99_ERROR = 0.04, 0.02


def _gaussians(points, size, sigma=1.5):
  """[..., J, 2] heatmap points -> [..., size, size, J] Gaussian heatmaps (peak 1)."""
  grid = np.arange(size, dtype=np.float64)
  dx = grid[None, :, None] - points[..., None, None, :, 0]
  dy = grid[:, None, None] - points[..., None, None, :, 1]
  return np.exp(-(dx ** 2 + dy ** 2) / (2 * sigma ** 2)).astype(np.float32)


def _dense_fused(heatmaps, fundamental_or_rig, size):
  """Dense reference: AffineFusion with the calibrated parameters, materialized, by ops.fuse."""
  num_views = heatmaps.shape[0]
  if isinstance(fundamental_or_rig, np.ndarray):
    omega = calibrated.calibrated_base(size, WIDTH, VALUE)
    theta = calibrated.theta_from_fundamental(fundamental_or_rig, size)
  else:
    omega, theta = calibrated.calibrated_parameters(fundamental_or_rig, size, WIDTH, VALUE)
  layer = layers.AffineFusion(num_views, size)
  layer.assign_parameters(omega, theta)
  matrices = layer.materialize().matrices
  return ops.fuse(heatmaps[None], matrices)[0].numpy()


def _compare(heatmaps, dense, fused):
  dense_message, message = dense - heatmaps, fused - heatmaps
  scale = np.abs(dense_message).max()
  error = np.abs(message - dense_message) / scale
  flat = lambda x: x.reshape(x.shape[0], -1, x.shape[-1])  # noqa: E731
  same_argmax = flat(dense).argmax(1) == flat(fused).argmax(1)
  return error, same_argmax


@pytest.fixture(scope="module")
def h36m_case():
  """4-view H36M rig at 32 px: 6 random body-sized poses x 6 joints, with distractors."""
  rig = rigs.get_rig("h36m")
  size = 32
  rng = np.random.default_rng(0)
  centre = volume.axes_meeting_point(rig)
  points = centre + rng.uniform(-500, 500, (6, 6, 3)) * [1, 1, 2]  # [poses, joints, 3] mm
  views = []
  for camera in rig.cameras:
    uv, _ = camera.project(points.reshape(-1, 3), distort=False)
    views.append(uv.reshape(6, 6, 2) * [size / camera.width, size / camera.height])
  truth = np.stack(views, 1)  # [poses, V, J, 2]
  heatmaps = _gaussians(truth, size)
  # A stronger distractor 6-9 px away in one view per joint: fusion must not follow it.
  shift = rng.uniform(6, 9, truth.shape[:1] + (1,) + truth.shape[2:]) * rng.choice([-1, 1], (
      truth.shape[0], 1, truth.shape[2], 2))
  distractor = np.clip(truth[:, :1] + shift, 2, size - 3)
  heatmaps[:, :1] = 0.6 * heatmaps[:, :1] + _gaussians(distractor, size)
  fundamental = epipolar.pair_fundamental_matrices(rig, size)
  return rig, size, heatmaps, truth, fundamental


def test_matches_the_dense_calibrated_fusion_on_a_full_image_rig(h36m_case):
  rig, size, heatmaps, truth, fundamental = h36m_case
  errors, agree = [], []
  for pose in heatmaps:
    dense = _dense_fused(pose, rig, size)
    fused = epipolar_fusion.epipolar_fuse(pose, fundamental, line_width_px=WIDTH,
                                          line_value=VALUE).numpy()
    error, same = _compare(pose, dense, fused)
    errors.append(error)
    agree.append(same)
  errors, agree = np.stack(errors), np.stack(agree)
  assert agree.mean() >= 0.99, agree.mean()
  assert errors.max() <= MAX_ERROR, errors.max()
  assert np.percentile(errors, 99) <= P99_ERROR, np.percentile(errors, 99)


def test_fusion_recovers_the_true_joint_over_a_distractor(h36m_case):
  _, size, heatmaps, truth, fundamental = h36m_case
  fused = np.stack([epipolar_fusion.epipolar_fuse(pose, fundamental).numpy()
                    for pose in heatmaps])
  peak = lambda maps: np.stack(np.unravel_index(  # noqa: E731
      maps.reshape(*maps.shape[:2], -1, maps.shape[-1]).argmax(2), (size, size))[::-1], -1)
  inside = np.all((truth[:, 0] > 1) & (truth[:, 0] < size - 2), -1)
  before = np.linalg.norm(peak(heatmaps)[:, 0] - truth[:, 0], axis=-1)
  after = np.linalg.norm(peak(fused)[:, 0] - truth[:, 0], axis=-1)
  assert np.mean(before[inside] > 3) > 0.9  # The distractor wins in view 0 before fusion...
  assert np.mean(after[inside] <= 1.5) > 0.9  # ...and the true joint wins after.


def _pencil_fundamental(source_epipole_target, homography=np.eye(3)):
  """A rank-2 F = [e_t]x H (x_t^T F x_s = 0); its source epipole is H^-1 e_t."""
  return epipolar.skew(source_epipole_target) @ homography


@pytest.mark.parametrize("name, target_epipole", [
    ("epipole at infinity (rectified pair)", (1.0, 0.0, 0.0)),
    ("epipole inside both maps", (7.3, 8.6, 1.0)),
    ("far epipole", (900.0, -40.0, 1.0)),
])
def test_matches_dense_for_any_pencil(name, target_epipole):
  size = 16
  rotation = np.array([[np.cos(0.3), -np.sin(0.3), 2.0], [np.sin(0.3), np.cos(0.3), -1.5],
                       [0.0, 0.0, 1.0]])
  forward = _pencil_fundamental(np.asarray(target_epipole), rotation)  # view 0 -> view 1
  forward /= np.linalg.norm(forward)
  # Pairs in ordered_pairs order: (1 -> 0) then (0 -> 1); F(1 -> 0) = F(0 -> 1)^T.
  assert ordered_pairs(2).tolist() == [[1, 0], [0, 1]]
  fundamental = np.stack([forward.T, forward])
  rng = np.random.default_rng(1)
  heatmaps = _gaussians(rng.uniform(2, size - 3, (2, 5, 2)), size, sigma=1.2)
  dense = _dense_fused(heatmaps, fundamental, size)
  fused = epipolar_fusion.epipolar_fuse(heatmaps, fundamental, compiled=False).numpy()
  error, _ = _compare(heatmaps, dense, fused)
  assert error.max() <= MAX_ERROR, (name, error.max())


def test_rectified_pair_spreads_a_blob_along_its_row():
  size = 16
  forward = _pencil_fundamental(np.array([1.0, 0.0, 0.0]))  # y_target = y_source.
  fundamental = np.stack([forward.T, forward])
  heatmaps = np.zeros((2, size, size, 1), np.float32)
  heatmaps[0] = _gaussians(np.array([[5.0, 9.0]]), size, sigma=1.2)
  message = (epipolar_fusion.epipolar_fuse(heatmaps, fundamental).numpy() - heatmaps)[1, ..., 0]
  # Eq. 1 by hand: every source pixel (x, y) counts with g(y - 9), the base's Gaussian rows
  # (offsets r - 7.5) interpolated linearly, times its value.
  knots = np.arange(size) - 0.5 * (size - 1)
  g = VALUE * np.interp(np.arange(size) - 9.0, knots, np.exp(-0.5 * (knots / WIDTH) ** 2))
  expected = np.sum(g * heatmaps[0, :, :, 0].sum(axis=1))
  np.testing.assert_allclose(message[9], expected, rtol=2e-3)
  assert np.all(message[9] > 20 * message[[3, 15]].max())


def test_plan_shapes_and_weights():
  size, num_views = 12, 3
  rig = rigs.get_rig("h36m").subset([0, 1, 2])
  fundamental = epipolar.pair_fundamental_matrices(rig, size)
  plan = epipolar_fusion.line_plan(fundamental, size, num_lines=10)
  pairs = num_views * (num_views - 1)
  _, _, rows, major = epipolar_fusion.band_layout(size, WIDTH)
  assert plan["line_index"].shape == (pairs * 10, major * rows)
  assert plan["target_index"].shape == (num_views * size * size, 4 * (num_views - 1))
  assert 0 <= int(tf.reduce_min(plan["line_index"]))
  assert int(tf.reduce_max(plan["line_index"])) < num_views * size * size
  # Catmull-Rom weights of a pixel with a line sum to 1.
  sums = tf.reduce_sum(tf.reshape(plan["target_weight"], [-1, num_views - 1, 4]), -1).numpy()
  assert np.all((np.abs(sums - 1) < 1e-5) | (sums == 0)) and np.mean(sums > 0.5) > 0.5


def test_bad_inputs_name_the_value():
  heatmaps = np.zeros((3, 8, 8, 2), np.float32)
  with pytest.raises(ValueError, match=r"expected \(6, 3, 3\) for 3 views"):
    epipolar_fusion.epipolar_fuse(heatmaps, np.zeros((2, 3, 3)))
  with pytest.raises(ValueError, match="NaN or Inf"):
    epipolar_fusion.epipolar_fuse(heatmaps, np.full((6, 3, 3), np.nan))
  with pytest.raises(ValueError, match=r"expected \[V, H, W, J\]"):
    epipolar_fusion.epipolar_fuse(heatmaps[0], np.zeros((6, 3, 3)))
  with pytest.raises(ValueError, match="line_width_px"):
    epipolar_fusion.line_plan(np.zeros((6, 3, 3)), 8, line_width_px=0.0)
