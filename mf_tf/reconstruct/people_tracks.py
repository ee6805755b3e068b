"""The same people across views and frames, before any extrinsics are known.

Calibration from people (`mf_tf.geometry.people_calibration`) needs each person's 2D joints in
every view under one identity; association by epipolar distance (`models.association`) needs the
extrinsics this is meant to find. Instead:

1. `detect`: BlazePose per view and frame (`BlazePose.estimate`, undistorted crops through the
   known intrinsics).
2. `track_view`: people followed within each view over time: each frame's poses take the track
   whose last pose is nearest (mean distance of the joints both see confidently, over the
   track's box size), by the Hungarian method, while that distance stays under `max_move`; a
   pose matching no track starts one.
3. `match_tracks`: for each camera pair and pair of tracks, the RANSAC inliers of an essential
   matrix fitted to the undistorted normalized joints of every frame both tracks share
   (Hartley & Zisserman 9.6 and 11.3; `cv2.findEssentialMat`, Nister's five-point solver). Two
   tracks of the same person agree with one rigid motion; tracks of two people who move
   independently do not. Also tried with one side's left/right exchanged
   (`JointSet.mirror_array`): BlazePose often swaps the sides of a person seen from behind.
4. `resolve_identities`: per pair, the Hungarian method on the inlier counts; then the pairwise
   matches, most inliers first, merge tracks into global people (union-find), never joining two
   tracks of one view that share a frame. A view's tracks left side-swapped against the person's
   first view are exchanged back, so every view speaks of the same left and right.

Conventions: raw (distorted) image pixels; NaN where a joint or person is missing; arrays
[F, V, P, J, ...] = frames, views, people, joints.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence

import cv2
import numpy as np
from scipy import optimize

from mf_tf.data import joints as joints_lib
from mf_tf.geometry import camera as camera_lib
from mf_tf.geometry import people_calibration
from mf_tf.geometry import rig_comparison

# Joint visibility below this is not used to track or to match (BlazePose's own threshold).
DEFAULT_MIN_SCORE = rig_comparison.DEFAULT_MIN_SCORE
# A pose joins a track when the mean distance of their joints is below this fraction of the
# track's box size: people move well under half their height between two sampled frames.
DEFAULT_MAX_MOVE = 0.5
# A track ends where a second pose is nearly as near as the one that would continue it (its
# distance under this multiple of the nearest's; 0: never): where two people cross, nearest-pose
# tracking may swap them. Off by default: at 2.0 on the Pose2Sim two-person demo, one view's
# close pair splits into 65 one-frame tracks (matching 10x slower) for no gain in the rig.
DEFAULT_AMBIGUITY_RATIO = 0.0
# RANSAC threshold of the essential matrix in pixels (converted per camera pair with the focal
# lengths): BlazePose's joints of one person lie a median 5-10 px (Sampson distance) from the
# epipolar geometry of the Qualisys calibration on the Pose2Sim demo (1088 x 1920), those of two
# different people 250-300 px.
DEFAULT_THRESHOLD_PX = 12.0
# Correspondences per essential matrix fit, spread evenly over those available: RANSAC's cost grows
# with them, and a few hundred joints from tens of frames tell one person from another.
MAX_CORRESPONDENCES = 400
# Two tracks are one person only with at least this many inliers and this inlier fraction under
# the camera pair's essential matrix: on the Pose2Sim two-person demo the same person's tracks
# agree at 0.35-0.8, two people's at 0-0.2.
DEFAULT_MIN_INLIERS = 30
DEFAULT_MIN_INLIER_FRACTION = 0.3
# RANSAC confidence of cv2.findEssentialMat.
_RANSAC_PROBABILITY = 0.999


@dataclasses.dataclass(frozen=True)
class ViewTracks:
  """People followed over time in one view.

  Attributes:
    points: [F, T, J, 2] raw pixels per frame and track, NaN where the track is not seen.
    scores: [F, T, J] visibility, 0 where not seen.
  """

  points: np.ndarray
  scores: np.ndarray

  @property
  def num_tracks(self) -> int:
    return self.points.shape[1]


def detect(models, frames: Iterable[Sequence[np.ndarray]], cameras: Sequence[camera_lib.Camera],
           joint_set: str, progress=None) -> list[list[tuple[np.ndarray, np.ndarray]]]:
  """BlazePose on every view of every frame.

  Args:
    models: BlazePose instances (one per view is used in turn; one is enough).
    frames: Per frame, [V] [H, W, 3] uint8 RGB images in the order of `cameras`.
    cameras: [V] cameras with known intrinsics (their extrinsics are not used).
    joint_set: Name of the joint set to read out.
    progress: Called with the number of frames done, or None.

  Returns:
    [F][V] (joints [N, J, 2] raw pixels, scores [N, J]) of the N people found.
  """
  num_joints = joints_lib.get_joint_set(joint_set).num_joints
  detections = []
  for done, images in enumerate(frames, 1):
    per_view = []
    for view, (image, camera) in enumerate(zip(images, cameras)):
      poses = models[view % len(models)].estimate(image, joint_set, camera=camera)
      per_view.append((np.asarray([p["joints2d"] for p in poses]).reshape(-1, num_joints, 2),
                       np.asarray([p["scores"] for p in poses]).reshape(-1, num_joints)))
    detections.append(per_view)
    if progress is not None:
      progress(done)
  return detections


def _box_size(points: np.ndarray, seen: np.ndarray) -> float:
  """Diagonal of the box of a pose's seen joints ([J, 2], [J] bool), px."""
  if seen.sum() < 2:
    return np.inf
  return float(np.linalg.norm(np.ptp(points[seen], axis=0)))


def track_view(detections: Sequence[tuple[np.ndarray, np.ndarray]], *,
               min_score: float = DEFAULT_MIN_SCORE,
               max_move: float = DEFAULT_MAX_MOVE,
               ambiguity_ratio: float = DEFAULT_AMBIGUITY_RATIO) -> ViewTracks:
  """Follows the people of one view over time (nearest pose, Hungarian per frame).

  Args:
    detections: [F] (joints [N, J, 2] raw px, scores [N, J]) of one view.
    min_score: Joints below it do not count in the distances.
    max_move: Largest mean joint distance, as a fraction of the track's box diagonal, between a
      track's last pose and the pose that continues it.

  Returns:
    ViewTracks with one track per person followed (in order of first appearance).
  """
  last_points, last_scores, members = [], [], []  # Per track: last pose and {frame: pose index}.
  for frame, (points, scores) in enumerate(detections):
    cost = np.full((len(points), len(last_points)), np.inf)
    for i in range(len(points)):
      for t in range(len(last_points)):
        both = (scores[i] >= min_score) & (last_scores[t] >= min_score)
        if both.sum() >= 3:
          distance = np.linalg.norm(points[i][both] - last_points[t][both], axis=-1).mean()
          cost[i, t] = distance / _box_size(last_points[t], last_scores[t] >= min_score)
    matched = set()
    if cost.size:
      rows, cols = optimize.linear_sum_assignment(np.where(np.isfinite(cost), cost, 1e9))
      for i, t in zip(rows, cols):
        rivals = np.concatenate([np.delete(cost[:, t], i), np.delete(cost[i], t)])
        ambiguous = (rivals < ambiguity_ratio * max(cost[i, t], 0.05)).any()
        if cost[i, t] <= max_move and not ambiguous:
          members[t][frame] = i
          last_points[t], last_scores[t] = points[i], scores[i]
          matched.add(i)
    for i in range(len(points)):
      if i not in matched:
        members.append({frame: i})
        last_points.append(points[i])
        last_scores.append(scores[i])
  num_frames = len(detections)
  num_joints = detections[0][0].shape[1] if num_frames else 0
  out_points = np.full((num_frames, len(members), num_joints, 2), np.nan)
  out_scores = np.zeros((num_frames, len(members), num_joints))
  for t, frames in enumerate(members):
    for frame, i in frames.items():
      out_points[frame, t] = detections[frame][0][i]
      out_scores[frame, t] = detections[frame][1][i]
  return ViewTracks(out_points, out_scores)


def _normalized(camera: camera_lib.Camera, uv: np.ndarray) -> np.ndarray:
  """[..., 2] raw pixels -> undistorted normalized image coordinates (K^-1, distortion removed)."""
  undistorted = camera_lib.undistort_points(camera, uv)
  return camera_lib._pixels_to_normalized(camera.K, undistorted)


def sampson_distance(E: np.ndarray, xa: np.ndarray, xb: np.ndarray) -> np.ndarray:
  """First-order geometric distance to x_b^T E x_a = 0 (H&Z 11.4.3).

  Args:
    E: [3, 3] essential matrix.
    xa, xb: [..., 2] normalized image coordinates in views a and b.

  Returns:
    [...] distances in normalized units (times the focal length: pixels).
  """
  ha = np.concatenate([xa, np.ones_like(xa[..., :1])], -1)
  hb = np.concatenate([xb, np.ones_like(xb[..., :1])], -1)
  Ex, Etx = ha @ E.T, hb @ E
  numerator = np.sum(hb * Ex, -1) ** 2
  denominator = Ex[..., 0] ** 2 + Ex[..., 1] ** 2 + Etx[..., 0] ** 2 + Etx[..., 1] ** 2
  return np.sqrt(numerator / np.maximum(denominator, 1e-300))


def _pair_terms(tracks_a: ViewTracks, tracks_b: ViewTracks, camera_a, camera_b, mirror,
                min_score: float):
  """Normalized joints of every track pair, both orientations of b.

  Returns:
    xa: [F, Ta, 1, J, 2], xb: [F, 1, Tb, 2 (plain, mirrored), J, 2] (NaN where unused),
    usable: [F, Ta, Tb, 2, J] bool.
  """
  xa = _normalized(camera_a, np.nan_to_num(tracks_a.points))[:, :, None, None]
  xb_plain = _normalized(camera_b, np.nan_to_num(tracks_b.points))
  xb = np.stack([xb_plain, xb_plain[:, :, mirror]], 2)[:, None]
  seen_a = (tracks_a.scores >= min_score) & np.isfinite(tracks_a.points).all(-1)
  seen_b = (tracks_b.scores >= min_score) & np.isfinite(tracks_b.points).all(-1)
  seen_b = np.stack([seen_b, seen_b[:, :, mirror]], 2)
  usable = seen_a[:, :, None, None] & seen_b[:, None]
  return xa, xb, usable


def fit_essential(xa: np.ndarray, xb: np.ndarray, threshold: float, seed: int = 0):
  """RANSAC essential matrix (Nister's five points, `cv2.findEssentialMat`), K = I.

  Args:
    xa, xb: [N, 2] normalized image coordinates (N >= 5).
    threshold: RANSAC threshold in normalized units.
    seed: OpenCV's RNG seed, for repeatable draws.

  Returns:
    [3, 3] essential matrix, or None when none was found.
  """
  count = len(xa)
  chosen = np.linspace(0, count - 1, min(count, MAX_CORRESPONDENCES)).round().astype(int)
  cv2.setRNGSeed(seed)
  E, _ = cv2.findEssentialMat(xa[chosen], xb[chosen], np.eye(3), method=cv2.RANSAC,
                              prob=_RANSAC_PROBABILITY, threshold=threshold)
  if E is None:
    return None
  return E[:3]  # Several solutions come stacked; the first is RANSAC's best.


@dataclasses.dataclass(frozen=True)
class PairMatch:
  """Agreement of two views' tracks with the camera pair's best essential matrix.

  Attributes:
    E: [3, 3] the essential matrix that the most tracks agree with (None: none found).
    inliers: [Ta, Tb] joints of each track pair within the threshold (best orientation per frame).
    fraction: [Ta, Tb] inliers over the joints both tracks see in common frames.
    mirrored: [F, Ta, Tb] bool, True where b's sides exchanged agree better in that frame.
  """

  E: np.ndarray | None
  inliers: np.ndarray
  fraction: np.ndarray
  mirrored: np.ndarray


def match_tracks(tracks_a: ViewTracks, tracks_b: ViewTracks, camera_a: camera_lib.Camera,
                 camera_b: camera_lib.Camera, joint_set: str, *,
                 min_score: float = DEFAULT_MIN_SCORE,
                 threshold_px: float = DEFAULT_THRESHOLD_PX) -> PairMatch:
  """Which track of view a is which of view b: one rigid geometry must explain all of them.

  Every track pair (and its side-swapped reading) proposes an essential matrix (RANSAC over the
  frames both share); each proposal is scored by the Hungarian assignment of all track pairs
  under it (inliers per pair, each frame read in the orientation that agrees better). Two tracks
  of one person agree with the proposal of any other correctly matched pair; a wrong pairing's
  proposal explains only itself. The best-scoring proposal gives the counts.

  Args:
    tracks_a, tracks_b: The two views' tracks (same frames).
    camera_a, camera_b: Their cameras (intrinsics and distortion used).
    joint_set: The joints' set (for its left/right partners).
    min_score: Joints below it in either view are left out.
    threshold_px: Inlier distance (Sampson, px; divided by the mean focal length).

  Returns:
    PairMatch.
  """
  mirror = joints_lib.get_joint_set(joint_set).mirror_array
  focal = np.mean([camera_a.K[0, 0], camera_a.K[1, 1], camera_b.K[0, 0], camera_b.K[1, 1]])
  threshold = threshold_px / focal
  xa, xb, usable = _pair_terms(tracks_a, tracks_b, camera_a, camera_b, mirror, min_score)
  shape = (tracks_a.num_tracks, tracks_b.num_tracks)
  best = PairMatch(None, np.zeros(shape, int), np.zeros(shape),
                   np.zeros((usable.shape[0],) + shape, bool))
  best_score = -1
  for i in range(shape[0]):
    for j in range(shape[1]):
      for side in range(2):
        keep = usable[:, i, j, side]
        if keep.sum() < 8:
          continue
        E = fit_essential(xa[:, i, 0, 0][keep], xb[:, 0, j, side][keep], threshold)
        if E is None:
          continue
        close = (sampson_distance(E, xa, xb) < threshold) & usable  # [F, Ta, Tb, 2, J]
        per_frame = close.sum(-1)  # [F, Ta, Tb, 2]
        mirrored = per_frame[..., 1] > per_frame[..., 0]
        inliers = per_frame.max(-1).sum(0)  # [Ta, Tb]
        rows, cols = optimize.linear_sum_assignment(-inliers)
        score = int(inliers[rows, cols].sum())
        if score > best_score:
          common = usable.any(3).sum((0, -1))
          best_score = score
          best = PairMatch(E, inliers, inliers / np.maximum(common, 1), mirrored)
  return best


def resolve_identities(view_tracks: Sequence[ViewTracks], cameras: Sequence[camera_lib.Camera],
                       joint_set: str, *, min_score: float = DEFAULT_MIN_SCORE,
                       threshold_px: float = DEFAULT_THRESHOLD_PX,
                       min_inliers: int = DEFAULT_MIN_INLIERS,
                       min_inlier_fraction: float = DEFAULT_MIN_INLIER_FRACTION,
                       max_people: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Global people from per-view tracks, by epipolar agreement (no extrinsics needed).

  Args:
    view_tracks: [V] each view's tracks over the same F frames.
    cameras: [V] cameras with known intrinsics.
    joint_set: The joints' set name.
    min_score, threshold_px: See `match_tracks`.
    min_inliers, min_inlier_fraction: A pair of tracks below either is never one person.
    max_people: Keep at most this many people (most observed first); None: all seen in >= 2
      views.

  Returns:
    points: [F, V, P, J, 2] raw pixels of person p in view v (NaN: not seen).
    scores: [F, V, P, J] visibility (0: not seen). People ordered by joints observed, most first.
  """
  num_views = len(view_tracks)
  if num_views != len(cameras):
    raise ValueError(f"{num_views} views of tracks for {len(cameras)} cameras")
  mirror = joints_lib.get_joint_set(joint_set).mirror_array  # [J]
  nodes = [(v, t) for v in range(num_views) for t in range(view_tracks[v].num_tracks)]
  frames_of = {node: (view_tracks[node[0]].scores[:, node[1]] > 0).any(-1) for node in nodes}
  edges = _identity_edges(view_tracks, cameras, joint_set, min_score=min_score,
                          threshold_px=threshold_px, min_inliers=min_inliers,
                          min_inlier_fraction=min_inlier_fraction)
  num_frames = view_tracks[0].points.shape[0] if view_tracks else 0
  groups, swaps = _merge_tracks(nodes, frames_of, edges, num_frames)
  people = []
  for group in groups:
    if len({nodes[k][0] for k in group}) < 2 and len(nodes) > 1:
      continue
    points, scores = _person_views(view_tracks, [nodes[k] for k in group],
                                   np.stack([swaps[k] for k in group]),
                                   np.stack([frames_of[nodes[k]] for k in group]),
                                   mirror)
    people.append((float((scores >= min_score).sum()), points, scores))
  people.sort(key=lambda person: -person[0])
  if max_people is not None:
    people = people[:max_people]
  if not people:
    return (np.full((num_frames, num_views, 0, len(mirror), 2), np.nan),
            np.zeros((num_frames, num_views, 0, len(mirror))))
  return (np.stack([person[1] for person in people], 2),
          np.stack([person[2] for person in people], 2))


def _identity_edges(view_tracks: Sequence[ViewTracks], cameras: Sequence[camera_lib.Camera],
                    joint_set: str, *, min_score: float, threshold_px: float, min_inliers: int,
                    min_inlier_fraction: float) -> list[tuple]:
  """Per camera pair, the tracks the Hungarian method pairs on the inlier counts
  (`match_tracks`), kept when both thresholds hold (always with one track per view).

  Returns:
    [(inliers, (view_a, track_a), (view_b, track_b), [F] bool b's sides swapped against a's)].
  """
  num_views = len(view_tracks)
  one_person = all(tracks.num_tracks == 1 for tracks in view_tracks)
  edges = []
  for a in range(num_views):
    for b in range(a + 1, num_views):
      if one_person and a > 0:
        continue  # One person: every view's only track is them; view 0 gives the orientations.
      match = match_tracks(view_tracks[a], view_tracks[b], cameras[a], cameras[b], joint_set,
                           min_score=min_score, threshold_px=threshold_px)
      if not match.inliers.size:
        continue
      rows, cols = optimize.linear_sum_assignment(-match.inliers)
      for i, j in zip(rows, cols):
        if one_person or (match.inliers[i, j] >= min_inliers
                          and match.fraction[i, j] >= min_inlier_fraction):
          edges.append((int(match.inliers[i, j]), (a, i), (b, j), match.mirrored[:, i, j]))
  return edges


def _merge_tracks(nodes: Sequence[tuple[int, int]], frames_of: dict, edges: Sequence[tuple],
                  num_frames: int) -> tuple[list[list[int]], list[np.ndarray]]:
  """Union-find over the tracks, edges with the most inliers first, never joining two tracks of
  one view that share a frame; per component, a side-swap flag per node relative to its root.

  Args:
    nodes: [N] (view, track) of every track.
    frames_of: {(view, track): [F] bool frames where the track is seen}.
    edges: `_identity_edges`'s edges.
    num_frames: F.

  Returns:
    groups: Node indices of each merged component, in the order of their roots.
    swaps: [N] of [F] bool, the node's sides swapped relative to its component's root.
  """
  index = {node: k for k, node in enumerate(nodes)}
  parent = list(range(len(nodes)))
  flip = [np.zeros(num_frames, bool)] * len(nodes)  # [F] sides swapped relative to the parent.

  def find(k):
    swapped = np.zeros(num_frames, bool)
    while parent[k] != k:
      swapped ^= flip[k]
      k = parent[k]
    return k, swapped

  members = {k: [k] for k in range(len(nodes))}
  for _, node_a, node_b, swapped in sorted(edges, key=lambda edge: -edge[0]):
    (root_a, flip_a), (root_b, flip_b) = find(index[node_a]), find(index[node_b])
    if root_a == root_b:
      continue
    clash = any(nodes[p][0] == nodes[q][0] and (frames_of[nodes[p]] & frames_of[nodes[q]]).any()
                for p in members[root_a] for q in members[root_b])
    if clash:
      continue
    parent[root_b] = root_a
    flip[root_b] = flip_a ^ flip_b ^ swapped
    members[root_a] += members.pop(root_b)
  return list(members.values()), [find(k)[1] for k in range(len(nodes))]


def _person_views(view_tracks: Sequence[ViewTracks], tracks: Sequence[tuple[int, int]],
                  swaps: np.ndarray, seen: np.ndarray,
                  mirror: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """One person's joints in every view from their merged tracks, each frame in the orientation
  most of the tracks share (BlazePose's usual reading); the others' sides are exchanged.

  Args:
    view_tracks: [V] each view's tracks.
    tracks: [K] (view, track) of the person's tracks.
    swaps: [K, F] bool, each track's sides swapped relative to its component's root.
    seen: [K, F] bool, frames where each track is seen.
    mirror: [J] left/right partner of each joint.

  Returns:
    points: [F, V, J, 2] raw pixels (NaN: not seen), scores: [F, V, J] (0: not seen).
  """
  shape = (seen.shape[1], len(view_tracks), len(mirror))
  points = np.full(shape + (2,), np.nan)
  scores = np.zeros(shape)
  majority = (swaps & seen).sum(0) * 2 > seen.sum(0)
  for (view, track), swapped, visible in zip(tracks, swaps, seen):
    exchange = (swapped != majority) & visible
    keep = visible & ~exchange
    points[keep, view] = view_tracks[view].points[keep, track]
    scores[keep, view] = view_tracks[view].scores[keep, track]
    points[exchange, view] = view_tracks[view].points[exchange, track][:, mirror]
    scores[exchange, view] = view_tracks[view].scores[exchange, track][:, mirror]
  return points, scores


def observations_from_detections(detections, cameras: Sequence[camera_lib.Camera],
                                 joint_set: str, *, min_score: float = DEFAULT_MIN_SCORE,
                                 max_move: float = DEFAULT_MAX_MOVE,
                                 ambiguity_ratio: float = DEFAULT_AMBIGUITY_RATIO,
                                 threshold_px: float = DEFAULT_THRESHOLD_PX,
                                 min_inliers: int = DEFAULT_MIN_INLIERS,
                                 min_inlier_fraction: float = DEFAULT_MIN_INLIER_FRACTION,
                                 max_people: int | None = None
                                 ) -> people_calibration.Observations:
  """`track_view` per view, then `resolve_identities`: [F][V] detections -> Observations.

  Args:
    detections: [F][V] (joints [N, J, 2] raw px, scores [N, J]) as `detect` returns.
    cameras: [V] cameras with known intrinsics.
    joint_set: The joints' set name.
    Others: see `track_view` and `resolve_identities`.

  Returns:
    people_calibration.Observations, one person slot per identity.
  """
  num_views = len(cameras)
  tracks = [track_view([frame[view] for frame in detections], min_score=min_score,
                       max_move=max_move, ambiguity_ratio=ambiguity_ratio)
            for view in range(num_views)]
  points, scores = resolve_identities(
      tracks, cameras, joint_set, min_score=min_score, threshold_px=threshold_px,
      min_inliers=min_inliers, min_inlier_fraction=min_inlier_fraction, max_people=max_people)
  return people_calibration.Observations(points=points, scores=scores, joint_set=joint_set)
