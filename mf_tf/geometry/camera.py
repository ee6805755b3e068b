"""Pinhole camera with Brown-Conrady distortion, in millimetres.

Convention (used everywhere in mf_tf):
  x_cam = R @ X_world + t          (X in millimetres)
  [u, v, 1]^T ~ K @ distort(x_cam / z)
Distortion coefficients are OpenCV's [k1, k2, p1, p2, k3] (Hartley & Zisserman 7.4, Brown 1966).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import numpy as np
import tensorflow as tf

# A camera centre (equivalently |t|, since |t| = |R C| = |C|) outside this range, in millimetres,
# means the calibration is in the wrong units (metres or centimetres read as millimetres).
MIN_PLAUSIBLE_DISTANCE_MM = 50.0
MAX_PLAUSIBLE_DISTANCE_MM = 1e5
# Brown-Conrady coefficients of real lenses: |k1|, |k2|, |k3| below 1 for ordinary lenses and a few
# units for wide-angle ones (built-in rigs: at most 0.34), |p1|, |p2| below 0.01 (decentring). A
# coefficient outside these bounds is a unit or format error (e.g. sub-pixel or fisheye-model
# values), and its distortion is not invertible over the image.
MAX_PLAUSIBLE_RADIAL = 10.0
MAX_PLAUSIBLE_TANGENTIAL = 1.0
DISTORTION_NAMES = ("k1", "k2", "p1", "p2", "k3")


class CalibrationError(ValueError):
  """A calibration (file or dict) is missing a field, has a wrong shape, or implausible values."""


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

  @classmethod
  def from_dict(cls, d: Mapping[str, Any], source: str = "<dict>",
                check_units: bool = True) -> "Camera":
    """Builds a camera from the canonical dict written by `to_dict`, validating every field.

    Args:
      d: {"name", "K" [3,3], "R" [3,3], "t" [3] (mm), "dist" [5] (optional), "width", "height"}.
      source: Where `d` came from (a file name), quoted in error messages.
      check_units: Reject |t| (the camera's distance to the world origin) outside
        [MIN_PLAUSIBLE_DISTANCE_MM, MAX_PLAUSIBLE_DISTANCE_MM], the sign of metres or centimetres.

    Returns:
      The camera.

    Raises:
      CalibrationError: naming `source`, the camera, the field and what was expected.
    """
    if not isinstance(d, Mapping):
      raise CalibrationError(
          f"{source}: a camera entry must be a JSON object, got {type(d).__name__}")
    name = str(d.get("name", "<unnamed>"))
    where = f"{source}: camera {name!r}"
    for field in ("name", "K", "R", "t", "width", "height"):
      if field not in d:
        raise CalibrationError(f"{where}: missing field {field!r}")
    K = check_field(d["K"], (3, 3), "K", where)
    R = check_field(d["R"], (3, 3), "R", where)
    t = check_field(d["t"], (3,), "t", where)
    dist = check_field(d["dist"], (5,), "dist", where) if d.get("dist") is not None else np.zeros(5)
    for field in ("width", "height"):
      value = d[field]
      if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CalibrationError(f"{where}: field {field!r} is {value!r} "
                               f"({type(value).__name__}), expected an integer number of pixels")
    width = check_field(d["width"], (), "width", where)
    height = check_field(d["height"], (), "height", where)
    check_intrinsics(K, where)
    check_rotation(R, where)
    check_distortion(dist, where)
    if check_units:
      check_distance_mm(t, "t", where)
    if width <= 0 or height <= 0 or width != round(width) or height != round(height):
      raise CalibrationError(
          f"{where}: fields 'width'/'height' are {width}x{height}, expected positive integers")
    return cls(name, K, R, t, dist, int(width), int(height))

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


def brown_distort(x, y, k1, k2, p1, p2, k3):
  """Brown-Conrady distortion of normalized image coordinates, NumPy arrays or TF tensors alike.

  x_d = x (1 + k1 r^2 + k2 r^4 + k3 r^6) + 2 p1 x y + p2 (r^2 + 2 x^2),
  y_d = y (1 + k1 r^2 + k2 r^4 + k3 r^6) + p1 (r^2 + 2 y^2) + 2 p2 x y,  r^2 = x^2 + y^2
  (OpenCV's order and convention). The one copy of the model: `distort_normalized`,
  `undistort_normalized`, their TF forms and the exported graph's all call it.

  Args:
    x, y: Undistorted normalized coordinates (x/z, y/z), any shape.
    k1, k2, p1, p2, k3: Coefficients broadcasting against x and y.

  Returns:
    (x_d, y_d), the shape of x and y.
  """
  r2 = x * x + y * y
  radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
  return (x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x),
          y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y)


def brown_undistort(x_d, y_d, k1, k2, p1, p2, k3, *, iterations: int, where):
  """Inverse of `brown_distort` by Newton's method, NumPy arrays or TF tensors alike.

  Starts from the distorted point and takes `iterations` Newton steps on
  f(x) = distort(x) - x_d with the analytic 2x2 Jacobian; converges to machine precision within
  a few steps over a camera's field of view (where the distortion is invertible).

  Args:
    x_d, y_d: Distorted normalized coordinates, any shape.
    k1, k2, p1, p2, k3: Coefficients broadcasting against them.
    iterations: Newton steps (unrolled).
    where: `np.where` or `tf.where` (guards a vanishing Jacobian determinant).

  Returns:
    (x, y) undistorted normalized coordinates.
  """
  x, y = x_d, y_d
  for _ in range(iterations):
    fx, fy = brown_distort(x, y, k1, k2, p1, p2, k3)
    fx, fy = fx - x_d, fy - y_d
    r2 = x * x + y * y
    radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
    dradial = k1 + r2 * (2.0 * k2 + 3.0 * r2 * k3)  # d radial / d r2
    jxx = radial + 2.0 * x * x * dradial + 2.0 * p1 * y + 6.0 * p2 * x
    jxy = 2.0 * x * y * dradial + 2.0 * p1 * x + 2.0 * p2 * y  # = jyx
    jyy = radial + 2.0 * y * y * dradial + 6.0 * p1 * y + 2.0 * p2 * x
    det = jxx * jyy - jxy * jxy
    det = where(abs(det) < 1e-12, 1e-12 + 0.0 * det, det)
    x, y = x - (jyy * fx - jxy * fy) / det, y - (jxx * fy - jxy * fx) / det
  return x, y


def distort_normalized(xy: np.ndarray, dist: np.ndarray) -> np.ndarray:
  """Brown-Conrady distortion (`brown_distort`) of normalized coordinates [..., 2]; dist [5]."""
  xy = np.asarray(xy, np.float64)
  return np.stack(brown_distort(xy[..., 0], xy[..., 1], *np.asarray(dist, np.float64)), axis=-1)


def check_field(value, shape, field: str, where: str) -> np.ndarray:
  """Converts `value` to float64 of `shape` (size must match) or raises a CalibrationError.

  Args:
    value: Anything np.asarray accepts.
    shape: Expected shape; a value of the same size is reshaped (e.g. [[t1], [t2], [t3]] -> [3]).
    field: Field name for the message.
    where: Context for the message (file and camera).

  Returns:
    A float64 array of `shape` (a Python float for shape ()).
  """
  try:
    array = np.asarray(value, dtype=np.float64)
  except (TypeError, ValueError) as error:
    raise CalibrationError(
        f"{where}: field {field!r} is not numeric ({error}), expected shape {shape}") from None
  if array.size != math.prod(shape):
    raise CalibrationError(
        f"{where}: field {field!r} has shape {array.shape}, expected {shape}")
  array = array.reshape(shape)
  if not np.all(np.isfinite(array)):
    raise CalibrationError(f"{where}: field {field!r} holds non-finite values: {array.tolist()}")
  return float(array) if shape == () else array


def check_intrinsics(K: np.ndarray, where: str) -> None:
  """Raises unless K is upper triangular with positive focal lengths and last row [0, 0, 1]."""
  if not np.allclose(K[2], [0.0, 0.0, 1.0]) or K[1, 0] != 0.0 or K[0, 0] <= 0 or K[1, 1] <= 0:
    raise CalibrationError(
        f"{where}: field 'K' is {K.tolist()}, expected [[fx, s, cx], [0, fy, cy], [0, 0, 1]] "
        "with fx, fy > 0")


def check_rotation(R: np.ndarray, where: str, tolerance: float = 1e-3) -> None:
  """Raises unless R is orthonormal with determinant +1 (within `tolerance`)."""
  error = np.abs(R @ R.T - np.eye(3)).max()
  if error > tolerance or np.linalg.det(R) < 0:
    raise CalibrationError(
        f"{where}: field 'R' is not a rotation (|R R^T - I| = {error:.2e}, "
        f"det = {np.linalg.det(R):.4f}), expected an orthonormal matrix with det +1")


def check_distortion(dist: np.ndarray, where: str) -> None:
  """Raises when a distortion coefficient [k1, k2, p1, p2, k3] is implausible for a real lens.

  Args:
    dist: [5] Brown-Conrady coefficients (OpenCV order).
    where: Context for the message (file and camera).
  """
  for index, (name, value) in enumerate(zip(DISTORTION_NAMES, np.ravel(dist))):
    bound = MAX_PLAUSIBLE_TANGENTIAL if name in ("p1", "p2") else MAX_PLAUSIBLE_RADIAL
    if not abs(float(value)) <= bound:
      raise CalibrationError(
          f"{where}: field 'dist' [{index}] ({name}) is {float(value):.6g}, an implausible lens "
          f"distortion: expected {name} in [-{bound:g}, {bound:g}] (dist is [k1, k2, p1, p2, k3] "
          "in normalized image coordinates, OpenCV's model)")


def check_distance_mm(vector: np.ndarray, field: str, where: str, meaning: str = "") -> None:
  """Raises when |vector| (a camera centre or translation, mm) is implausible for a rig in mm.

  Args:
    vector: [3] converted to millimetres.
    field: Field name for the message.
    where: Context (file and camera).
    meaning: What the field holds in the source, e.g. "camera centre in metres".
  """
  norm = float(np.linalg.norm(vector))
  if not MIN_PLAUSIBLE_DISTANCE_MM <= norm <= MAX_PLAUSIBLE_DISTANCE_MM:
    meaning = f" ({meaning})" if meaning else ""
    raise CalibrationError(
        f"{where}: field {field!r}{meaning} has norm {norm:.4g} mm after conversion, expected "
        f"between "
        f"{MIN_PLAUSIBLE_DISTANCE_MM:g} and {MAX_PLAUSIBLE_DISTANCE_MM:g} mm for a rig in "
        "millimetres (wrong units: metres or centimetres?)")


def undistort_normalized(xy: np.ndarray, dist: np.ndarray, iterations: int = 20) -> np.ndarray:
  """Inverse of `distort_normalized` (`brown_undistort`): [..., 2] distorted -> undistorted."""
  xy_d = np.asarray(xy, np.float64)
  if not np.any(np.asarray(dist) != 0):
    return xy_d.copy()
  x, y = brown_undistort(xy_d[..., 0], xy_d[..., 1], *np.asarray(dist, np.float64),
                         iterations=iterations, where=np.where)
  return np.stack([x, y], axis=-1)


def undistort_points(camera: Camera, uv: np.ndarray, iterations: int = 20) -> np.ndarray:
  """Removes lens distortion from pixel coordinates (the inverse of `project(distort=True)`).

  Args:
    camera: The camera whose K and dist apply.
    uv: [..., 2] distorted (observed) pixel coordinates.
    iterations: Newton steps of `undistort_normalized`.

  Returns:
    [..., 2] undistorted pixel coordinates, i.e. K applied to the ideal pinhole projection.
  """
  xy_d = _pixels_to_normalized(camera.K, uv)
  xy = undistort_normalized(xy_d, camera.dist, iterations)
  return xy @ camera.K[:2, :2].T + camera.K[:2, 2]


def distort_points(camera: Camera, uv: np.ndarray) -> np.ndarray:
  """Applies lens distortion to undistorted pixel coordinates: [..., 2] -> [..., 2] pixels."""
  xy = _pixels_to_normalized(camera.K, uv)
  return distort_normalized(xy, camera.dist) @ camera.K[:2, :2].T + camera.K[:2, 2]


def _pixels_to_normalized(K: np.ndarray, uv: np.ndarray) -> np.ndarray:
  uv = np.asarray(uv, np.float64)
  fx, s, cx, fy, cy = K[0, 0], K[0, 1], K[0, 2], K[1, 1], K[1, 2]
  y = (uv[..., 1] - cy) / fy
  x = (uv[..., 0] - cx - s * y) / fx
  return np.stack([x, y], axis=-1)


def distort_normalized_tf(xy: tf.Tensor, dist: tf.Tensor) -> tf.Tensor:
  """TF form of `distort_normalized`: xy [..., 2], dist [..., 5] (broadcast) -> [..., 2]."""
  coefficients = tf.unstack(dist[..., None, :], axis=-1)  # Each [..., 1] over points.
  return tf.stack(brown_distort(xy[..., 0], xy[..., 1], *coefficients), axis=-1)


def project_points_tf(points, K, R, t, dist=None, return_depth: bool = False,
                      min_depth: float = 1e-6):
  """Projects world points to pixels in TF (differentiable, batched, any float dtype).

  Camera parameters carry leading camera dims `C...` that broadcast against the points'
  leading dims, e.g. points [B, V, J, 3] with K [V, 3, 3], R [V, 3, 3], t [V, 3], dist [V, 5].

  Args:
    points: [..., N, 3] world points, millimetres.
    K: [C..., 3, 3] intrinsics, pixels.
    R: [C..., 3, 3] world-to-camera rotations.
    t: [C..., 3] translations, millimetres (x_cam = R X + t).
    dist: [C..., 5] distortion [k1, k2, p1, p2, k3], or None for a pinhole.
    return_depth: Also return the camera-frame depth.
    min_depth: Depths with |z| below this are clamped (keeps the division finite).

  Returns:
    uv: [..., N, 2] pixel coordinates (distorted when `dist` is given).
    depth: [..., N] camera-frame z in millimetres, only when `return_depth`.
  """
  points = tf.convert_to_tensor(points)
  dtype = points.dtype
  K = tf.cast(K, dtype)
  R = tf.cast(R, dtype)
  t = tf.cast(t, dtype)
  x_cam = tf.linalg.matmul(points, R, transpose_b=True) + t[..., None, :]
  depth = x_cam[..., 2]
  sign = tf.where(depth < 0, tf.constant(-1.0, dtype), tf.constant(1.0, dtype))
  safe = tf.where(tf.abs(depth) < min_depth, sign * min_depth, depth)
  xy = x_cam[..., :2] / safe[..., None]
  if dist is not None:
    xy = distort_normalized_tf(xy, tf.cast(dist, dtype))
  uv = tf.linalg.matmul(xy, K[..., :2, :2], transpose_b=True) + K[..., None, :2, 2]
  return (uv, depth) if return_depth else uv
