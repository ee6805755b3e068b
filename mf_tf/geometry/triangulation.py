"""Linear triangulation (DLT) of joints seen by calibrated views, Hartley & Zisserman 12.2.

For a view with projection P (rows p1, p2, p3), an undistorted observation (u, v) and
confidence w, the homogeneous world point X satisfies the two linear equations

    w (u p3 - p1) X = 0,     w (v p3 - p2) X = 0.

Stacking all views gives A X = 0; X is the right singular vector of A with the smallest singular
value, i.e. the eigenvector of A^T A with the smallest eigenvalue. A view with w = 0 contributes
nothing. The columns of A are equilibrated (scaled to unit norm) before the eigen-solve, and the
solve runs in float64 by default: world points in mm and pixels in the thousands make A^T A span
many orders of magnitude, which float32 cannot resolve to a millimetre.

A joint seen with positive confidence in fewer than two views is ill-posed. To keep values and
gradients finite for such joints (eigh's gradient divides by eigenvalue gaps), a tiny distinct
diagonal (1e-12 * [4, 3, 2, 1] on the equilibrated system, far below any real eigenvalue gap)
breaks the ties: a joint with no confident view comes out at the world origin with zero gradient.
Mask ill-posed joints downstream (`num_confident_views`).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

_EPS = 1e-12
_TIE_BREAK = (4e-12, 3e-12, 2e-12, 1e-12)


def _dlt_system(projections, points2d, confidences):
  """A^T A of every (batch, joint): [B, J, 4, 4] and the column scales [B, J, 4] (TF)."""
  # rows: [B, V, J, 2, 4] = w * (uv * p3 - p12)
  p12 = projections[..., :2, :][:, :, None]  # [B, V, 1, 2, 4]
  p3 = projections[..., 2:3, :][:, :, None]  # [B, V, 1, 1, 4]
  rows = (points2d[..., None] * p3 - p12) * confidences[..., None, None]
  rows = tf.transpose(rows, [0, 2, 1, 3, 4])  # [B, J, V, 2, 4]
  shape = tf.shape(rows)
  rows = tf.reshape(rows, tf.concat([shape[:2], [shape[2] * 2, 4]], axis=0))  # [B, J, 2V, 4]
  column_norm = tf.sqrt(tf.reduce_sum(tf.square(rows), axis=-2) + _EPS)  # [B, J, 4]
  rows = rows / column_norm[..., None, :]
  return tf.linalg.matmul(rows, rows, transpose_a=True), column_norm


def triangulate_dlt(projections, points2d, confidences=None, compute_dtype=tf.float64):
  """Confidence-weighted linear triangulation (H&Z 12.2), vectorized over batch and joints.

  Differentiable with respect to the points, confidences and projections (through `eigh`).

  Args:
    projections: [V, 3, 4] or [B, V, 3, 4] projection matrices P = K [R | t] (mm -> pixels).
    points2d: [B, V, J, 2] undistorted pixel coordinates.
    confidences: [B, V, J] non-negative weights (None: all ones). A zero weight removes the view.
    compute_dtype: dtype of the solve; the result is cast back to `points2d`'s dtype.

  Returns:
    [B, J, 3] world points in millimetres.
  """
  points2d = tf.convert_to_tensor(points2d)
  out_dtype = points2d.dtype if points2d.dtype.is_floating else tf.float32
  points2d = tf.cast(points2d, compute_dtype)
  projections = tf.cast(tf.convert_to_tensor(projections), compute_dtype)
  if projections.shape.rank == 3:
    projections = projections[None]
  if projections.shape.rank != 4 or points2d.shape.rank != 4:
    raise ValueError(
        f"triangulate_dlt expects projections [V,3,4] or [B,V,3,4] and points2d [B,V,J,2], got "
        f"{projections.shape} and {points2d.shape}")
  projections = tf.broadcast_to(
      projections, tf.concat([tf.shape(points2d)[:1], tf.shape(projections)[1:]], axis=0))
  if confidences is None:
    confidences = tf.ones(tf.shape(points2d)[:-1], compute_dtype)
  confidences = tf.cast(confidences, compute_dtype)
  system, column_norm = _dlt_system(projections, points2d, confidences)
  system += tf.linalg.diag(tf.constant(_TIE_BREAK, compute_dtype))
  _, eigenvectors = tf.linalg.eigh(system)
  solution = eigenvectors[..., :, 0] / column_norm  # Smallest eigenvalue first; undo scaling.
  w = solution[..., 3:]
  eps = tf.constant(_EPS, compute_dtype)
  w = tf.where(tf.abs(w) < eps, tf.where(w < 0, -eps, eps), w)  # Point at infinity: stay finite.
  return tf.cast(solution[..., :3] / w, out_dtype)


def num_confident_views(confidences, threshold: float = 0.0):
  """[B, V, J] confidences -> [B, J] int32 count of views with confidence > threshold.

  Triangulation needs at least 2; use it to mask joints whose DLT result is meaningless.
  """
  return tf.reduce_sum(tf.cast(tf.convert_to_tensor(confidences) > threshold, tf.int32), axis=1)


def triangulate_dlt_np(projections, points2d, confidences=None) -> np.ndarray:
  """NumPy version of `triangulate_dlt` (SVD), for data preparation without TF.

  Args:
    projections: [V, 3, 4] or [B, V, 3, 4].
    points2d: [V, J, 2] or [B, V, J, 2] undistorted pixels.
    confidences: [V, J] or [B, V, J], or None.

  Returns:
    [J, 3] or [B, J, 3] (matching `points2d`) world points in millimetres.
  """
  points2d = np.asarray(points2d, np.float64)
  single = points2d.ndim == 3
  if single:
    points2d = points2d[None]
  projections = np.asarray(projections, np.float64)
  if projections.ndim == 3:
    projections = np.broadcast_to(projections, (points2d.shape[0],) + projections.shape)
  if confidences is None:
    confidences = np.ones(points2d.shape[:-1])
  confidences = np.asarray(confidences, np.float64).reshape(points2d.shape[:-1])
  p12 = projections[:, :, None, :2, :]
  p3 = projections[:, :, None, 2:3, :]
  rows = (points2d[..., None] * p3 - p12) * confidences[..., None, None]  # [B, V, J, 2, 4]
  batch, views, joints = rows.shape[:3]
  rows = rows.transpose(0, 2, 1, 3, 4).reshape(batch, joints, 2 * views, 4)
  column_norm = np.sqrt(np.sum(rows**2, axis=-2) + _EPS)
  _, _, vt = np.linalg.svd(rows / column_norm[..., None, :])
  solution = vt[..., -1, :] / column_norm
  result = solution[..., :3] / solution[..., 3:]
  return result[0] if single else result
