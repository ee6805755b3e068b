"""Epipolar geometry on real Panoptic cameras and joints."""

import json

import numpy as np
import pytest

from mf_tf.geometry import calibration
from mf_tf.geometry.camera import undistort_points
from mf_tf.geometry.epipolar import (epipolar_lines, fundamental_matrix, heatmap_fundamental_matrix,
                                     heatmap_scale, pair_fundamental_matrices, point_line_distance,
                                     symmetric_epipolar_distance)
from mf_tf.geometry.rig import ordered_pairs


@pytest.fixture(scope="module")
def panoptic(shared_data):
  folder = shared_data / "panoptic/160906_band1"
  rig = calibration.read_panoptic(folder / "calibration_160906_band1.json", "hd",
                                  ["00_03", "00_06", "00_12", "00_23"])
  joints = []
  for path in sorted((folder / "hdPose3d_stage1_coco19").glob("*.json")):
    for body in json.loads(path.read_text())["bodies"]:
      values = np.asarray(body["joints19"]).reshape(-1, 4)
      joints.append(values[values[:, 3] > 0.1, :3] * 10.0)  # cm -> mm
  return rig, np.concatenate(joints)


def test_real_correspondences_satisfy_epipolar_constraint(panoptic):
  rig, joints = panoptic
  source, target = rig.cameras[0], rig.cameras[2]
  # Observed (distorted) pixels of real joints, undistorted as a detector's output would be.
  x_source = undistort_points(source, source.project(joints)[0])
  x_target = undistort_points(target, target.project(joints)[0])
  F = fundamental_matrix(source, target)
  homogeneous = lambda x: np.concatenate([x, np.ones_like(x[:, :1])], axis=1)
  algebraic = np.einsum("ni,ij,nj->n", homogeneous(x_target), F, homogeneous(x_source))
  assert np.abs(algebraic).max() < 1e-8
  distance = point_line_distance(x_target, epipolar_lines(F, x_source))
  assert distance.max() < 1e-4  # pixels
  # A wrong correspondence is far from its line: the test has teeth.
  assert np.median(point_line_distance(x_target[::-1], epipolar_lines(F, x_source))) > 5.0
  # The transpose maps target points to lines in the source image.
  np.testing.assert_array_less(point_line_distance(x_source, epipolar_lines(F.T, x_target)), 1e-4)
  # The epipole (image of the source centre) lies on every epipolar line.
  epipole = target.project(source.center[None], distort=False)[0]
  np.testing.assert_array_less(
      point_line_distance(np.broadcast_to(epipole, x_source.shape),
                          epipolar_lines(F, x_source)), 1e-3)


def test_lines_are_normalized(panoptic):
  rig, joints = panoptic
  lines = epipolar_lines(fundamental_matrix(rig.cameras[1], rig.cameras[3]),
                         rig.cameras[1].project(joints, distort=False)[0])
  np.testing.assert_allclose(np.hypot(lines[:, 0], lines[:, 1]), 1.0)


def test_heatmap_fundamental_matrix(panoptic):
  rig, joints = panoptic
  source, target = rig.cameras[0], rig.cameras[1]
  for heatmap_size in (64, (48, 80)):
    F = heatmap_fundamental_matrix(source, target, heatmap_size)
    to_heatmap = lambda camera, uv: (np.concatenate([uv, np.ones_like(uv[:, :1])], axis=1)
                                     @ heatmap_scale(camera, heatmap_size).T)[:, :2]
    h_source = to_heatmap(source, source.project(joints, distort=False)[0])
    h_target = to_heatmap(target, target.project(joints, distort=False)[0])
    distance = point_line_distance(h_target, epipolar_lines(F, h_source))
    assert distance.max() < 1e-6
  height, width = 48, 80
  np.testing.assert_allclose(np.diag(heatmap_scale(source, (height, width))),
                             [width / 1920, height / 1080, 1.0])


def test_pair_fundamental_matrices_follow_pair_order(panoptic):
  rig, _ = panoptic
  stacked = pair_fundamental_matrices(rig, heatmap_size=32)
  assert stacked.shape == (12, 3, 3)
  for index, (source, target) in enumerate(ordered_pairs(rig.num_views)):
    np.testing.assert_allclose(
        stacked[index], heatmap_fundamental_matrix(rig.cameras[source], rig.cameras[target], 32))
  # Pair (u -> v) and (v -> u) are transposes (up to sign).
  forward = stacked[0]   # (1 -> 0)
  backward = stacked[3]  # (0 -> 1)
  sign = np.sign(np.sum(forward * backward.T))
  np.testing.assert_allclose(forward, sign * backward.T, atol=1e-12)


def test_symmetric_epipolar_distance_of_a_rectified_pair():
  """A rectified pair (pure x-translation, equal K): F = [0 0 0; 0 0 -1; 0 1 0] up to scale, every
  epipolar line horizontal, so both distances are |y_source - y_target| (H&Z 9.3 and 11.10)."""
  F = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]]) * 3.7
  source = np.array([[10.0, 20.0], [300.0, -5.0], [0.0, 0.0]])
  target = np.array([[50.0, 23.0], [-40.0, -5.0], [7.0, -2.5]])
  np.testing.assert_allclose(symmetric_epipolar_distance(F, source, target), [3.0, 0.0, 2.5],
                             atol=1e-12)
  # Broadcasting: [3, 1, 2] against [1, 3, 2] gives every pair.
  every = symmetric_epipolar_distance(F, source[:, None], target[None])
  np.testing.assert_allclose(every, np.abs(source[:, None, 1] - target[None, :, 1]), atol=1e-12)
