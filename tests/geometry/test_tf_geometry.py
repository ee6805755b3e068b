"""TF twins of the camera and crop geometry equal their NumPy counterparts (float64 and float32)."""

import numpy as np
import pytest
import tensorflow as tf

from mf_tf.geometry import camera as camera_lib
from mf_tf.geometry import crops
from mf_tf.geometry import epipolar
from mf_tf.geometry import tf_geometry
from mf_tf.geometry.rig import Rig, ordered_pairs
from mf_tf.geometry.rigs import ring_rig

NUM_VIEWS = 3
# Every Brown-Conrady term non-zero and different per view (Human3.6M-like magnitudes).
DISTORTION = np.array([-0.21, 0.12, 1.5e-3, -1.0e-3, -0.02])
# (tolerance, dtype): absolute, in pixels (coordinates up to 640) or unit-norm matrix entries.
PRECISIONS = [pytest.param(np.float64, 1e-9, id="float64"),
              pytest.param(np.float32, 1e-4, id="float32")]


@pytest.fixture(scope="module")
def rig():
  """Three 640x480 cameras with full distortion and a skewed, off-centre K."""
  ring = ring_rig(NUM_VIEWS, seed=4, image_size=(640, 480))
  cameras = []
  for view, camera in enumerate(ring.cameras):
    K = camera.K.copy()
    K[0, 1] = 0.8 * (view + 1)  # Skew exercises the off-diagonal term of K.
    K[:2, 2] += [7.0 * view, -5.0 * view]
    cameras.append(camera_lib.Camera(camera.name, K, camera.R, camera.t,
                                     DISTORTION * (1.0 + 0.15 * view), camera.width,
                                     camera.height))
  return Rig("tf_twins", cameras, up=ring.up, floor=ring.floor)


def _camera_arrays(rig):
  return (np.stack([c.K for c in rig.cameras]), np.stack([c.dist for c in rig.cameras]))


def _pixels(rng, frames=4, points=9):
  """[frames, V, points, 2] pixels over the whole 640x480 image, corners included."""
  return rng.uniform([0.0, 0.0], [640.0, 480.0], (frames, NUM_VIEWS, points, 2))


def _per_view(function, rig, uv):
  return np.stack([function(camera, uv[:, view]) for view, camera in enumerate(rig.cameras)],
                  axis=1)


@pytest.mark.parametrize("dtype, tolerance", PRECISIONS)
def test_undistort_pixels_equals_camera_undistort_points(rig, dtype, tolerance):
  uv = _pixels(np.random.default_rng(0))
  K, dist = _camera_arrays(rig)
  got = tf_geometry.undistort_pixels(tf.constant(uv, dtype), K, dist)
  assert got.dtype == dtype and got.shape == uv.shape
  want = _per_view(camera_lib.undistort_points, rig, uv)
  assert np.abs(want - uv).max() > 5.0  # The distortion moves the corners by pixels.
  np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=tolerance)


@pytest.mark.parametrize("dtype, tolerance", PRECISIONS)
def test_distort_pixels_equals_camera_distort_points(rig, dtype, tolerance):
  uv = _pixels(np.random.default_rng(1))
  K, dist = _camera_arrays(rig)
  got = tf_geometry.distort_pixels(tf.constant(uv, dtype), K, dist)
  assert got.dtype == dtype and got.shape == uv.shape
  np.testing.assert_allclose(got.numpy(), _per_view(camera_lib.distort_points, rig, uv),
                             rtol=0, atol=tolerance)


def test_distort_pixels_inverts_undistort_pixels(rig):
  uv = _pixels(np.random.default_rng(2))
  K, dist = _camera_arrays(rig)
  undistorted = tf_geometry.undistort_pixels(tf.constant(uv), K, dist)
  np.testing.assert_allclose(tf_geometry.distort_pixels(undistorted, K, dist).numpy(), uv,
                             rtol=0, atol=1e-9)


def _crop_affines(rng, frames=4):
  """[frames, V, 3, 3] rotated ROI affines onto a 64 x 64 crop heatmap."""
  centres = rng.uniform([150.0, 100.0], [490.0, 380.0], (frames, NUM_VIEWS, 2))
  return crops.roi_affine(centres, rng.uniform(120.0, 400.0, (frames, NUM_VIEWS)),
                          rng.uniform(-np.pi, np.pi, (frames, NUM_VIEWS)), 64)


@pytest.mark.parametrize("dtype, tolerance", PRECISIONS)
def test_apply_affine_equals_crops_apply_affine(dtype, tolerance):
  rng = np.random.default_rng(3)
  affines = _crop_affines(rng)
  points = _pixels(rng)
  for maps, scale in ((affines, 1.0), (np.linalg.inv(affines), 10.0)):  # Inverse: crop -> image.
    got = tf_geometry.apply_affine(tf.constant(maps, dtype), tf.constant(points / scale, dtype))
    assert got.dtype == dtype
    np.testing.assert_allclose(got.numpy(), crops.apply_affine(maps, points / scale), rtol=0,
                               atol=tolerance * scale)


@pytest.mark.parametrize("dtype, tolerance", PRECISIONS)
def test_crop_fundamental_matrices_equal_crops_crop_fundamental_matrix(rig, dtype, tolerance):
  affines = _crop_affines(np.random.default_rng(4))
  fundamental = epipolar.pair_fundamental_matrices(rig)  # [P, 3, 3], ordered_pairs order.
  got = tf_geometry.crop_fundamental_matrices(fundamental, tf.constant(affines, dtype), NUM_VIEWS)
  assert got.dtype == dtype and got.shape == (4, NUM_VIEWS * (NUM_VIEWS - 1), 3, 3)
  want = np.stack([
      crops.crop_fundamental_matrix(rig.cameras[source], rig.cameras[target],
                                    affines[:, source], affines[:, target])
      for source, target in ordered_pairs(NUM_VIEWS)], axis=1)
  np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=tolerance)


def test_crop_fundamental_matrices_hold_for_projected_joints(rig):
  # h_v^T F_crop h_u = 0 for the crop points of one 3D point seen by every view.
  rng = np.random.default_rng(5)
  affines = _crop_affines(rng, frames=2)
  points = np.array([0.0, 0.0, 900.0]) + rng.uniform(-300, 300, (2, 5, 3))  # [frames, N, 3]
  undistorted = np.stack([c.project(points, distort=False)[0] for c in rig.cameras], axis=1)
  crop_points = tf_geometry.apply_affine(tf.constant(affines), tf.constant(undistorted)).numpy()
  homogeneous = np.concatenate([crop_points, np.ones_like(crop_points[..., :1])], axis=-1)
  fundamental = tf_geometry.crop_fundamental_matrices(
      epipolar.pair_fundamental_matrices(rig), affines, NUM_VIEWS).numpy()
  for pair, (source, target) in enumerate(ordered_pairs(NUM_VIEWS)):
    residual = np.einsum("bni,bij,bnj->bn", homogeneous[:, target], fundamental[:, pair],
                         homogeneous[:, source])
    np.testing.assert_allclose(residual, 0.0, atol=1e-8)
