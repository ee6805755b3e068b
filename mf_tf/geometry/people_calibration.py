"""Extrinsic calibration of a rig from the people it films: incremental structure from motion.

Every confident joint of a person seen in two or more views is one correspondence; joints of the
same (frame, person slot, joint) are one 3D point. With the cameras' intrinsics known (K,
distortion, image size), the pipeline is:

  1. undistorted normalized correspondences per camera pair (`camera.undistort_points`);
  2. a camera pair with many correspondences: essential matrix (`cv2.findEssentialMat`, RANSAC,
     Nister five-point) and its decomposition with the chirality test (`cv2.recoverPose`, H&Z 9.6.2),
     then linear triangulation (H&Z 12.2, DLT);
  3. the remaining cameras one by one, most shared triangulated points first, by robust
     perspective-n-point (`cv2.solvePnPRansac`, then Levenberg-Marquardt on its inliers), each
     followed by the triangulation of the points it newly makes visible in two views;
  4. bundle adjustment (`geometry.bundle_adjustment`) of every camera and every 3D point on
     raw-pixel reprojection residuals weighted by sqrt(score), robust loss; observations above
     a robust threshold are dropped after a first pass and the adjustment runs again;
     steps 2-4 run from each of the `starts` pairs with most correspondences, and the solution
     that keeps the most observations within its outlier threshold wins (from one pair alone, a
     camera placed on mismatched identities can pull the whole rig into a mirrored solution:
     on 50 frames of the Pose2Sim demo, 179 degrees off; measured in BUILD.md);
  5. metric scale from a stated person height (`STATURE_RATIO`) or a known camera distance;
  6. the world frame: z up, normal to the floor plane fitted through the lowest ankles, origin
     on the floor under the ankles' centroid, x along the first camera's optical axis projected on
     the floor.

Steps 2-4, the structure from motion proper, are in `mf_tf.geometry.people_sfm`; this module
prepares the correspondences and sets the scale and the world frame.

Conventions (as everywhere in mf_tf): millimetres, x_cam = R X + t, distortion
[k1, k2, p1, p2, k3] in OpenCV's order. Observations are [F, V, P, J, ...]: F frames, V views,
P person slots (one slot is one person in every view and frame: identities are resolved by the
caller), J joints of a mf_tf joint set.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
from absl import logging

from mf_tf.geometry import bundle_adjustment as adjustment
from mf_tf.geometry import camera as camera_lib
from mf_tf.geometry import people_sfm
from mf_tf.geometry.camera import Camera
from mf_tf.geometry.rig import Rig

# A camera whose final median reprojection error exceeds this (pixels) is warned about: with
# detector keypoints (2-5 px noise on people 300-800 px tall) a correct calibration stays below.
WARN_REPROJECTION_PX = 8.0

# Stature / (distance from the ankles' midpoint to the h36m17 "head" joint), for a person standing
# upright. Derived from `mf_tf.data.skeleton` (BONE_LENGTHS_MM, ANKLE_HEIGHT_MM and its fixed
# offsets) with every joint angle at zero, legs vertical:
#   head above ankles = 423.0 + 425.9 (shank, thigh) + 118.9 sin(5 deg) (hip drop)
#                       + 236.3 + 254.4 (spine, thorax) + 116.5 cos(40 deg) (nose tilt)
#                       + 115.0 (head) = 1554.2 mm; forward offset 116.5 sin(40 deg) = 74.9 mm;
#   ankle-to-head distance = hypot(1554.2, 74.9) = 1556.0 mm;
#   stature = 1556.0 + ANKLE_HEIGHT_MM (80.0, ankle joint above the floor) = 1636.0 mm, taking
#   the h36m17 head joint (Human3.6M's head-top marker) as the vertex;
#   ratio = 1636.0 / 1556.0 = 1.0514.
# A test recomputes it from skeleton.py. The median over frames of the ankle-to-head distance is
# below the upright one when people bend (walking: ~1%), which biases the scale low by as much.
STATURE_RATIO = 1.0514
# Joints used for the height and the floor, per joint set.
# Index of the head and ankle joints per mf_tf joint set (`mf_tf.data.joints`, which geometry does
# not import: a test checks these against it). coco19 has no head-top joint: no height scale.
JOINT_INDEX = {
    "h36m17": {"head": 10, "lankle": 6, "rankle": 3},
    "totalcapture16": {"head": 9, "lankle": 6, "rankle": 3},
    "coco19": {"lankle": 8, "rankle": 14},
}
ANKLE_JOINTS = ("lankle", "rankle")
# The h36m17 ankle joint sits this far above the floor when standing (skeleton.ANKLE_HEIGHT_MM):
# the floor plane is the fitted ankle plane moved down by it.
ANKLE_HEIGHT_MM = 80.0


@dataclasses.dataclass(frozen=True)
class Observations:
  """2D joints of the people seen by a rig, the input of `estimate_extrinsics`.

  Attributes:
    points: [F, V, P, J, 2] float64 raw (distorted) image pixels, NaN where missing.
    scores: [F, V, P, J] detection confidences, 0 where missing.
    joint_set: Name of the mf_tf joint set of the J joints (e.g. "h36m17"): names the head and
      ankle joints used for the scale and the floor.
  """

  points: np.ndarray
  scores: np.ndarray
  joint_set: str = "h36m17"


@dataclasses.dataclass(frozen=True)
class CalibrationResult:
  """The estimated rig and its diagnostics.

  Attributes:
    rig: The cameras with estimated R, t (mm) (K too, when the focal lengths were refined), in a
      z-up world whose floor is z = 0 (`up` [0, 0, 1], `floor` 0).
    points3d: [F, P, J, 3] triangulated joints, world mm, NaN where not triangulated.
    reprojection_error_px: {camera name: median reprojection error of its inlier observations,
      raw pixels}.
    inlier_fraction: {camera name: inlier observations / confident observations}.
    num_points: Number of triangulated 3D points in the final adjustment.
    log: Human-readable lines, one per step.
    start_rig: The cameras the bundle adjustment started from (the chosen start's pair and
      perspective-n-point placements; first camera at the origin, any scale): the common start
      for comparing adjustments.
  """

  rig: Rig
  points3d: np.ndarray
  reprojection_error_px: dict
  inlier_fraction: dict
  num_points: int
  log: list
  start_rig: Rig | None = None


# ------------------------------------------------------------------------------------ checks


def _check_inputs(observations: Observations, cameras: Sequence[Camera]):
  """Validates shapes; returns (uv [V, N, 2], scores [V, N]) with N = F * P * J."""
  cameras = tuple(cameras)
  points = np.asarray(observations.points, np.float64)
  scores = np.asarray(observations.scores, np.float64)
  if points.ndim != 5 or points.shape[-1] != 2:
    raise ValueError(f"observations.points has shape {points.shape}, expected [F, V, P, J, 2]")
  if scores.shape != points.shape[:-1]:
    raise ValueError(f"observations.scores has shape {scores.shape}, expected "
                     f"{points.shape[:-1]} (the [F, V, P, J] of points)")
  if points.shape[1] != len(cameras):
    raise ValueError(f"observations have {points.shape[1]} views but {len(cameras)} cameras "
                     f"were given ({[c.name for c in cameras]}); expected one camera per view")
  if len(cameras) < 2:
    raise ValueError(f"calibration needs at least 2 cameras, got {len(cameras)}")
  names = [camera.name for camera in cameras]
  if len(set(names)) != len(names):
    raise ValueError(f"camera names must be unique, got {names}")
  num_views = len(cameras)
  uv = np.moveaxis(points, 1, 0).reshape(num_views, -1, 2)
  scores = np.moveaxis(scores, 1, 0).reshape(num_views, -1)
  return uv, np.where(np.isfinite(scores), scores, 0.0)


# ----------------------------------------------------------------------------- main entry


def estimate_extrinsics(observations: Observations, cameras: Sequence[Camera], *,
                        min_score: float = 0.5, min_shared: int = 30,
                        person_height_mm: float | None = None,
                        camera_distance: tuple[str, str, float] | None = None,
                        refine_focal: bool = False, loss: str = "soft_l1",
                        f_scale_px: float = 3.0, starts: int = 3,
                        name: str = "people") -> CalibrationResult:
  """Estimates every camera's R, t from people's 2D joints (module docstring: steps 1-6).

  Args:
    observations: [F, V, P, J] joints and scores (`Observations`).
    cameras: V cameras whose K, dist, width and height are the known intrinsics (R, t ignored).
    min_score: Joints with a lower score (or missing) are not used.
    min_shared: Least correspondences (confident in both views) of a camera pair for it to count
      as connected; a camera with fewer to every placed camera cannot be placed.
    person_height_mm: Stature of the people (the median over person slots and frames of the
      ankles-midpoint-to-head distance, times `STATURE_RATIO`); sets the metric scale.
    camera_distance: (name_a, name_b, mm), a measured distance between two camera centres; sets
      the scale (and takes precedence over `person_height_mm`, which is then only logged).
    refine_focal: Also adjust one focal length per camera (fx and fy by the same factor).
    loss: Robust loss of `scipy.optimize.least_squares` ("linear", "soft_l1", "huber", ...).
    f_scale_px: Its inlier scale, raw pixels.
    starts: Solve from this many camera pairs (most correspondences first) and keep the solution
      with the most inlier observations.
    name: Name of the returned rig (`mf_tf.files.check_name`).

  Returns:
    CalibrationResult, world z-up with the floor at z = 0.

  Raises:
    ValueError: naming the cameras and what is missing: a camera no person is seen in, cameras
      not connected by `min_shared` correspondences to the others, a degenerate configuration
      (too few essential-matrix inliers, joints nearly on a plane or a line), a scale that
      cannot be set, no ankles for the floor.
  """
  cameras = tuple(cameras)
  uv, scores = _check_inputs(observations, cameras)
  num_frames, _, num_people, num_joints = np.shape(observations.scores)
  per_pose = (num_frames, num_people, num_joints, 3)
  if person_height_mm is None and camera_distance is None:
    raise ValueError("a metric scale is needed: give person_height_mm (the people's stature) or "
                     "camera_distance=(camera_a, camera_b, mm); neither was given")
  log = []
  data = _correspondences(cameras, uv, scores, min_score, log)  # Step 1.
  people_sfm.check_connected(data, min_shared)
  best = people_sfm.solve(data, min_shared=min_shared, starts=starts, refine_focal=refine_focal,
                          loss=loss, f_scale_px=f_scale_px, log=log)  # Steps 2-4.
  log.extend(best.log)
  reprojection, inlier_fraction = _camera_errors(data, best)
  # 5. Metric scale; 6. world frame: z up through the floor under the ankles.
  scale = _metric_scale(best.points.reshape(per_pose), best.rotations, best.translations,
                        data.names, observations.joint_set, person_height_mm, camera_distance,
                        log)
  points = best.points * scale
  R_world, origin = _world_frame(points.reshape(per_pose), best.rotations[0],
                                 observations.joint_set, log)
  points = (points - origin) @ R_world.T
  rig = _world_rig(name, cameras, best, scale, (R_world, origin), refine_focal, log)
  _log_camera_errors(reprojection, inlier_fraction, log)
  return CalibrationResult(
      rig=rig, points3d=points.reshape(per_pose),
      reprojection_error_px=reprojection, inlier_fraction=inlier_fraction,
      num_points=int(np.all(np.isfinite(points), axis=-1).sum()), log=log,
      start_rig=Rig(f"{name}_start", tuple(
          Camera(camera.name, camera.K, best.start[0][view], best.start[1][view], camera.dist,
                 camera.width, camera.height) for view, camera in enumerate(cameras))))


def _correspondences(cameras: tuple, uv: np.ndarray, scores: np.ndarray, min_score: float,
                     log: list) -> people_sfm.Correspondences:
  """Step 1: the confident observations, undistorted and normalized, and their pairs.

  Args:
    cameras: [V] cameras with known intrinsics.
    uv: [V, N, 2] raw pixels, NaN where missing (`_check_inputs`).
    scores: [V, N] confidences, 0 where missing.
    min_score: Observations with a lower score are not used.
    log: Appended to.

  Raises:
    ValueError: a camera without any confident observation.
  """
  names = [camera.name for camera in cameras]
  num_views = len(cameras)
  valid = (scores >= min_score) & np.all(np.isfinite(uv), axis=-1)  # [V, N]
  unseen = [names[v] for v in range(num_views) if not valid[v].any()]
  if unseen:
    raise ValueError(f"no person is seen in camera(s) {unseen}: 0 joints with score >= "
                     f"{min_score}; every camera must see people")
  undistorted = np.stack([camera_lib.undistort_points(camera, np.where(valid[v, :, None],
                                                                        uv[v], 0.0))
                          for v, camera in enumerate(cameras)])
  K_inv = np.stack([np.linalg.inv(camera.K) for camera in cameras])
  xy = np.einsum("vij,vnj->vni", K_inv[:, :2, :2], undistorted) + K_inv[:, None, :2, 2]
  xy[~valid] = np.nan
  shared = np.einsum("an,bn->ab", valid.astype(np.int64), valid.astype(np.int64))
  np.fill_diagonal(shared, 0)
  log.append(f"{valid.sum()} confident observations (score >= {min_score}) of "
             f"{int(np.sum(valid.sum(axis=0) >= 2))} joints seen in >= 2 views; "
             f"correspondences per pair: " + ", ".join(
                 f"{names[a]}-{names[b]} {shared[a, b]}" for a in range(num_views)
                 for b in range(a + 1, num_views)))
  return people_sfm.Correspondences(cameras, uv, xy, undistorted, valid, scores, shared)


def _camera_errors(data: people_sfm.Correspondences,
                   solution: people_sfm.Solution) -> tuple[dict, dict]:
  """{camera name: median reprojection error of its inliers, px} and {name: inlier fraction}."""
  reprojection, inlier_fraction = {}, {}
  for view, name in enumerate(data.names):
    mine = solution.errors[solution.view_of == view]
    reprojection[name] = float(np.median(mine)) if mine.size else float("nan")
    inlier_fraction[name] = float(solution.use[view].sum() / max(data.valid[view].sum(), 1))
  return reprojection, inlier_fraction


def _log_camera_errors(reprojection: dict, inlier_fraction: dict, log: list) -> None:
  """One log line per camera; a warning for a camera above WARN_REPROJECTION_PX."""
  for camera_name, value in reprojection.items():
    log.append(f"camera {camera_name}: median reprojection error {value:.3f} px, inliers "
               f"{100 * inlier_fraction[camera_name]:.1f}%")
    if not value <= WARN_REPROJECTION_PX:
      logging.warning("people calibration: camera %r has a median reprojection error of %.2f px, "
                      "above %.1f px: check its intrinsics and the people's identities",
                      camera_name, value, WARN_REPROJECTION_PX)


def _world_rig(name: str, cameras: tuple, solution: people_sfm.Solution, scale: float,
               world: tuple[np.ndarray, np.ndarray], refine_focal: bool, log: list) -> Rig:
  """The solution's cameras in millimetres and in the z-up world (steps 5-6).

  Args:
    name: The rig's name.
    cameras: [V] the cameras' intrinsics and image sizes.
    solution: The adjusted cameras (`people_sfm.Solution`, first camera's frame).
    scale: Millimetres per adjustment unit (`_metric_scale`).
    world: (R_world [3, 3], origin [3]) of `_world_frame`.
    refine_focal: Whether the focal lengths were adjusted (then logged).
    log: Appended to.
  """
  R_world, origin = world
  translations = solution.translations * scale
  new_cameras = []
  scaled = adjustment.scaled_intrinsics(np.stack([camera.K for camera in cameras]),
                                        solution.focal_scale)
  for view, camera in enumerate(cameras):
    K = scaled[view]
    R = solution.rotations[view] @ R_world.T
    t = solution.rotations[view] @ origin + translations[view]
    new_cameras.append(Camera(camera.name, K, R, t, camera.dist, camera.width, camera.height))
    if refine_focal:
      log.append(f"camera {camera.name}: focal x{solution.focal_scale[view]:.4f}")
  return Rig(name, tuple(new_cameras), up=np.array([0.0, 0.0, 1.0]), floor=0.0)


# ----------------------------------------------------------------------------- scale and floor


def _joint_indices(joint_set: str, joints: Sequence[str], purpose: str) -> list[int]:
  """Indices of `joints` in `joint_set` (`JOINT_INDEX`), or ValueError naming what is missing."""
  table = JOINT_INDEX.get(joint_set, {})
  missing = [joint for joint in joints if joint not in table]
  if missing:
    known = {name: sorted(joints) for name, joints in JOINT_INDEX.items()}
    raise ValueError(f"{purpose} needs joint(s) {missing}, which joint set {joint_set!r} does "
                     f"not provide here (known: {known})")
  return [table[joint] for joint in joints]


def _metric_scale(points, rotations, translations, names, joint_set, person_height_mm,
                  camera_distance, log) -> float:
  """Scale factor (mm per adjustment unit) from a camera distance or the people's height.

  Args:
    points: [F, P, J, 3] adjusted points (adjustment units), NaN where not triangulated.
    rotations, translations: [V, 3, 3], [V, 3] adjusted cameras.
    names: Camera names.
    joint_set: Name of the joints' set.
    person_height_mm, camera_distance: See `estimate_extrinsics`.
    log: Appended to.
  """
  height_scale = None
  if person_height_mm is not None:
    if not float(person_height_mm) > 0:
      raise ValueError(f"person_height_mm is {person_height_mm!r}, expected a positive stature "
                       "in millimetres")
    head = _joint_indices(joint_set, ["head"],
                          "the scale from person_height_mm")[0]
    ankles = _joint_indices(joint_set, ANKLE_JOINTS, "the scale from person_height_mm")
    length = np.linalg.norm(points[:, :, head] - points[:, :, ankles].mean(axis=2), axis=-1)
    length = length[np.isfinite(length)]
    if length.size == 0:
      raise ValueError("the scale from person_height_mm cannot be set: no (frame, person) has "
                       "its head and both ankles triangulated; give camera_distance instead")
    height_scale = float(person_height_mm) / STATURE_RATIO / float(np.median(length))
    log.append(f"scale from person_height_mm={float(person_height_mm):g}: median ankle-to-head "
               f"{np.median(length) * height_scale:.1f} mm over {length.size} poses "
               f"(stature ratio {STATURE_RATIO})")
  if camera_distance is None:
    return height_scale
  try:
    name_a, name_b, distance_mm = camera_distance
    distance_mm = float(distance_mm)
  except (TypeError, ValueError):
    raise ValueError(f"camera_distance is {camera_distance!r}, expected (camera_a, camera_b, "
                     "mm)") from None
  unknown = [name for name in (name_a, name_b) if name not in names]
  if unknown or name_a == name_b or not distance_mm > 0:
    raise ValueError(f"camera_distance is {camera_distance!r}, expected two different cameras "
                     f"of {list(names)} and a positive distance in mm")
  centers = -np.einsum("vji,vj->vi", rotations, translations)
  scale = distance_mm / float(np.linalg.norm(centers[names.index(name_a)] -
                                             centers[names.index(name_b)]))
  log.append(f"scale from camera_distance {name_a}-{name_b} = {distance_mm:g} mm"
             + (f" (person height would give x{height_scale / scale:.4f} of it)"
                if height_scale else ""))
  return scale


def _world_frame(points, first_rotation, joint_set, log):
  """The z-up world: rotation R_world (rows: world axes) and origin (first-camera frame, mm).

  The floor: a plane (total least squares) through every triangulated ankle gives the normal;
  a second fit through the lower ankle of each (frame, person) (the stance foot) gives the plane,
  moved down by ANKLE_HEIGHT_MM. Up points from the ankles to the heads (or the body's mean).

  Args:
    points: [F, P, J, 3] metric points in the first camera's frame, NaN where missing.
    first_rotation: [3, 3] the first camera's rotation in that frame (its optical axis is row 2).
    joint_set: Joint set name.
    log: Appended to.

  Returns:
    R_world [3, 3] and origin [3]: X_world = R_world (X - origin).
  """
  ankles = points[:, :, _joint_indices(joint_set, ANKLE_JOINTS, "the floor plane")]  # [F,P,2,3]
  flat = ankles.reshape(-1, 3)
  flat = flat[np.all(np.isfinite(flat), axis=-1)]
  if flat.shape[0] < 3:
    raise ValueError(f"the floor plane cannot be set: {flat.shape[0]} ankles triangulated, "
                     "expected at least 3 (people's ankles must be seen by two cameras)")
  centroid = flat.mean(axis=0)
  _, _, vt = np.linalg.svd(flat - centroid)
  up = vt[2]
  body = points.reshape(-1, 3)
  body = body[np.all(np.isfinite(body), axis=-1)]
  if np.dot(body.mean(axis=0) - centroid, up) < 0:
    up = -up
  height = np.einsum("fpai,i->fpa", ankles, up)
  lower = np.take_along_axis(ankles, np.nanargmin(np.where(np.isnan(height), np.inf, height),
                                                  axis=2)[:, :, None, None], axis=2)[:, :, 0]
  lower = lower.reshape(-1, 3)
  lower = lower[np.all(np.isfinite(lower), axis=-1)]
  if lower.shape[0] >= 3:
    centroid = lower.mean(axis=0)
    _, _, vt = np.linalg.svd(lower - centroid)
    up = vt[2] if np.dot(vt[2], up) > 0 else -vt[2]
  origin = centroid - ANKLE_HEIGHT_MM * up
  forward = first_rotation[2] - np.dot(first_rotation[2], up) * up
  if np.linalg.norm(forward) < 1e-3:  # First camera looks straight down: use its image x.
    forward = first_rotation[0] - np.dot(first_rotation[0], up) * up
  x_axis = forward / np.linalg.norm(forward)
  R_world = np.stack([x_axis, np.cross(up, x_axis), up])
  residual = np.abs((lower - centroid) @ up)
  log.append(f"floor: plane through {lower.shape[0]} lowest ankles (median distance "
             f"{np.median(residual):.1f} mm), {ANKLE_HEIGHT_MM:g} mm below them")
  return R_world, origin
