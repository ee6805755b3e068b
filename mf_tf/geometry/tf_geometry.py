"""TensorFlow twins of the camera and crop geometry, for graphs such as the serving export.

Each function here is the TF form of a NumPy function of `mf_tf.geometry` and equals it
(tests/geometry/test_tf_geometry.py): it is batched over cameras or frames, built from TF ops
only, and keeps the dtype of its input, so a SavedModel can bake a rig's calibration in as
constants and evaluate the geometry per request.

    undistort_pixels           `camera.undistort_points`
    distort_pixels             `camera.distort_points`
    apply_affine               `crops.apply_affine` (affine maps)
    crop_fundamental_matrices  `crops.crop_fundamental_matrix` over every ordered pair

Conventions are those of `mf_tf.geometry.camera` (Brown-Conrady [k1, k2, p1, p2, k3], pixel
centres at integers) and `mf_tf.geometry.crops` (crop affines act on UNDISTORTED image pixels).
"""

from __future__ import annotations

import tensorflow as tf

from mf_tf.geometry import camera as camera_lib
from mf_tf.geometry.rig import ordered_pairs


def undistort_pixels(uv, K, dist, iterations: int = 10):
  """Removes Brown-Conrady distortion from pixel coordinates (Newton's method).

  The TF twin of `mf_tf.geometry.camera.undistort_points`, batched over cameras: the camera axis
  of K and dist broadcasts against the points' view axis.

  Args:
    uv: [..., V, N, 2] distorted pixel coordinates.
    K: [V, 3, 3] intrinsics.
    dist: [V, 5] distortion [k1, k2, p1, p2, k3].
    iterations: Newton steps (converges to machine precision in a few within a camera's view).

  Returns:
    [..., V, N, 2] undistorted pixel coordinates (K applied to the pinhole projection), the dtype
    of `uv`.
  """
  uv = tf.convert_to_tensor(uv)
  dist = tf.cast(dist, uv.dtype)
  xd, yd = _pixels_to_normalized(uv, K)
  coefficients = (dist[:, i][:, None] for i in range(5))  # Each [V, 1], over points.
  x, y = camera_lib.brown_undistort(xd, yd, *coefficients, iterations=iterations,
                                    where=tf.where)
  return _normalized_to_pixels(x, y, K)


def distort_pixels(uv, K, dist):
  """Applies Brown-Conrady distortion to undistorted pixel coordinates.

  The TF twin of `mf_tf.geometry.camera.distort_points` and the inverse of `undistort_pixels`,
  batched over cameras likewise.

  Args:
    uv: [..., V, N, 2] undistorted pixel coordinates.
    K: [V, 3, 3] intrinsics.
    dist: [V, 5] distortion [k1, k2, p1, p2, k3].

  Returns:
    [..., V, N, 2] distorted pixel coordinates, the dtype of `uv`.
  """
  uv = tf.convert_to_tensor(uv)
  x, y = _pixels_to_normalized(uv, K)
  xd, yd = tf.unstack(camera_lib.distort_normalized_tf(
      tf.stack([x, y], -1), tf.cast(dist, uv.dtype)), axis=-1)
  return _normalized_to_pixels(xd, yd, K)


def _intrinsics(K, dtype):
  """fx, skew, cx, fy, cy of [V, 3, 3] intrinsics, each [V, 1] (broadcast over points)."""
  K = tf.cast(K, dtype)
  return (K[:, 0, 0][:, None], K[:, 0, 1][:, None], K[:, 0, 2][:, None], K[:, 1, 1][:, None],
          K[:, 1, 2][:, None])


def _pixels_to_normalized(uv, K):
  """[..., V, N, 2] pixels -> (x, y) normalized image coordinates, each [..., V, N]."""
  fx, skew, cx, fy, cy = _intrinsics(K, uv.dtype)
  y = (uv[..., 1] - cy) / fy
  return (uv[..., 0] - cx - skew * y) / fx, y


def _normalized_to_pixels(x, y, K):
  """Normalized (x, y), each [..., V, N] -> [..., V, N, 2] pixels."""
  fx, skew, cx, fy, cy = _intrinsics(K, x.dtype)
  return tf.stack([fx * x + skew * y + cx, fy * y + cy], axis=-1)


def apply_affine(affines, points):
  """Applies affine maps to points, the TF twin of `mf_tf.geometry.crops.apply_affine`.

  Only the top two rows are read: the maps must be affine (last row [0, 0, 1]), as crop affines
  and their inverses are, where the NumPy form also divides by the projective coordinate.

  Args:
    affines: [..., 3, 3] affine maps.
    points: [..., N, 2] points.

  Returns:
    [..., N, 2] mapped points.
  """
  linear, offset = affines[..., :2, :2], affines[..., :2, 2]
  return tf.linalg.matvec(linear[..., None, :, :], points) + offset[..., None, :]


def crop_fundamental_matrices(fundamental, affines, num_views: int):
  """Fundamental matrices between the crops of every ordered pair, batched over frames.

  The TF twin of `mf_tf.geometry.crops.crop_fundamental_matrix`: F_crop = A_v^-T F A_u^-1 for
  the pair (source u -> target v), so that h_v^T F_crop h_u = 0 for crop points h = A x (H&Z 9.2
  with the point maps x' = A x).

  Args:
    fundamental: [P, 3, 3] pair fundamental matrices in undistorted image pixels,
      x_v^T F x_u = 0, `ordered_pairs` order (P = V (V - 1); `epipolar.pair_fundamental_matrices`).
    affines: [B, V, 3, 3] crop affines, undistorted image pixels -> crop pixels.
    num_views: V.

  Returns:
    [B, P, 3, 3] F_crop, unit Frobenius norm, the dtype of `affines`.
  """
  affines = tf.convert_to_tensor(affines)
  fundamental = tf.cast(fundamental, affines.dtype)
  pairs = ordered_pairs(num_views)
  inverse = tf.linalg.inv(affines)  # [B, V, 3, 3]
  source = tf.gather(inverse, pairs[:, 0], axis=1)  # [B, P, 3, 3]
  target = tf.gather(inverse, pairs[:, 1], axis=1)
  crop = tf.linalg.matmul(target, tf.linalg.matmul(fundamental[None], source), transpose_a=True)
  return crop / tf.norm(crop, axis=[-2, -1], keepdims=True)
