"""3D joints from decoded per-view 2D joints by confidence-weighted DLT triangulation.

Heatmap pixels -> image pixels (per-view anisotropic scale: a heatmap covers its camera's whole
image) -> undistorted pixels (inverse Brown-Conrady) -> linear triangulation (Hartley &
Zisserman 12.2, `mf_tf.geometry.triangulation.triangulate_dlt`).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from mf_tf.geometry.camera import undistort_points
from mf_tf.geometry.triangulation import triangulate_dlt


def heatmap_to_image(coords, rig, heatmap_size) -> np.ndarray:
  """Heatmap pixel coordinates to image pixel coordinates of each view.

  Args:
    coords: [..., V, J, 2] heatmap pixels (x = column, y = row).
    rig: `Rig` with V cameras.
    heatmap_size: int (square) or (H, W).

  Returns:
    [..., V, J, 2] float64 image pixels, (u, v) = (x * width / W, y * height / H).
  """
  coords = np.asarray(coords, np.float64)
  if coords.ndim < 3 or coords.shape[-3] != rig.num_views or coords.shape[-1] != 2:
    raise ValueError(f"coords have shape {coords.shape}, expected [..., {rig.num_views}, J, 2] "
                     f"for rig {rig.name!r}")
  height, width = (heatmap_size, heatmap_size) if np.isscalar(heatmap_size) else heatmap_size
  sizes = np.array([[camera.width, camera.height] for camera in rig.cameras], np.float64)
  return coords * (sizes / np.array([width, height], np.float64))[:, None, :]


def undistort_views(uv, rig) -> np.ndarray:
  """Removes each view's lens distortion: [..., V, J, 2] image pixels -> same, undistorted."""
  uv = np.asarray(uv, np.float64)
  # One camera value per view; the Newton inverse inside is vectorized over all points.
  return np.stack([undistort_points(camera, uv[..., view, :, :])
                   for view, camera in enumerate(rig.cameras)], axis=-3)


def triangulate_heatmap_joints(coords, confidences, rig, heatmap_size,
                               outlier_px: float | None = None) -> np.ndarray:
  """Confidence-weighted DLT of decoded heatmap joints, batched over frames and joints.

  With `outlier_px`, views that disagree are dropped (a robust loop in the spirit of RANSAC
  over views, cheap because V is small): after each DLT the view with the largest reprojection
  error is given weight 0 if that error exceeds `outlier_px` heatmap pixels and at least three
  views still carry weight; repeated until no view is dropped. One wrong 2D estimate (a
  distractor peak, a swapped left/right joint) otherwise pulls the DLT solution by hundreds of
  millimetres, and fusion's remaining errors are exactly such gross ones.

  Args:
    coords: [B, V, J, 2] decoded joints in heatmap pixels (e.g. `HeatmapCodec.decode`).
    confidences: [B, V, J] non-negative weights (e.g. the decoded peak scores), or None for
      equal weights. Non-finite coordinates get weight 0.
    rig: `Rig` whose cameras the heatmaps cover.
    heatmap_size: int (square) or (H, W).
    outlier_px: Reprojection error (heatmap px) above which a view is dropped; None: plain DLT.

  Returns:
    [B, J, 3] float64 world points in millimetres.
  """
  coords = np.asarray(coords, np.float64)
  if coords.ndim != 4:
    raise ValueError(f"coords have shape {coords.shape}, expected [B, V, J, 2]")
  weights = np.ones(coords.shape[:-1]) if confidences is None else np.asarray(
      confidences, np.float64)
  if weights.shape != coords.shape[:-1]:
    raise ValueError(f"confidences have shape {weights.shape}, expected {coords.shape[:-1]}")
  if outlier_px is not None and not outlier_px > 0:
    raise ValueError(f"outlier_px={outlier_px}, expected > 0 heatmap pixels or None")
  finite = np.all(np.isfinite(coords), axis=-1)
  weights = np.where(finite, np.clip(np.nan_to_num(weights), 0.0, None), 0.0)
  uv = undistort_views(np.where(finite[..., None], heatmap_to_image(coords, rig, heatmap_size),
                                0.0), rig)
  projections = rig.projection_matrices()
  solve = lambda w: triangulate_dlt(tf.constant(projections), tf.constant(uv),
                                    tf.constant(w)).numpy().astype(np.float64)
  points = solve(weights)
  if outlier_px is None:
    return points
  height, width = (heatmap_size, heatmap_size) if np.isscalar(heatmap_size) else heatmap_size
  # Image px -> heatmap px per view (anisotropic in general; the mean axis scale).
  sizes = np.array([[camera.width / width, camera.height / height] for camera in rig.cameras])
  to_heatmap = 1.0 / sizes.mean(axis=1)  # [V]
  for _ in range(coords.shape[1] - 2):
    homogeneous = np.concatenate([points, np.ones(points.shape[:-1] + (1,))], axis=-1)
    projected = np.einsum("vkc,bjc->bvjk", projections, homogeneous)  # [B, V, J, 3]
    depth = projected[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
      reprojected = projected[..., :2] / depth[..., None]
    error = np.linalg.norm(reprojected - uv, axis=-1) * to_heatmap[None, :, None]
    error = np.where((weights > 0) & np.isfinite(error) & (depth > 0), error,
                     np.where(weights > 0, np.inf, -1.0))
    worst = np.argmax(error, axis=1)  # [B, J]
    worst_error = np.take_along_axis(error, worst[:, None], axis=1)[:, 0]
    drop = (worst_error > outlier_px) & (np.sum(weights > 0, axis=1) >= 3)
    if not drop.any():
      break
    mask = np.zeros_like(weights, dtype=bool)
    b, j = np.nonzero(drop)
    mask[b, worst[b, j], j] = True
    weights = np.where(mask, 0.0, weights)
    points = solve(weights)
  return points
