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


def triangulate_heatmap_joints(coords, confidences, rig, heatmap_size) -> np.ndarray:
  """Confidence-weighted DLT of decoded heatmap joints, batched over frames and joints.

  Args:
    coords: [B, V, J, 2] decoded joints in heatmap pixels (e.g. `HeatmapCodec.decode`).
    confidences: [B, V, J] non-negative weights (e.g. the decoded peak scores), or None for
      equal weights. Non-finite coordinates get weight 0.
    rig: `Rig` whose cameras the heatmaps cover.
    heatmap_size: int (square) or (H, W).

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
  finite = np.all(np.isfinite(coords), axis=-1)
  weights = np.where(finite, np.clip(np.nan_to_num(weights), 0.0, None), 0.0)
  uv = undistort_views(np.where(finite[..., None], heatmap_to_image(coords, rig, heatmap_size),
                                0.0), rig)
  points = triangulate_dlt(tf.constant(rig.projection_matrices()), tf.constant(uv),
                           tf.constant(weights))
  return points.numpy().astype(np.float64)
