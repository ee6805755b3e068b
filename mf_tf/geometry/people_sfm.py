"""Incremental structure from motion of a rig from people's joints: steps 2-4 of
`mf_tf.geometry.people_calibration`.

From each of the camera pairs with most correspondences (`solve`): the pair's relative pose
(`cv2.findEssentialMat`, RANSAC, Nister five-point; `cv2.recoverPose`, H&Z 9.6.2) and linear
triangulation (H&Z 12.2); the other cameras by robust perspective-n-point (`cv2.solvePnPRansac`,
then Levenberg-Marquardt on its inliers), most shared points first; bundle adjustment
(`geometry.bundle_adjustment`), twice, the second time without the first pass's outliers. The
solution that keeps the most observations within its outlier threshold wins.

Conventions as in `people_calibration`: x_cam = R X + t, the first camera of a solution at the
origin, any scale (the gauge); observations [V, N, ...] with N = F * P * J joints.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

from mf_tf.geometry import bundle_adjustment as adjustment

RANSAC_THRESHOLD_PX = 2.0  # Essential-matrix inlier threshold (Sampson distance), pixels.
RANSAC_PROBABILITY = 0.9999
MIN_ESSENTIAL_INLIERS = 15  # Fewer inliers of the first pair: no reliable relative pose.
# solvePnPRansac inlier threshold, undistorted pixels: max(this, 4 x the first pair's median
# reprojection error).
PNP_THRESHOLD_PX = 4.0
MIN_PNP_INLIERS = 12
# Before bundle adjustment, observations farther than max(this, 8 x the first pair's median
# reprojection error) from their triangulated point are set aside (they are gross detection
# errors or mismatched identities).
INIT_OUTLIER_PX = 25.0
# After the first adjustment, an observation is an outlier above max(OUTLIER_MIN_PX,
# median + OUTLIER_MADS * 1.4826 MAD) of the reprojection errors (a 5-sigma rule, robust).
OUTLIER_MADS = 5.0
OUTLIER_MIN_PX = 3.0
# Degenerate structure: the principal standard deviations (s1 >= s2 >= s3) of the first pair's
# triangulated joints, as fractions of their median depth. One person standing still spans about
# (0.10, 0.03, 0.02) at 4.5 m; people walking over a 4 m area (0.25, 0.2, 0.1).
MIN_SPREAD_SECOND = 0.05
MIN_SPREAD_THIRD = 0.005


@dataclasses.dataclass(frozen=True)
class Correspondences:
  """The confident observations of every camera, in the forms the stages use.

  Attributes:
    cameras: [V] cameras (intrinsics used).
    uv, xy, undistorted: [V, N, 2] raw pixels, normalized and undistorted pixel coordinates.
    valid, scores: [V, N] confident observations and their scores.
    shared: [V, V] correspondences per camera pair.
  """

  cameras: tuple
  uv: np.ndarray
  xy: np.ndarray
  undistorted: np.ndarray
  valid: np.ndarray
  scores: np.ndarray
  shared: np.ndarray

  @property
  def names(self) -> list:
    return [camera.name for camera in self.cameras]


@dataclasses.dataclass(frozen=True)
class Solution:
  """One start's adjusted cameras (first camera = frame origin, gauge units) and points."""

  rotations: np.ndarray
  translations: np.ndarray
  focal_scale: np.ndarray
  points: np.ndarray
  use: np.ndarray
  errors: np.ndarray
  view_of: np.ndarray
  num_inliers: int
  log: list
  start: tuple


def _connected(shared: np.ndarray, min_shared: int, start: Sequence[int]) -> set:
  """Cameras reachable from `start` over pairs with at least `min_shared` correspondences."""
  reached, frontier = set(start), list(start)
  while frontier:
    view = frontier.pop()
    for other in np.flatnonzero(shared[view] >= min_shared):
      if int(other) not in reached:
        reached.add(int(other))
        frontier.append(int(other))
  return reached


def check_connected(data: Correspondences, min_shared: int) -> None:
  """Raises unless every camera is connected to the others over pairs with `min_shared`
  correspondences; the message names the cameras left out and their best link."""
  names, shared = data.names, data.shared
  num_views = len(names)
  best_connected = int(np.unravel_index(int(np.argmax(shared)), shared.shape)[0])
  reached = _connected(shared, min_shared, [best_connected])
  if len(reached) < num_views:
    missing = [v for v in range(num_views) if v not in reached]
    detail = ", ".join(f"{names[v]} (at most {int(shared[v, sorted(reached)].max())} with "
                       f"{names[sorted(reached)[int(np.argmax(shared[v, sorted(reached)]))]]})"
                       for v in missing)
    raise ValueError(
        f"the cameras are not connected: camera(s) {[names[v] for v in missing]} share fewer "
        f"than min_shared={min_shared} confident joints with every camera of "
        f"{[names[v] for v in sorted(reached)]}: {detail}; people must be seen by overlapping "
        "cameras")


def solve(data: Correspondences, *, min_shared: int, starts: int, refine_focal: bool,
          loss: str, f_scale_px: float, log: list) -> Solution:
  """Steps 2-4 from each of the `starts` camera pairs with most correspondences.

  The adjustment that keeps the most observations within its outlier threshold wins (a wrong
  start, e.g. a camera placed on mismatched identities, leaves that camera with few). Other
  selection rules are compared in BUILD.md.

  Args:
    data: The confident observations (`Correspondences`).
    min_shared: Least correspondences of a camera pair for it to count as connected.
    starts: Number of starting pairs, most correspondences first.
    refine_focal, loss, f_scale_px: See `people_calibration.estimate_extrinsics`.
    log: Appended to: one line per start that succeeds.

  Returns:
    The winning `Solution`, with the log of its own steps.

  Raises:
    ValueError: the first start's error, when no start succeeds.
  """
  shared = data.shared
  num_views = len(data.cameras)
  pairs = sorted(((int(shared[a, b]), a, b) for a in range(num_views)
                  for b in range(a + 1, num_views)), reverse=True)[:max(1, starts)]
  best, failures = None, []
  for _, first, second in pairs:
    try:
      solution = _solve_from(data, first, second, min_shared, refine_focal, loss, f_scale_px)
    except ValueError as error:
      failures.append(error)
      continue
    log.append(f"start {data.names[first]}-{data.names[second]}: {solution.num_inliers} inlier "
               "observations")
    if best is None or solution.num_inliers > best.num_inliers:
      best = solution
  if best is None:
    raise failures[0]
  return best


def _solve_from(data: Correspondences, first: int, second: int, min_shared: int,
                refine_focal: bool, loss: str, f_scale_px: float) -> Solution:
  """Steps 2-4 from the camera pair (first, second); the steps' log goes in the solution."""
  steps = []
  pose = _first_pair(data, first, second, steps)
  pose = _place_cameras(data, *pose, min_shared, steps)
  return _adjust(data, *pose, refine_focal, loss, f_scale_px, steps)


def _first_pair(data: Correspondences, first: int, second: int, log: list):
  """Step 2: the pair's relative pose (essential matrix) and triangulated joints.

  Returns:
    (rotations [V, 3, 3], translations [V, 3] (the pair placed, first at the origin), placed
    [V] bool, points [N, 3], PnP threshold px, initial outlier threshold px, the pair's mean
    focal length px).
  """
  names, valid, xy, cameras = data.names, data.valid, data.xy, data.cameras
  num_views = len(cameras)
  both = valid[first] & valid[second]
  focal = np.mean([cameras[first].K[0, 0], cameras[first].K[1, 1], cameras[second].K[0, 0],
                   cameras[second].K[1, 1]])
  x1 = np.ascontiguousarray(xy[first, both])
  x2 = np.ascontiguousarray(xy[second, both])
  E, mask = cv2.findEssentialMat(x1, x2, np.eye(3), method=cv2.RANSAC, prob=RANSAC_PROBABILITY,
                                 threshold=RANSAC_THRESHOLD_PX / focal)
  num_inliers = 0 if mask is None else int(mask.sum())
  if E is None or E.shape[0] < 3 or num_inliers < MIN_ESSENTIAL_INLIERS:
    raise ValueError(
        f"degenerate configuration: the essential matrix of cameras {names[first]!r} and "
        f"{names[second]!r} has {num_inliers} inliers of {int(both.sum())} correspondences "
        f"(threshold {RANSAC_THRESHOLD_PX} px), expected at least {MIN_ESSENTIAL_INLIERS}")
  _, R_rel, t_rel, mask = cv2.recoverPose(E[:3], x1, x2, np.eye(3), mask=mask.copy())
  rotations = np.tile(np.eye(3), (num_views, 1, 1))
  translations = np.zeros((num_views, 3))
  rotations[second], translations[second] = R_rel, t_rel.ravel()
  placed = np.zeros(num_views, bool)
  placed[[first, second]] = True
  use = valid & placed[:, None]
  use[:, np.flatnonzero(both)[mask.ravel() == 0]] = False  # Essential-matrix outliers.
  points, _ = adjustment.triangulate(rotations, translations, xy, use)
  log.append(f"first pair {names[first]}-{names[second]}: {num_inliers} of {int(both.sum())} "
             "essential-matrix inliers")
  _check_spread(points, names[first], names[second])
  # Keypoint noise, for the PnP and outlier thresholds: the median reprojection error of every
  # correspondence of the first pair (noisy detectors need wider thresholds than 1 px noise).
  pair = valid & placed[:, None]
  pair_points, _ = adjustment.triangulate(rotations, translations, xy, pair)
  residual = adjustment.normalized_residual(rotations, translations, xy, pair_points)
  residual = residual[[first, second]] * focal
  noise_px = float(np.nanmedian(residual[:, both]))
  pnp_threshold = max(PNP_THRESHOLD_PX, 4.0 * noise_px)
  outlier_px = max(INIT_OUTLIER_PX, 8.0 * noise_px)
  log.append(f"median reprojection error of the first pair {noise_px:.2f} px: PnP threshold "
             f"{pnp_threshold:.1f} px, initial outlier threshold {outlier_px:.1f} px")
  return rotations, translations, placed, points, pnp_threshold, outlier_px, focal


def _check_spread(points: np.ndarray, name_a: str, name_b: str) -> None:
  """Raises when the first pair's points [N, 3] (first camera's frame) are nearly planar."""
  finite = points[np.all(np.isfinite(points), axis=-1)]
  depth = float(np.median(finite[:, 2])) if finite.size else 0.0
  if finite.shape[0] >= 4 and depth > 0:
    spread = np.linalg.svd(finite - finite.mean(axis=0), compute_uv=False) / np.sqrt(
        finite.shape[0]) / depth
  else:
    spread = np.zeros(3)
  if spread[1] < MIN_SPREAD_SECOND or spread[2] < MIN_SPREAD_THIRD:
    raise ValueError(
        f"degenerate configuration: the {finite.shape[0]} joints triangulated from cameras "
        f"{name_a!r} and {name_b!r} span principal standard deviations "
        f"{np.round(100 * spread, 2).tolist()} % of their depth, expected the second above "
        f"{100 * MIN_SPREAD_SECOND:g}% and the third above {100 * MIN_SPREAD_THIRD:g}%: the "
        "points are nearly on a line or a plane (one person standing still, everything at one "
        "point); people must move over the capture area")


def _place_cameras(data: Correspondences, rotations, translations, placed, points,
                   pnp_threshold, outlier_px, focal, min_shared, log):
  """Step 3: the cameras not placed yet by perspective-n-point, most shared points first; then
  the observations far from their triangulated point are set aside.

  Returns:
    (rotations, translations, points, use [V, N] bool: the observations kept).
  """
  names, valid, xy, cameras = data.names, data.valid, data.xy, data.cameras
  num_views = len(cameras)
  undistorted, shared = data.undistorted, data.shared
  placed = placed.copy()
  while not placed.all():
    known = np.all(np.isfinite(points), axis=-1)
    counts = np.where(placed, -1, (valid & known[None]).sum(axis=1))
    linked = np.array([placed[shared[v] >= min_shared].any() for v in range(num_views)])
    counts[~linked] = -1
    if counts.max() < 0:  # Only reached if the connectivity check above missed a camera.
      raise ValueError(f"camera(s) {[names[v] for v in np.flatnonzero(~placed)]} share fewer "
                       f"than min_shared={min_shared} confident joints with every placed camera")
    view = int(np.argmax(counts))
    which = np.flatnonzero(valid[view] & known)
    if which.size < MIN_PNP_INLIERS:
      raise ValueError(
          f"camera {names[view]!r} sees only {which.size} joints triangulated by the cameras "
          f"placed so far ({[names[v] for v in np.flatnonzero(placed)]}), expected at least "
          f"{MIN_PNP_INLIERS}")
    image = np.ascontiguousarray(undistorted[view, which])
    ok, rvec, tvec, inliers = cv2.solvePnPRansac(
        np.ascontiguousarray(points[which]), image, cameras[view].K, None,
        iterationsCount=2000, reprojectionError=pnp_threshold, confidence=0.9999,
        flags=cv2.SOLVEPNP_EPNP)
    num_pnp = 0 if inliers is None else int(inliers.size)
    if not ok or num_pnp < MIN_PNP_INLIERS:
      raise ValueError(
          f"camera {names[view]!r} cannot be placed: perspective-n-point found {num_pnp} "
          f"inliers of {which.size} shared joints (threshold {pnp_threshold:.1f} px), expected at "
          f"least {MIN_PNP_INLIERS}")
    inliers = inliers.ravel()
    _, rvec, tvec = cv2.solvePnP(np.ascontiguousarray(points[which[inliers]]),
                                 np.ascontiguousarray(image[inliers]), cameras[view].K, None,
                                 rvec, tvec, useExtrinsicGuess=True,
                                 flags=cv2.SOLVEPNP_ITERATIVE)
    rotations[view] = adjustment.rodrigues_to_matrix(rvec.reshape(1, 3))[0]
    translations[view] = tvec.ravel()
    placed[view] = True
    log.append(f"camera {names[view]}: placed by PnP on {num_pnp} of {which.size} joints")
    use = valid & placed[:, None]
    residual = adjustment.normalized_residual(rotations, translations, xy, points)
    use[:, known] &= residual[:, known] * focal < outlier_px
    points, _ = adjustment.triangulate(rotations, translations, xy, use)

  # Initial outliers: observations far from their triangulated point.
  error = adjustment.normalized_residual(rotations, translations, xy, points) * np.array(
      [camera.K[0, 0] for camera in cameras])[:, None]
  use = valid & (error < outlier_px)
  points, _ = adjustment.triangulate(rotations, translations, xy, use)
  use &= np.all(np.isfinite(points), axis=-1)[None]
  return rotations, translations, points, use


def _adjust(data: Correspondences, rotations, translations, points, use, refine_focal, loss,
            f_scale_px, log) -> Solution:
  """Step 4: bundle adjustment, twice (the second without the first pass's outliers)."""
  cameras, uv, scores = data.cameras, data.uv, data.scores
  num_views = len(cameras)
  # Camera 0 becomes the frame origin: X' = R0 X + t0, R' = R R0^T, t' = t - R' t0.
  R0, t0 = rotations[0].copy(), translations[0].copy()
  points = points @ R0.T + t0
  rotations = rotations @ R0.T
  translations = translations - np.einsum("vij,j->vi", rotations, t0)
  rotations[0], translations[0] = np.eye(3), 0.0
  start = (rotations.copy(), translations.copy())
  rotvecs = Rotation.from_matrix(rotations).as_rotvec()
  centers = -np.einsum("vji,vj->vi", rotations, translations)
  gauge = int(np.argmax(np.linalg.norm(centers, axis=-1)))
  focal_scale = np.ones(num_views)
  weight_all = np.sqrt(np.clip(scores, 0.0, None))
  for attempt in range(2):
    point_ids = np.flatnonzero(use.any(axis=0))
    remap = np.full(use.shape[1], -1)
    remap[point_ids] = np.arange(point_ids.size)
    view_of, point_of = np.nonzero(use)
    layout = adjustment.Adjustment(rotvecs, translations, gauge, refine_focal,
                                   point_ids.size)
    x0 = layout.pack(rotvecs, translations, focal_scale, points[point_ids])
    x, errors = adjustment.bundle_adjust(
        cameras, layout, x0, view_of, remap[point_of], uv[view_of, point_of],
        weight_all[view_of, point_of], loss, f_scale_px)
    rotations, translations, focal_scale, adjusted = layout.unpack(x)
    rotvecs = Rotation.from_matrix(rotations).as_rotvec()
    points = np.full_like(points, np.nan)
    points[point_ids] = adjusted
    median = float(np.median(errors))
    mad = 1.4826 * float(np.median(np.abs(errors - median)))
    threshold = max(OUTLIER_MIN_PX, median + OUTLIER_MADS * mad)
    log.append(f"bundle adjustment {attempt + 1}: {view_of.size} observations of "
               f"{point_ids.size} points, median error {median:.3f} px, outlier threshold "
               f"{threshold:.2f} px")
    if attempt == 0:
      outlier = errors > threshold
      use[view_of[outlier], point_of[outlier]] = False
      enough = use.sum(axis=0) >= 2
      use &= enough[None]
      points[~enough] = np.nan
  return Solution(rotations, translations, focal_scale, points, use, errors, view_of,
                   int(use.sum()), log, start)

