"""Projection and (un)distortion against OpenCV's numbers, written here as literals.

The expected values come from OpenCV 5.1 (`cv2.projectPoints`, and `cv2.undistortPoints` with
`criteria=(COUNT | EPS, 500, 1e-16)` so that its fixed-point iteration converges), on lenses
with all five Brown-Conrady coefficients [k1, k2, p1, p2, k3] non-zero and points towards the
image corners (normalized radius up to 0.7), where k3 r^6 moves a point by several pixels.
"""

import numpy as np
import tensorflow as tf

from mf_tf.geometry import bundle_adjustment
from mf_tf.geometry import tf_geometry
from mf_tf.geometry.camera import (Camera, distort_normalized, distort_points,
                                   project_points_tf, undistort_normalized, undistort_points)
from mf_tf.geometry.rig import Rig

# Camera 1: 1280x960; R is cv2.Rodrigues([0.1, -0.2, 0.05]).
K1 = np.array([[1150.0, 0.0, 640.0], [0.0, 1145.0, 470.0], [0.0, 0.0, 1.0]])
DIST1 = np.array([-0.25, 0.12, 1.2e-3, -8e-4, 0.08])
R1 = np.array([[0.9788428062071254, -0.0595199734937639, -0.1957655063893064],
               [0.03960732051223486, 0.9937772959432721, -0.10410545725138103],
               [0.20074366963468865, 0.0941491307606165, 0.9751091837730888]])
T1 = np.array([120.0, -80.0, 3000.0])

# Camera 2: 1024x768; R is cv2.Rodrigues([-0.05, 0.3, -0.02]).
K2 = np.array([[980.0, 0.0, 512.0], [0.0, 985.0, 384.0], [0.0, 0.0, 1.0]])
DIST2 = np.array([0.11, -0.21, -1.5e-3, 9e-4, 0.15])
R2 = np.array([[0.9551488415331651, 0.0122496515552539, 0.29587266949589563],
               [-0.02713388555973449, 0.9985611907129002, 0.04625257459283938],
               [-0.2948803872289303, -0.05220626819463162, 0.9541069451528515]])
T2 = np.array([-400.0, 60.0, 3200.0])

# World points, millimetres: four towards camera 1's image corners, two near its centre.
POINTS = np.array([[1397.3, 1089.2, -597.9], [-1742.7, 1563.8, 720.6],
                   [2046.6, -1602.3, 861.5], [-1800.3, -856.8, 453.4],
                   [185.2, 204.0, 557.5], [509.6, -253.5, -593.2]])

# cv2.projectPoints(POINTS, rvec, t, K, dist) for each camera.
UV1 = np.array([[1220.212592338969, 891.0974794310638],
                [86.84247291661052, 872.7788193545069],
                [1168.9109537898662, 38.45395247939922],
                [46.82134208874561, 101.72718680448594],
                [697.4538486862325, 492.8952211983673],
                [976.4915597313154, 358.44332207223124]])
UV2 = np.array([[868.6484330479345, 886.0194531093514],
                [89.58400418427749, 778.2246761345748],
                [1024.844349990262, -64.29020361972255],
                [39.735460958973135, 210.9411959459293],
                [497.1232221879013, 460.4412990948404],
                [475.903941461901, 291.3987298517068]])

# Observed (distorted) pixels of camera 1 and cv2.undistortPoints of them: normalized (no P) and
# pixels (P = K1).
OBSERVED1 = np.array([[1210.5, 905.0], [60.0, 880.25], [1190.0, 40.0], [30.0, 60.0],
                      [700.0, 500.0], [960.0, 300.0]])
UNDISTORTED1_NORMALIZED = np.array([[0.5407903467890478, 0.4132327264261841],
                                    [-0.5473047330001048, 0.38850522278561705],
                                    [0.5211984494972796, -0.4095354142924241],
                                    [-0.5787545543171707, -0.3916254514361688],
                                    [0.05222222869652317, 0.02621966252793949],
                                    [0.2856655039691704, -0.15250571189141612]])
UNDISTORTED1_PIXELS = np.array([[1261.908898807405, 943.1514717579807],
                                [10.599557049879422, 914.8384800895315],
                                [1239.3782169218716, 1.0819506351743939],
                                [-25.567737464746301, 21.588858105586723],
                                [700.0555630010017, 500.02151359449073],
                                [968.51532956454594, 295.38095988432855]])

# The same for camera 2 (P = K2).
OBSERVED2 = np.array([[1000.0, 740.0], [20.5, 700.0], [990.0, 30.0], [40.0, 25.0],
                      [530.0, 400.0], [300.0, 600.0]])
UNDISTORTED2_PIXELS = np.array([[990.4579406485855, 733.7973970433713],
                                [28.53425518283558, 695.1416641577247],
                                [979.7987738459855, 37.83851626982806],
                                [48.698622052016276, 32.35568817141217],
                                [529.9985630121356, 400.0000821427127],
                                [301.5039342721818, 598.5214466766578]])

ATOL_PX = 1e-6


def _camera1():
  return Camera("cam1", K1, R1, T1, DIST1, 1280, 960)


def _camera2():
  return Camera("cam2", K2, R2, T2, DIST2, 1024, 768)


def _normalized(K, uv):
  return (uv - K[:2, 2]) / np.diag(K)[:2]


def test_camera_project_matches_opencv():
  for camera, expected in ((_camera1(), UV1), (_camera2(), UV2)):
    uv, depth = camera.project(POINTS)
    np.testing.assert_allclose(uv, expected, rtol=0, atol=ATOL_PX, err_msg=camera.name)
    assert np.all(depth > 0)


def test_distortion_matches_opencv():
  camera = _camera1()
  np.testing.assert_allclose(distort_points(camera, UNDISTORTED1_PIXELS), OBSERVED1, rtol=0,
                             atol=ATOL_PX)
  np.testing.assert_allclose(distort_normalized(UNDISTORTED1_NORMALIZED, DIST1),
                             _normalized(K1, OBSERVED1), rtol=0, atol=1e-9)


def test_undistortion_matches_opencv():
  camera = _camera1()
  np.testing.assert_allclose(undistort_points(camera, OBSERVED1), UNDISTORTED1_PIXELS, rtol=0,
                             atol=ATOL_PX)
  np.testing.assert_allclose(undistort_normalized(_normalized(K1, OBSERVED1), DIST1),
                             UNDISTORTED1_NORMALIZED, rtol=0, atol=1e-9)


def test_undistortion_of_second_camera_matches_opencv():
  np.testing.assert_allclose(undistort_points(_camera2(), OBSERVED2), UNDISTORTED2_PIXELS,
                             rtol=0, atol=ATOL_PX)
  np.testing.assert_allclose(distort_points(_camera2(), UNDISTORTED2_PIXELS), OBSERVED2, rtol=0,
                             atol=ATOL_PX)


def test_tf_distortion_of_two_cameras_matches_opencv():
  K, dist = np.stack([K1, K2]), np.stack([DIST1, DIST2])
  observed = np.stack([OBSERVED1, OBSERVED2])[None]  # [1, V, N, 2]
  undistorted = np.stack([UNDISTORTED1_PIXELS, UNDISTORTED2_PIXELS])[None]
  np.testing.assert_allclose(
      tf_geometry.undistort_pixels(tf.constant(observed), K, dist).numpy(),
      undistorted, rtol=0, atol=ATOL_PX)
  np.testing.assert_allclose(tf_geometry.distort_pixels(tf.constant(undistorted), K, dist).numpy(),
                             observed, rtol=0, atol=ATOL_PX)


def test_rig_projection_tf_matches_opencv():
  stacked = Rig("oracle2", [_camera1(), _camera2()]).stacked()
  uv = project_points_tf(tf.constant(POINTS[None], tf.float64), stacked["K"], stacked["R"],
                         stacked["t"], stacked["dist"])  # Points [1, N, 3] against V = 2.
  assert uv.shape == (2, len(POINTS), 2)
  np.testing.assert_allclose(uv.numpy(), np.stack([UV1, UV2]), rtol=0, atol=ATOL_PX)


def test_bundle_adjustment_projection_matches_opencv():
  count = len(POINTS)
  per_observation = [np.repeat(np.stack([a, b])[:, None], count, axis=1).reshape(
      (2 * count,) + a.shape) for a, b in ((K1, K2), (DIST1, DIST2), (R1, R2), (T1, T2))]
  uv = bundle_adjustment.project(*per_observation, np.concatenate([POINTS, POINTS]))
  np.testing.assert_allclose(uv, np.concatenate([UV1, UV2]), rtol=0, atol=ATOL_PX)
