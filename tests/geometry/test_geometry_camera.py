"""Camera: distortion inverse, TF projection, dict validation."""

import numpy as np
import pytest
import tensorflow as tf

from mf_tf.geometry import calibration
from mf_tf.geometry.camera import (Camera, CalibrationError, distort_points, project_points_tf,
                                   undistort_points)


def _grid(camera, step=20):
  u, v = np.meshgrid(np.arange(-0.5, camera.width, step), np.arange(-0.5, camera.height, step))
  return np.stack([u, v], axis=-1)


@pytest.fixture(scope="module")
def real_distorted_cameras(shared_data):
  path = shared_data / "panoptic/160906_band1/calibration_160906_band1.json"
  vga = calibration.read_panoptic(path, "vga", ["01_01", "10_06", "20_24"])
  hd = calibration.read_panoptic(path, "hd", ["00_00", "00_16"])
  h36m = calibration.read_h36m(shared_data / "h36m/cameras.json", "S9")
  return vga.cameras + hd.cameras + h36m.cameras


def test_distort_undistort_round_trip_on_real_coefficients(real_distorted_cameras):
  for camera in real_distorted_cameras:
    observed = _grid(camera)  # Distorted pixels over the whole image, corners included.
    ideal = undistort_points(camera, observed)
    np.testing.assert_allclose(distort_points(camera, ideal), observed, atol=1e-3,
                               err_msg=camera.name)
    # And the other way: ideal pixels of points that land in the image.
    again = undistort_points(camera, distort_points(camera, ideal))
    np.testing.assert_allclose(again, ideal, atol=1e-3, err_msg=camera.name)
  assert np.abs(real_distorted_cameras[0].dist[0]) > 0.3  # The strong Panoptic VGA lens is covered.


def test_undistort_matches_pinhole_projection(real_distorted_cameras):
  camera = real_distorted_cameras[0]
  points = camera.center + 2500.0 * camera.R[2] + np.random.default_rng(0).normal(0, 400, (50, 3))
  distorted, _ = camera.project(points)
  pinhole, _ = camera.project(points, distort=False)
  np.testing.assert_allclose(undistort_points(camera, distorted), pinhole, atol=1e-6)


def test_project_points_tf_matches_numpy_with_broadcast(real_distorted_cameras):
  cameras = real_distorted_cameras[:4]
  rng = np.random.default_rng(1)
  points = rng.normal(0, 500, (2, 1, 6, 3)) + [0.0, -1000.0, 0.0]  # [B, 1, J, 3] vs V cameras
  K, R, t, dist = (np.stack([getattr(camera, field) for camera in cameras])
                   for field in ("K", "R", "t", "dist"))
  uv, depth = project_points_tf(tf.constant(points), K, R, t, dist, return_depth=True)
  assert uv.shape == (2, 4, 6, 2) and depth.shape == (2, 4, 6)
  for view, camera in enumerate(cameras):
    expected_uv, expected_depth = camera.project(points[:, 0])
    np.testing.assert_allclose(uv[:, view], expected_uv, rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(depth[:, view], expected_depth, rtol=1e-9)
  pinhole = project_points_tf(tf.constant(points), K, R, t)
  np.testing.assert_allclose(pinhole[:, 0], cameras[0].project(points[:, 0], distort=False)[0],
                             atol=1e-6)


def test_project_points_tf_gradient_matches_finite_differences(real_distorted_cameras):
  camera = real_distorted_cameras[0]
  point = tf.Variable([[50.0, -900.0, 120.0]], dtype=tf.float64)
  with tf.GradientTape() as tape:
    uv = project_points_tf(point, camera.K, camera.R, camera.t, camera.dist)
    total = tf.reduce_sum(uv * [[1.0, 2.0]])
  gradient = tape.gradient(total, point).numpy()
  numeric = np.zeros(3)
  for axis in range(3):
    delta = np.zeros((1, 3))
    delta[0, axis] = 1e-3
    plus = camera.project(point.numpy() + delta)[0] @ [1.0, 2.0]
    minus = camera.project(point.numpy() - delta)[0] @ [1.0, 2.0]
    numeric[axis] = (plus - minus).sum() / 2e-3
  np.testing.assert_allclose(gradient[0], numeric, rtol=1e-5)


def _good_dict():
  return {"name": "c0", "K": [[1000, 0, 500], [0, 1000, 400], [0, 0, 1]],
          "R": np.eye(3).tolist(), "t": [0.0, 0.0, 3000.0], "dist": [0.1, 0, 0, 0, 0],
          "width": 1000, "height": 800}


def test_from_dict_round_trip():
  camera = Camera.from_dict(_good_dict(), "rig.json")
  again = Camera.from_dict(camera.to_dict())
  for field in ("K", "R", "t", "dist"):
    np.testing.assert_array_equal(getattr(camera, field), getattr(again, field))
  assert (again.name, again.width, again.height) == ("c0", 1000, 800)


@pytest.mark.parametrize("change, words", [
    (lambda d: d.pop("K"), ["rig.json", "'c0'", "missing field 'K'"]),
    (lambda d: d.update(t=[1.0, 2.0]), ["rig.json", "field 't'", "shape (2,)", "expected (3,)"]),
    (lambda d: d.update(R=[[1, 0, 0], [0, 1, 0]]), ["field 'R'", "expected (3, 3)"]),
    (lambda d: d.update(t=[0.0, float("nan"), 3000.0]), ["field 't'", "non-finite"]),
    (lambda d: d.update(K=[[1000, 0, 500], [0, float("inf"), 400], [0, 0, 1]]),
     ["field 'K'", "non-finite"]),
    (lambda d: d.update(t=[0.0, 0.0, 3.0]), ["field 't'", "norm 3 mm", "wrong units"]),
    (lambda d: d.update(t=[0.0, 0.0, 3e6]), ["field 't'", "wrong units"]),
    (lambda d: d.update(R=(2 * np.eye(3)).tolist()), ["field 'R'", "not a rotation"]),
    (lambda d: d.update(K=[[-1000, 0, 500], [0, 1000, 400], [0, 0, 1]]), ["field 'K'", "fx, fy"]),
    (lambda d: d.update(width=0), ["'width'", "positive integers"]),
    (lambda d: d.update(dist=[0.1, 0.0]), ["field 'dist'", "expected (5,)"]),
])
def test_from_dict_rejects_bad_fields(change, words):
  d = _good_dict()
  change(d)
  with pytest.raises(CalibrationError) as error:
    Camera.from_dict(d, "rig.json")
  for word in words:
    assert word in str(error.value), str(error.value)
