"""Epipolar geometry of a camera pair (Hartley & Zisserman, "Multiple View Geometry", 2nd ed.).

All fundamental matrices here act on homogeneous UNDISTORTED coordinates (pixels, or heatmap
pixels for the `heatmap_*` versions): x_target^T F x_source = 0 for corresponding points. Apply
`camera.undistort_points` first when the observations carry lens distortion.
"""

from __future__ import annotations

import numpy as np

from mf_tf.geometry.camera import Camera
from mf_tf.geometry.rig import Rig


def skew(vector: np.ndarray) -> np.ndarray:
  """[3] -> [3, 3] cross-product matrix [v]x, so that [v]x w = v x w (H&Z A4.5)."""
  x, y, z = np.asarray(vector, np.float64)
  return np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])


def relative_pose(source: Camera, target: Camera):
  """Pose of the target camera frame relative to the source camera frame.

  Returns:
    R: [3, 3] and t: [3] (mm) with x_target_cam = R x_source_cam + t.
  """
  rotation = target.R @ source.R.T
  return rotation, target.t - rotation @ source.t


def fundamental_matrix(source: Camera, target: Camera) -> np.ndarray:
  """Fundamental matrix of the ordered pair (source -> target), H&Z 9.2.2 (Eq. 9.2 / result 9.9).

  F = K_t^-T [t]x R K_s^-1 with (R, t) the relative pose of `relative_pose`, scaled to unit
  Frobenius norm.

  Args:
    source: Camera of the source view.
    target: Camera of the target view.

  Returns:
    [3, 3] F with x_target^T F x_source = 0 for homogeneous undistorted pixel coordinates.
  """
  rotation, translation = relative_pose(source, target)
  essential = skew(translation) @ rotation
  F = np.linalg.inv(target.K).T @ essential @ np.linalg.inv(source.K)
  return F / np.linalg.norm(F)


def heatmap_scale(camera: Camera, heatmap_size) -> np.ndarray:
  """[3, 3] S mapping homogeneous image pixels to heatmap pixels: (x, y) = (u W/width, v H/height).

  Args:
    camera: Camera whose whole image the heatmap covers.
    heatmap_size: int (square heatmap) or (H, W).
  """
  height, width = _heatmap_hw(heatmap_size)
  return np.diag([width / camera.width, height / camera.height, 1.0])


def heatmap_fundamental_matrix(source: Camera, target: Camera, heatmap_size) -> np.ndarray:
  """Fundamental matrix of (source -> target) in heatmap pixel coordinates.

  With x_h = S x (see `heatmap_scale`), F_h = S_t^-T F S_s^-1, so x_h_t^T F_h x_h_s = 0.

  Args:
    source: Camera of the source view.
    target: Camera of the target view.
    heatmap_size: int (square) or (H, W), the same for both views.

  Returns:
    [3, 3] F_h, unit Frobenius norm.
  """
  scale_source = heatmap_scale(source, heatmap_size)
  scale_target = heatmap_scale(target, heatmap_size)
  F = (np.linalg.inv(scale_target).T @ fundamental_matrix(source, target)
       @ np.linalg.inv(scale_source))
  return F / np.linalg.norm(F)


def pair_fundamental_matrices(rig: Rig, heatmap_size=None) -> np.ndarray:
  """Fundamental matrices of every ordered pair of a rig, in `rig.pairs` order.

  Args:
    rig: The rig.
    heatmap_size: None for image pixels, else int or (H, W) for heatmap pixels.

  Returns:
    [V * (V - 1), 3, 3] float64, entry p for the pair (source, target) = rig.pairs[p].
  """
  matrices = []
  for source, target in rig.pairs:
    source_camera, target_camera = rig.cameras[source], rig.cameras[target]
    if heatmap_size is None:
      matrices.append(fundamental_matrix(source_camera, target_camera))
    else:
      matrices.append(heatmap_fundamental_matrix(source_camera, target_camera, heatmap_size))
  return np.stack(matrices)


def epipolar_lines(F: np.ndarray, points_source: np.ndarray) -> np.ndarray:
  """Epipolar lines l = F x in the target image, normalized so that a^2 + b^2 = 1 (H&Z 9.2.1).

  Args:
    F: [..., 3, 3] fundamental matrices (broadcast against the points' leading dims).
    points_source: [..., 2] points in the source image.

  Returns:
    [..., 3] lines (a, b, c): a x + b y + c = 0; |a x + b y + c| is then a distance in pixels.
  """
  points = np.asarray(points_source, np.float64)
  homogeneous = np.concatenate([points, np.ones_like(points[..., :1])], axis=-1)
  lines = np.einsum("...ij,...j->...i", np.asarray(F, np.float64), homogeneous)
  norm = np.linalg.norm(lines[..., :2], axis=-1, keepdims=True)
  return lines / np.maximum(norm, 1e-12)


def point_line_distance(points: np.ndarray, lines: np.ndarray) -> np.ndarray:
  """Unsigned distance of points to normalized lines: [..., 2], [..., 3] -> [...]."""
  points = np.asarray(points, np.float64)
  lines = np.asarray(lines, np.float64)
  return np.abs(lines[..., 0] * points[..., 0] + lines[..., 1] * points[..., 1] + lines[..., 2])


def symmetric_epipolar_distance(F, points_source, points_target) -> np.ndarray:
  """Mean of the two point-to-epipolar-line distances (H&Z Eq. 11.10, unsquared).

  Args:
    F: [3, 3] with x_target^T F x_source = 0 (pixels, undistorted).
    points_source: [..., 2] source points.
    points_target: [..., 2] target points (broadcast with points_source).

  Returns:
    [...] (d(x_t, F x_s) + d(x_s, F^T x_t)) / 2, pixels.
  """
  in_target = epipolar_lines(F, points_source)
  in_source = epipolar_lines(np.swapaxes(F, -1, -2), points_target)
  return 0.5 * (point_line_distance(points_target, in_target)
                + point_line_distance(points_source, in_source))


def _heatmap_hw(heatmap_size):
  if np.ndim(heatmap_size) == 0:
    return int(heatmap_size), int(heatmap_size)
  if len(heatmap_size) != 2:
    raise ValueError(f"heatmap_size must be an int or (H, W), got {heatmap_size!r}")
  return int(heatmap_size[0]), int(heatmap_size[1])
