"""Rotated crop affines and the epipolar geometry between two crops, on real Panoptic joints."""

import numpy as np
import pytest

from mf_tf.data import panoptic
from mf_tf.geometry import camera as camera_lib
from mf_tf.geometry import crops
from mf_tf.geometry import epipolar


def _rotate(angle, vector):
  cos, sin = np.cos(angle), np.sin(angle)
  return np.array([cos * vector[0] - sin * vector[1], sin * vector[0] + cos * vector[1]])


@pytest.mark.parametrize("rotation", [0.0, 0.7, -2.5])
def test_roi_affine_maps_roi_corners_to_grid_corners(rotation):
  center, size, grid = np.array([100.0, 50.0]), 40.0, 16
  affine = crops.roi_affine(center, size, rotation, grid)
  half = size / 2
  # ROI corners, top-left first and clockwise in the crop's own (upright) frame.
  corners = np.stack([center + _rotate(rotation, offset) for offset in
                      ([-half, -half], [half, -half], [half, half], [-half, half])])
  np.testing.assert_allclose(
      crops.apply_affine(affine, corners),
      [[-0.5, -0.5], [grid - 0.5, -0.5], [grid - 0.5, grid - 0.5], [-0.5, grid - 0.5]],
      atol=1e-12)
  np.testing.assert_allclose(crops.apply_affine(affine, center[None]), [[7.5, 7.5]], atol=1e-12)
  points = np.random.default_rng(0).uniform(0, 200, (10, 2))
  np.testing.assert_allclose(
      crops.apply_affine(np.linalg.inv(affine), crops.apply_affine(affine, points)), points,
      atol=1e-10)


def test_roi_rotation_direction_and_rescale():
  # Rotation +90 degrees: the crop's "up" is the image's +x (the body lies head to the right).
  affine = crops.roi_affine([100.0, 50.0], 40.0, np.pi / 2, 16)
  np.testing.assert_allclose(crops.apply_affine(affine, [[120.0, 50.0]]), [[7.5, -0.5]],
                             atol=1e-12)
  # The same ROI on a 4x finer grid: grid corners still map to grid corners.
  fine = crops.roi_affine([100.0, 50.0], 40.0, np.pi / 2, 64)
  np.testing.assert_allclose(crops.rescale_affine(fine, 64, 16), affine, atol=1e-12)
  # Leading dims broadcast: a stack of ROIs gives a stack of affines.
  stack = crops.roi_affine([[100.0, 50.0], [10.0, 20.0]], [40.0, 30.0], [np.pi / 2, 0.0], 16)
  assert stack.shape == (2, 3, 3)
  np.testing.assert_allclose(stack[0], affine)
  with pytest.raises(ValueError, match="ROI size must be positive"):
    crops.roi_affine([0.0, 0.0], -1.0, 0.0, 16)


def test_crop_sample_coords_read_the_undistorted_image():
  camera = camera_lib.Camera("c", [[1000.0, 0, 960], [0, 1000.0, 540], [0, 0, 1]], np.eye(3),
                             [0.0, 0.0, 3000.0], [-0.28, 0.17, 0.0, 0.0, -0.04], 1920, 1080)
  affine = crops.roi_affine([1500.0, 300.0], 600.0, 0.4, 32)
  raw = crops.crop_sample_coords(affine, 32, camera)
  plain = crops.crop_sample_coords(affine, 32)
  assert raw.shape == plain.shape == (32, 32, 2)
  np.testing.assert_allclose(crops.apply_affine(affine, plain.reshape(-1, 2)),
                             np.stack(np.meshgrid(np.arange(32.0), np.arange(32.0)), -1)
                             .reshape(-1, 2), atol=1e-9)
  np.testing.assert_allclose(camera_lib.undistort_points(camera, raw), plain, atol=1e-6)
  assert np.abs(raw - plain).max() > 10.0  # The lens model really moves the grid.


@pytest.fixture(scope="module")
def panoptic_pair(shared_data):
  seq = shared_data / "panoptic" / "160906_band1"
  data = panoptic.read_panoptic_sequence(str(seq), "hd", ["00_03", "00_12"])
  return data["rig"].cameras, data["joints3d"]


def _person_crops(cameras, joints3d, rotations, sizes):
  """A crop affine per view and body: centred on the projected body centre, rotated, scaled."""
  affines = []
  for camera, rotation, size in zip(cameras, rotations, sizes):
    uv, _ = camera.project(joints3d[:, 2], distort=False)  # coco19 "bodycenter"
    affines.append(crops.roi_affine(uv, np.full(len(uv), size), np.full(len(uv), rotation), 64))
  return affines


def test_crop_fundamental_matrix_on_real_panoptic_joints(panoptic_pair):
  (cam_u, cam_v), joints3d = panoptic_pair  # 60 bodies x 19 joints, mm, NaN where missing.
  affine_u, affine_v = _person_crops((cam_u, cam_v), joints3d, (0.6, -1.1), (700.0, 950.0))
  F_crop = crops.crop_fundamental_matrix(cam_u, cam_v, affine_u, affine_v)  # [60, 3, 3]
  assert F_crop.shape == (60, 3, 3)
  # Exact geometry: undistorted projections mapped into both crops.
  uv_u, _ = cam_u.project(joints3d, distort=False)
  uv_v, _ = cam_v.project(joints3d, distort=False)
  h_u = crops.apply_affine(affine_u, uv_u)  # [60, 19, 2] heatmap pixels of crop u
  h_v = crops.apply_affine(affine_v, uv_v)
  valid = np.isfinite(h_u[..., 0])
  in_grid = lambda h: np.all((h > -0.5) & (h < 63.5), axis=-1)  # noqa: E731
  inside = valid & in_grid(h_u) & in_grid(h_v)
  assert inside.sum() > 500  # Most joints fall inside both 64 x 64 crops.
  lines = epipolar.epipolar_lines(F_crop[:, None], h_u)  # [60, 19, 3]
  distance = epipolar.point_line_distance(h_v, lines)[valid]
  assert distance.max() < 1e-6, distance.max()  # Well within the required 1 px.
  # Convention x_v^T F x_u = 0: the reversed pair gives the transpose (up to sign).
  F_back = crops.crop_fundamental_matrix(cam_v, cam_u, affine_v, affine_u)
  sign = np.sign(np.sum(F_back * np.swapaxes(F_crop, -1, -2), axis=(-2, -1)))[:, None, None]
  np.testing.assert_allclose(F_back, sign * np.swapaxes(F_crop, -1, -2), atol=1e-9)
  # Swapping the crop affines breaks the constraint: the test can fail.
  wrong = crops.crop_fundamental_matrix(cam_u, cam_v, affine_v, affine_u)
  wrong_distance = epipolar.point_line_distance(h_v, epipolar.epipolar_lines(wrong[:, None], h_u))
  assert np.median(wrong_distance[inside]) > 1.0


def test_crop_fundamental_matrix_with_lens_distortion(panoptic_pair):
  (cam_u, cam_v), joints3d = panoptic_pair
  assert abs(cam_u.dist[0]) > 0.2 and abs(cam_v.dist[0]) > 0.2  # k1 ~ -0.28 and -0.29
  affine_u, affine_v = _person_crops((cam_u, cam_v), joints3d, (0.6, -1.1), (700.0, 950.0))
  F_crop = crops.crop_fundamental_matrix(cam_u, cam_v, affine_u, affine_v)
  # What a detector sees: raw (distorted) pixels, put into crops of the raw image.
  raw_u = crops.apply_affine(affine_u, cam_u.project(joints3d)[0])
  raw_v = crops.apply_affine(affine_v, cam_v.project(joints3d)[0])
  valid = np.isfinite(raw_u[..., 0])
  fixed_u = crops.undistort_crop_points(cam_u, affine_u, raw_u)
  fixed_v = crops.undistort_crop_points(cam_v, affine_v, raw_v)
  fixed = epipolar.point_line_distance(fixed_v, epipolar.epipolar_lines(F_crop[:, None], fixed_u))
  assert fixed[valid].max() < 1e-6, fixed[valid].max()
  # Ignoring distortion on these 64 x 64 crops (700 and 950 px ROIs) costs, over 1060 joints:
  # median 0.05, 95th percentile 0.38, max 0.62 heatmap px, growing toward the image corners.
  ignored = epipolar.point_line_distance(raw_v, epipolar.epipolar_lines(F_crop[:, None], raw_u))
  assert np.percentile(ignored[valid], 95) > 0.2, np.percentile(ignored[valid], 95)
  assert np.median(ignored[valid]) < 0.2, np.median(ignored[valid])


def test_crop_fundamental_matrix_rejects_bad_affines(panoptic_pair):
  (cam_u, cam_v), _ = panoptic_pair
  with pytest.raises(ValueError, match="source_affine has shape"):
    crops.crop_fundamental_matrix(cam_u, cam_v, np.eye(2), np.eye(3))
  with pytest.raises(ValueError, match="target_affine holds non-finite"):
    crops.crop_fundamental_matrix(cam_u, cam_v, np.eye(3), np.full((3, 3), np.nan))
