"""Sparse bundle adjustment of cameras and points, and the geometry it is built from.

Hartley & Zisserman (H&Z) 18.1 and A6.3, Triggs et al. 2000: every camera's rotation (Rodrigues
vector) and translation, optionally a focal scale, and every 3D point, on raw-pixel reprojection
residuals (with distortion, as `Camera.project`), `scipy.optimize.least_squares(method="trf")`
with a sparse Jacobian pattern and a robust loss. The gauge: camera 0 is fixed (R = I, t = 0) and
the farthest camera keeps its distance from it.

Conventions (as everywhere in mf_tf): x_cam = R X + t, distortion [k1, k2, p1, p2, k3] in
OpenCV's order; normalized coordinates are undistorted K^-1 pixels.
"""

from __future__ import annotations

import numpy as np
import scipy.optimize
import scipy.sparse
from scipy.spatial.transform import Rotation

from mf_tf.geometry import camera as camera_lib
from mf_tf.geometry.triangulation import triangulate_dlt_np


def rodrigues_to_matrix(rotvecs: np.ndarray) -> np.ndarray:
  """[M, 3] Rodrigues vectors -> [M, 3, 3] rotation matrices."""
  return Rotation.from_rotvec(rotvecs).as_matrix()


def triangulate(R, t, xy, mask):
  """DLT (H&Z 12.2) in normalized coordinates over the views where `mask` holds.

  Args:
    R: [V, 3, 3] rotations; t: [V, 3] translations (any unit); cameras not placed carry no mask.
    xy: [V, N, 2] undistorted normalized coordinates (NaN where missing).
    mask: [V, N] bool, the observations to use.

  Returns:
    points [N, 3] (NaN where fewer than 2 views or behind a camera), and the count of views [N].
  """
  projections = np.concatenate([R, t[:, :, None]], axis=2)
  count = mask.sum(axis=0)
  with np.errstate(divide="ignore", invalid="ignore"):  # Points seen < 2 times: NaN below.
    points = triangulate_dlt_np(projections, np.where(mask[..., None], xy, 0.0),
                                mask.astype(np.float64))
  depth = np.einsum("vij,nj->vn", R[:, 2:3], points)[:, :] + t[:, 2:3]
  in_front = np.all(~mask | (depth > 0), axis=0)
  points[(count < 2) | ~in_front] = np.nan
  return points, count


def normalized_residual(R, t, xy, points):
  """[V, N] distance between xy and the projection of points, normalized units (NaN-aware)."""
  x_cam = np.einsum("vij,nj->vni", R, points) + t[:, None, :]
  projected = x_cam[..., :2] / x_cam[..., 2:3]
  return np.linalg.norm(projected - xy, axis=-1)


def project(K, dist, R, t, points):
  """Raw-pixel projection as `Camera.project`, per observation.

  Args:
    K: [M, 3, 3]; dist: [M, 5]; R: [M, 3, 3]; t: [M, 3]; points: [M, 3] (one row per
      observation).

  Returns:
    [M, 2] pixels.
  """
  x_cam = np.einsum("mij,mj->mi", R, points) + t
  xy = x_cam[:, :2] / x_cam[:, 2:3]
  x, y = camera_lib.brown_distort(xy[:, 0], xy[:, 1], *dist.T)
  return np.stack([K[:, 0, 0] * x + K[:, 0, 1] * y + K[:, 0, 2], K[:, 1, 1] * y + K[:, 1, 2]],
                  axis=-1)


def orthonormal_pair(direction: np.ndarray):
  """Two unit vectors spanning the plane orthogonal to the unit vector `direction`."""
  helper = np.eye(3)[int(np.argmin(np.abs(direction)))]
  first = np.cross(direction, helper)
  first /= np.linalg.norm(first)
  return first, np.cross(direction, first)


# ----------------------------------------------------------------------- bundle adjustment


class Adjustment:
  """Parameter layout of the bundle adjustment (H&Z 18.1, A6.3's sparse block structure).

  Camera 0 is fixed (R = I, t = 0). The gauge camera g (the farthest from camera 0) keeps its
  centre at distance d from camera 0: C_g = d * normalize(c + a e1 + b e2), with c the initial
  unit direction and e1, e2 orthogonal to it, so it carries 3 + 2 parameters; every other camera
  3 + 3 (Rodrigues vector, t). With `refine_focal`, one focal scale per camera (fx and fy times
  it). Then 3 per point.
  """

  def __init__(self, rotvecs, t, gauge, refine_focal, num_points):
    num_views = rotvecs.shape[0]
    self.num_views, self.gauge, self.refine_focal = num_views, gauge, refine_focal
    centers = -np.einsum("vji,vj->vi", rodrigues_to_matrix(rotvecs), t)
    self.distance = float(np.linalg.norm(centers[gauge]))
    self.direction = centers[gauge] / self.distance
    self.e1, self.e2 = orthonormal_pair(self.direction)
    sizes = np.array([0 if v == 0 else (5 if v == gauge else 6) for v in range(num_views)])
    self.camera_offset = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    self.camera_size = sizes
    self.focal_offset = int(sizes.sum())
    self.point_offset = self.focal_offset + (num_views if refine_focal else 0)
    self.num_params = self.point_offset + 3 * num_points

  def pack(self, rotvecs, t, focal_scale, points):
    x = np.zeros(self.num_params)
    for view in range(1, self.num_views):
      start = self.camera_offset[view]
      x[start:start + 3] = rotvecs[view]
      if view != self.gauge:
        x[start + 3:start + 6] = t[view]
    if self.refine_focal:
      x[self.focal_offset:self.point_offset] = focal_scale
    x[self.point_offset:] = points.ravel()
    return x

  def unpack(self, x):
    """-> R [V, 3, 3], t [V, 3], focal_scale [V], points [M, 3]."""
    rotvecs = np.zeros((self.num_views, 3))
    t = np.zeros((self.num_views, 3))
    for view in range(1, self.num_views):
      start = self.camera_offset[view]
      rotvecs[view] = x[start:start + 3]
      if view != self.gauge:
        t[view] = x[start + 3:start + 6]
    R = rodrigues_to_matrix(rotvecs)
    start = self.camera_offset[self.gauge]
    direction = self.direction + x[start + 3] * self.e1 + x[start + 4] * self.e2
    center = self.distance * direction / np.linalg.norm(direction)
    t[self.gauge] = -R[self.gauge] @ center
    focal_scale = (x[self.focal_offset:self.point_offset] if self.refine_focal
                   else np.ones(self.num_views))
    return R, t, focal_scale, x[self.point_offset:].reshape(-1, 3)

  def sparsity(self, view_of, point_of):
    """[2M, num_params] 0/1 Jacobian pattern of the residuals of observations (view, point)."""
    rows, cols = [], []
    obs_rows = np.stack([2 * np.arange(view_of.size), 2 * np.arange(view_of.size) + 1], axis=1)
    for view in range(1, self.num_views):
      which = np.flatnonzero(view_of == view)
      columns = self.camera_offset[view] + np.arange(self.camera_size[view])
      rows.append(np.repeat(obs_rows[which].ravel(), columns.size))
      cols.append(np.tile(columns, 2 * which.size))
    if self.refine_focal:
      rows.append(obs_rows.ravel())
      cols.append(np.repeat(self.focal_offset + view_of, 2))
    point_columns = self.point_offset + 3 * point_of[:, None] + np.arange(3)  # [M, 3]
    rows.append(np.repeat(obs_rows.ravel(), 3))
    cols.append(np.repeat(point_columns, 2, axis=0).ravel())
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    return scipy.sparse.csr_matrix((np.ones(rows.size), (rows, cols)),
                                   shape=(2 * view_of.size, self.num_params))


def scaled_intrinsics(K: np.ndarray, focal_scale: np.ndarray) -> np.ndarray:
  """[V, 3, 3] K with fx, skew and fy times each camera's focal scale [V]."""
  focal_mask = np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
  return K * (1.0 + (np.asarray(focal_scale)[:, None, None] - 1.0) * focal_mask)


def bundle_adjust(cameras, layout, x0, view_of, point_of, uv, weight, loss, f_scale_px):
  """One robust sparse adjustment; returns the solution x and the unweighted pixel errors [M]."""
  K0 = np.stack([camera.K for camera in cameras])
  dist = np.stack([camera.dist for camera in cameras])[view_of]

  def residual_pixels(x):
    R, t, focal_scale, points = layout.unpack(x)
    K = scaled_intrinsics(K0, focal_scale)
    return project(K[view_of], dist, R[view_of], t[view_of], points[point_of]) - uv

  def residuals(x):
    return (residual_pixels(x) * weight[:, None]).ravel()

  result = scipy.optimize.least_squares(
      residuals, x0, jac_sparsity=layout.sparsity(view_of, point_of), method="trf",
      loss=loss, f_scale=f_scale_px, x_scale="jac", tr_solver="lsmr")
  return result.x, np.linalg.norm(residual_pixels(result.x), axis=-1)
