"""Pinhole camera with Brown-Conrady distortion, in millimetres.

Convention (used everywhere in mf_tf):
  x_cam = R @ X_world + t          (X in millimetres)
  [u, v, 1]^T ~ K @ distort(x_cam / z)
Distortion coefficients are OpenCV's [k1, k2, p1, p2, k3] (Hartley & Zisserman 7.4, Brown 1966).
"""

from __future__ import annotations

import dataclasses

import numpy as np


def _as_array(value, shape, name, camera_name):
  array = np.asarray(value, dtype=np.float64)
  if array.size != int(np.prod(shape)):
    raise ValueError(
        f"camera {camera_name!r}: field {name!r} has shape {array.shape}, expected {shape}")
  array = array.reshape(shape)
  if not np.all(np.isfinite(array)):
    raise ValueError(f"camera {camera_name!r}: field {name!r} holds non-finite values: {array}")
  array.setflags(write=False)
  return array


@dataclasses.dataclass(frozen=True, eq=False)
class Camera:
  """An immutable calibrated camera.

  Attributes:
    name: Camera name, unique within a rig.
    K: [3, 3] intrinsics in pixels.
    R: [3, 3] world-to-camera rotation.
    t: [3] world-to-camera translation in millimetres (x_cam = R X + t).
    dist: [5] distortion [k1, k2, p1, p2, k3].
    width: Image width in pixels.
    height: Image height in pixels.
  """

  name: str
  K: np.ndarray
  R: np.ndarray
  t: np.ndarray
  dist: np.ndarray
  width: int
  height: int

  def __post_init__(self):
    object.__setattr__(self, "K", _as_array(self.K, (3, 3), "K", self.name))
    object.__setattr__(self, "R", _as_array(self.R, (3, 3), "R", self.name))
    object.__setattr__(self, "t", _as_array(self.t, (3,), "t", self.name))
    dist = np.zeros(5) if self.dist is None else np.asarray(self.dist, np.float64).ravel()
    if dist.size < 5:  # Radial-only calibrations (k1, k2[, k3]) are padded by the readers.
      raise ValueError(f"camera {self.name!r}: field 'dist' has {dist.size} values, expected 5")
    object.__setattr__(self, "dist", _as_array(dist[:5], (5,), "dist", self.name))
    if int(self.width) <= 0 or int(self.height) <= 0:
      raise ValueError(
          f"camera {self.name!r}: image size {self.width}x{self.height}, expected positive")
    object.__setattr__(self, "width", int(self.width))
    object.__setattr__(self, "height", int(self.height))

  @property
  def center(self) -> np.ndarray:
    """[3] camera centre in world millimetres, C = -R^T t."""
    return -self.R.T @ self.t

  @property
  def projection_matrix(self) -> np.ndarray:
    """[3, 4] P = K [R | t] (ignores distortion)."""
    return self.K @ np.concatenate([self.R, self.t[:, None]], axis=1)

  def world_to_camera(self, points: np.ndarray) -> np.ndarray:
    """[..., 3] world mm -> [..., 3] camera-frame mm."""
    return np.asarray(points, np.float64) @ self.R.T + self.t

  def project(self, points: np.ndarray, distort: bool = True):
    """Projects world points to pixels.

    Args:
      points: [..., 3] world points in millimetres.
      distort: Apply lens distortion.

    Returns:
      uv: [..., 2] pixel coordinates.
      depth: [...] z in the camera frame, millimetres (negative: behind the camera).
    """
    x_cam = self.world_to_camera(points)
    depth = x_cam[..., 2]
    safe = np.where(np.abs(depth) < 1e-9, 1e-9, depth)
    xy = x_cam[..., :2] / safe[..., None]
    if distort:
      xy = distort_normalized(xy, self.dist)
    uv = xy @ self.K[:2, :2].T + self.K[:2, 2]
    return uv, depth

  def to_dict(self) -> dict:
    return {
        "name": self.name,
        "K": self.K.tolist(),
        "R": self.R.tolist(),
        "t": self.t.tolist(),
        "dist": self.dist.tolist(),
        "width": self.width,
        "height": self.height,
    }


def distort_normalized(xy: np.ndarray, dist: np.ndarray) -> np.ndarray:
  """Brown-Conrady distortion of normalized image coordinates.

  Args:
    xy: [..., 2] undistorted normalized coordinates (x/z, y/z).
    dist: [5] [k1, k2, p1, p2, k3].

  Returns:
    [..., 2] distorted normalized coordinates.
  """
  k1, k2, p1, p2, k3 = np.asarray(dist, np.float64)
  x, y = xy[..., 0], xy[..., 1]
  r2 = x * x + y * y
  radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
  xd = x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x)
  yd = y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y
  return np.stack([xd, yd], axis=-1)
