"""How far an estimated rig is from a reference: per-camera rotation and centre errors after the
similarity that best aligns the two (Umeyama 1991), and the same people triangulated with both.

Conventions (as everywhere in mf_tf): millimetres, x_cam = R X + t.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from mf_tf.geometry import camera as camera_lib
from mf_tf.geometry.rig import Rig
from mf_tf.geometry.triangulation import triangulate_dlt_np

# Joint visibility below this is not a correspondence (BlazePose's own threshold).
DEFAULT_MIN_SCORE = 0.5


def similarity_transform(source: np.ndarray, target: np.ndarray, with_scale: bool = True):
  """Least-squares similarity target ~ scale * R @ source + t (Umeyama 1991, eq. 40-42).

  Args:
    source: [N, 3] points.
    target: [N, 3] points (same order).
    with_scale: Estimate the scale; else it is 1 (a rigid transform).

  Returns:
    (scale float, R [3, 3] rotation (det +1), t [3]).
  """
  source = np.asarray(source, np.float64)
  target = np.asarray(target, np.float64)
  if source.ndim != 2 or source.shape[1] != 3 or source.shape != target.shape:
    raise ValueError(f"source and target have shapes {source.shape} and {target.shape}, "
                     "expected the same [N, 3]")
  if source.shape[0] < 3 or not (np.all(np.isfinite(source)) and np.all(np.isfinite(target))):
    raise ValueError(f"a similarity needs at least 3 finite point pairs, got {source.shape[0]}")
  mean_s, mean_t = source.mean(axis=0), target.mean(axis=0)
  centered_s, centered_t = source - mean_s, target - mean_t
  covariance = centered_t.T @ centered_s / source.shape[0]
  u, d, vt = np.linalg.svd(covariance)
  sign = np.eye(3)
  if np.linalg.det(u) * np.linalg.det(vt) < 0:
    sign[2, 2] = -1.0
  R = u @ sign @ vt
  variance = np.sum(centered_s**2) / source.shape[0]
  scale = float(np.trace(np.diag(d) @ sign) / variance) if with_scale else 1.0
  return scale, R, mean_t - scale * R @ mean_s


def compare_rigs(estimated: Rig, reference: Rig, *, with_scale: bool = True) -> dict:
  """Per-camera errors of an estimated rig against a reference, after the best similarity.

  The similarity (Umeyama 1991) maps the estimated camera centres onto the reference ones:
  C_ref ~ s R C_est + t. The same R carries the estimated rotations into the reference world,
  R_est' = R_est R^T, and the rotation error is the angle of R_est'^T R_ref.

  Args:
    estimated: Estimated rig.
    reference: Reference rig with the same camera names (any order; at least 3 cameras).
    with_scale: Align the scale too (False when the estimate's scale is to be judged, e.g. a
      scale from a stated height).

  Returns:
    {"rotation_deg": {camera: degrees}, "center_mm": {camera: mm},
     "center_percent": {camera: % of rig_size_mm}, "rig_size_mm": largest distance between
     reference centres, "scale": s, "max_rotation_deg", "max_center_mm",
     "max_center_percent"}.
  """
  names = list(reference.camera_names)
  if sorted(names) != sorted(estimated.camera_names):
    raise ValueError(f"rigs {estimated.name!r} and {reference.name!r} have different cameras: "
                     f"{sorted(estimated.camera_names)} vs {sorted(names)}")
  by_name = {camera.name: camera for camera in estimated.cameras}
  est = [by_name[name] for name in names]
  centers_est = np.stack([camera.center for camera in est])
  centers_ref = np.stack([camera.center for camera in reference.cameras])
  scale, R, t = similarity_transform(centers_est, centers_ref, with_scale)
  aligned = scale * centers_est @ R.T + t
  center_error = np.linalg.norm(aligned - centers_ref, axis=-1)
  rig_size = float(np.max(np.linalg.norm(centers_ref[:, None] - centers_ref[None], axis=-1)))
  rotation_error = []
  for camera_est, camera_ref in zip(est, reference.cameras):
    relative = (camera_est.R @ R.T).T @ camera_ref.R
    rotation_error.append(float(np.degrees(Rotation.from_matrix(relative).magnitude())))
  return {
      "rotation_deg": dict(zip(names, rotation_error)),
      "center_mm": dict(zip(names, center_error.tolist())),
      "center_percent": dict(zip(names, (100.0 * center_error / rig_size).tolist())),
      "rig_size_mm": rig_size,
      "scale": scale,
      "max_rotation_deg": max(rotation_error),
      "max_center_mm": float(center_error.max()),
      "max_center_percent": float(100.0 * center_error.max() / rig_size),
  }


def triangulate_observations(observations, rig: Rig,
                             min_score: float = DEFAULT_MIN_SCORE) -> np.ndarray:
  """Every person's joints triangulated with a rig (DLT, H&Z 12.2, confident views only).

  Args:
    observations: `people_calibration.Observations`: [F, V, P, J] joints (raw px) and scores,
      V in the rig's camera order.
    rig: The V cameras.
    min_score: Views whose joint score is below it do not take part.

  Returns:
    [F, P, J, 3] world mm, NaN where fewer than 2 views see the joint.
  """
  points, scores = np.asarray(observations.points), np.asarray(observations.scores)
  num_frames, num_views, num_people, num_joints = scores.shape
  undistorted = np.stack([camera_lib.undistort_points(camera, np.nan_to_num(points[:, v]))
                          for v, camera in enumerate(rig.cameras)], 1)  # [F, V, P, J, 2]
  weights = ((scores >= min_score) & np.isfinite(points).all(-1)).astype(np.float64)
  flat = np.moveaxis(undistorted, 2, 1).reshape(-1, num_views, num_joints, 2)
  flat_weights = np.moveaxis(weights, 2, 1).reshape(-1, num_views, num_joints)
  joints3d = triangulate_dlt_np(rig.projection_matrices(), flat, flat_weights)
  joints3d = joints3d.reshape(num_frames, num_people, num_joints, 3)
  views = np.moveaxis(weights, 2, 1).sum(2)  # [F, P, J]
  return np.where((views >= 2)[..., None], joints3d, np.nan)


def compare_reconstructions(observations, estimated: Rig,
                            reference: Rig, *, with_scale: bool = True,
                            min_score: float = DEFAULT_MIN_SCORE) -> dict:
  """MPJPE between the same people triangulated with an estimated and a reference rig.

  The estimated reconstruction is carried into the reference world by the similarity that best
  maps the estimated camera centres onto the reference ones (as `compare_rigs`, Umeyama 1991),
  without its scale when `with_scale` is False.

  Args:
    observations: [F, V, P, J] people's joints, V in both rigs' camera order.
    estimated, reference: The two rigs, same camera names and order.
    with_scale: Align the scale too.
    min_score: See `triangulate_observations`.

  Returns:
    {"mpjpe_mm": mean distance over the joints triangulated by both, "median_mm", "joints":
     their number}.
  """
  if list(estimated.camera_names) != list(reference.camera_names):
    raise ValueError(f"rigs {estimated.name!r} and {reference.name!r} have cameras "
                     f"{list(estimated.camera_names)} and {list(reference.camera_names)}, "
                     "expected the same in the same order")
  centers_est = np.stack([camera.center for camera in estimated.cameras])
  centers_ref = np.stack([camera.center for camera in reference.cameras])
  scale, R, t = similarity_transform(centers_est, centers_ref, with_scale)
  ours = scale * triangulate_observations(observations, estimated, min_score) @ R.T + t
  theirs = triangulate_observations(observations, reference, min_score)
  distance = np.linalg.norm(ours - theirs, axis=-1)
  distance = distance[np.isfinite(distance)]
  if not distance.size:
    return {"mpjpe_mm": float("nan"), "median_mm": float("nan"), "joints": 0}
  return {"mpjpe_mm": float(distance.mean()), "median_mm": float(np.median(distance)),
          "joints": int(distance.size)}
