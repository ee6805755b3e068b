"""The same person across views, frame by frame, before any extrinsics are known.

`people_tracks` follows people over time in each view and matches whole tracks across views; it
needs frames close enough in time for a pose to continue a track. Instants far apart (the
Panoptic demo frames: seconds between them, people moved) give one-frame tracks, and an essential
matrix fitted to one body in one frame is not determined. Here instead, per camera pair:

1. candidates: every pairing (person i in view a, person j in view b, b's sides as labelled or
   exchanged) in every frame with at least `MIN_SHARED_JOINTS` joints confident in both;
2. hypotheses: the essential matrix (`people_tracks.fit_essential`, RANSAC, Nister's five points)
   of the joints of two candidates from two different frames (two bodies at two places span the
   depth that one body lacks), all such pairs or `max_hypotheses` of them drawn at random;
3. each hypothesis is scored by, per frame, the Hungarian assignment of the frame's people on the
   joints within `threshold_px` (Sampson distance, H&Z 11.4.3), summed over frames; the best
   hypothesis gives each frame's matches (at least `MIN_MATCH_JOINTS` inliers).

Per frame, the pairwise matches, most inliers first, merge detections into people (union-find
that never joins two detections of one view), with each detection's side exchange relative to
the person; the orientation most of a person's views share is kept. Person slots are per frame:
slot p of one frame and of another need not be one person (calibration needs only that the views
of one frame agree).

`match_people` tries `people_tracks` first and uses this when a camera is left without any
matched person (`association="auto"`).

Conventions: raw (distorted) image pixels; NaN where a joint or person is missing; arrays
[F, V, P, J, ...] = frames, views, people, joints.
"""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np
from scipy import optimize

from mf_tf.data import joints as joints_lib
from mf_tf.geometry import camera as camera_lib
from mf_tf.geometry import people_calibration
from mf_tf.reconstruct import people_tracks

# A pairing of two detections is a candidate with at least this many joints confident in both.
MIN_SHARED_JOINTS = 8
# A frame's pairing is a match with at least this many joints within the threshold.
MIN_MATCH_JOINTS = 6
# Hypotheses per camera pair: every two candidates of different frames, or this many drawn.
DEFAULT_MAX_HYPOTHESES = 300
ASSOCIATIONS = ("auto", "tracks", "frames")


def _padded(detections, view: int, camera, mirror, min_score: float):
  """[F, N, 2 (as labelled, mirrored), J, 2] normalized joints and [F, N, 2, J] seen masks."""
  num_frames = len(detections)
  num_people = max((len(frame[view][0]) for frame in detections), default=0)
  num_joints = len(mirror)
  points = np.zeros((num_frames, num_people, num_joints, 2))
  seen = np.zeros((num_frames, num_people, num_joints), bool)
  for f, frame in enumerate(detections):
    joints, scores = frame[view]
    if len(joints):
      points[f, :len(joints)] = np.nan_to_num(np.asarray(joints, np.float64))
      seen[f, :len(joints)] = (np.asarray(scores) >= min_score) & np.isfinite(joints).all(-1)
  normalized = people_tracks._normalized(camera, points.reshape(-1, 2)).reshape(points.shape)
  return (np.stack([normalized, normalized[:, :, mirror]], 2),
          np.stack([seen, seen[:, :, mirror]], 2))


def match_frames(detections, view_a: int, view_b: int, camera_a, camera_b, joint_set: str, *,
                 min_score: float = people_tracks.DEFAULT_MIN_SCORE,
                 threshold_px: float = people_tracks.DEFAULT_THRESHOLD_PX,
                 max_hypotheses: int = DEFAULT_MAX_HYPOTHESES, seed: int = 0):
  """Each frame's matches of views a and b under the pair's best essential matrix.

  Args:
    detections: [F][V] (joints [N, J, 2] raw px, scores [N, J]), as `people_tracks.detect`.
    view_a, view_b: The two views; camera_a, camera_b: their cameras (intrinsics used).
    joint_set: The joints' set (its left/right partners).
    min_score, threshold_px: Joint confidence and inlier threshold (Sampson, px).
    max_hypotheses: Most essential matrices tried.
    seed: Of the hypotheses drawn and of RANSAC.

  Returns:
    (E [3, 3] or None, [(frame, i, j, b mirrored, inliers)] matches, most inliers first).
  """
  mirror = joints_lib.get_joint_set(joint_set).mirror_array
  focal = np.mean([camera_a.K[0, 0], camera_a.K[1, 1], camera_b.K[0, 0], camera_b.K[1, 1]])
  threshold = threshold_px / focal
  xa, seen_a = _padded(detections, view_a, camera_a, mirror, min_score)
  xb, seen_b = _padded(detections, view_b, camera_b, mirror, min_score)
  xa, seen_a = xa[:, :, 0], seen_a[:, :, 0]  # a as labelled; b in both orientations.
  usable = seen_a[:, :, None, None] & seen_b[:, None]  # [F, Na, Nb, 2, J]
  candidates = np.argwhere(usable.sum(-1) >= MIN_SHARED_JOINTS)  # (f, i, j, side)
  pairs = [(c, d) for c, d in itertools.combinations(range(len(candidates)), 2)
           if candidates[c][0] != candidates[d][0]]
  rng = np.random.default_rng(seed)
  if len(pairs) > max_hypotheses:
    pairs = [pairs[k] for k in rng.choice(len(pairs), max_hypotheses, replace=False)]
  best_score, best_inliers = -1, None
  for c, d in pairs:
    chosen = [candidates[c], candidates[d]]
    keep = [usable[f, i, j, s] for f, i, j, s in chosen]
    E = people_tracks.fit_essential(
        np.concatenate([xa[f, i][k] for (f, i, _, _), k in zip(chosen, keep)]),
        np.concatenate([xb[f, j, s][k] for (f, _, j, s), k in zip(chosen, keep)]), threshold,
        seed)
    if E is None:
      continue
    close = (people_tracks.sampson_distance(E, xa[:, :, None, None], xb[:, None]) < threshold)
    inliers = (close & usable).sum(-1)  # [F, Na, Nb, 2]
    best_side = inliers.max(-1)
    score = 0
    for frame in best_side:
      rows, cols = optimize.linear_sum_assignment(-frame)
      score += int(frame[rows, cols].sum())
    if score > best_score:
      best_score, best_inliers, best_E = score, inliers, E
  if best_inliers is None:
    return None, []
  matches = []
  for f, frame in enumerate(best_inliers):
    best_side = frame.max(-1)
    rows, cols = optimize.linear_sum_assignment(-best_side)
    for i, j in zip(rows, cols):
      if best_side[i, j] >= MIN_MATCH_JOINTS:
        matches.append((f, int(i), int(j), bool(frame[i, j, 1] > frame[i, j, 0]),
                        int(best_side[i, j])))
  return best_E, sorted(matches, key=lambda match: -match[-1])


def _people_of_frame(frame_matches, detections_of_frame, num_views: int):
  """Per-frame union-find of pairwise matches -> [{view: (detection, mirrored)}], most views
  first."""
  nodes = [(v, i) for v in range(num_views) for i in range(len(detections_of_frame[v][0]))]
  index = {node: k for k, node in enumerate(nodes)}
  parent, flip = list(range(len(nodes))), [False] * len(nodes)
  members = {k: [k] for k in range(len(nodes))}

  def find(k):
    swapped = False
    while parent[k] != k:
      swapped ^= flip[k]
      k = parent[k]
    return k, swapped

  for (a, i), (b, j), mirrored in frame_matches:
    (root_a, flip_a), (root_b, flip_b) = find(index[a, i]), find(index[b, j])
    views_a = {nodes[k][0] for k in members.get(root_a, [])}
    if root_a == root_b or views_a & {nodes[k][0] for k in members[root_b]}:
      continue
    parent[root_b] = root_a
    flip[root_b] = flip_a ^ flip_b ^ mirrored
    members[root_a] += members.pop(root_b)
  people = []
  for group in members.values():
    if len(group) < 2:
      continue
    flips = [find(k)[1] for k in group]
    majority = 2 * sum(flips) > len(flips)
    people.append({nodes[k][0]: (nodes[k][1], swapped != majority)
                   for k, swapped in zip(group, flips)})
  return sorted(people, key=lambda person: -len(person))


def _refine_orientations(person, detections_of_frame, cameras, essentials, mirror,
                         min_score: float, threshold: float, rounds: int = 2) -> dict:
  """Each view's side exchange chosen by its inliers with all the person's other views.

  The union-find takes each view's orientation from one pairwise match; here every view keeps
  the orientation whose joints lie within `threshold` (normalized Sampson distance) of the
  epipolar geometry of the most other views' joints.
  """
  def joints(view, mirrored):
    index, _ = person[view]
    points, scores = (np.asarray(x)[index] for x in detections_of_frame[view])
    order = mirror if mirrored else np.arange(len(mirror))
    seen = (scores[order] >= min_score) & np.isfinite(points[order]).all(-1)
    return people_tracks._normalized(cameras[view], np.nan_to_num(points[order])), seen

  person = dict(person)
  for _ in range(rounds):
    for view in person:
      counts = []
      for mirrored in (False, True):
        x_view, seen_view = joints(view, mirrored)
        count = 0
        for other, (_, other_mirrored) in person.items():
          if other == view or essentials.get((min(view, other), max(view, other))) is None:
            continue
          x_other, seen_other = joints(other, other_mirrored)
          xa, xb = (x_view, x_other) if view < other else (x_other, x_view)
          distance = people_tracks.sampson_distance(essentials[min(view, other),
                                                               max(view, other)], xa, xb)
          count += int(((distance < threshold) & seen_view & seen_other).sum())
        counts.append(count)
      person[view] = (person[view][0], counts[1] > counts[0])
  return person


def observations_from_frames(detections, cameras: Sequence[camera_lib.Camera], joint_set: str,
                             *, min_score: float = people_tracks.DEFAULT_MIN_SCORE,
                             threshold_px: float = people_tracks.DEFAULT_THRESHOLD_PX,
                             max_hypotheses: int = DEFAULT_MAX_HYPOTHESES,
                             max_people: int | None = None) -> people_calibration.Observations:
  """Frame-by-frame association (module docstring): [F][V] detections -> Observations.

  Args:
    detections: [F][V] (joints [N, J, 2] raw px, scores [N, J]).
    cameras: [V] cameras with known intrinsics.
    joint_set: The joints' set name.
    min_score, threshold_px, max_hypotheses: See `match_frames`.
    max_people: Keep at most this many people per frame (most views first); None: all.
  """
  num_views, num_frames = len(cameras), len(detections)
  mirror = joints_lib.get_joint_set(joint_set).mirror_array
  num_joints = len(mirror)
  per_frame = [[] for _ in range(num_frames)]
  essentials = {}
  for a, b in itertools.combinations(range(num_views), 2):
    essentials[a, b], matches = match_frames(
        detections, a, b, cameras[a], cameras[b], joint_set, min_score=min_score,
        threshold_px=threshold_px, max_hypotheses=max_hypotheses)
    for f, i, j, mirrored, inliers in matches:
      per_frame[f].append((inliers, (a, i), (b, j), mirrored))
  focal = np.mean([[camera.K[0, 0], camera.K[1, 1]] for camera in cameras])
  people = []
  for f, matches in enumerate(per_frame):
    frame_people = _people_of_frame([m[1:] for m in sorted(matches, key=lambda m: -m[0])],
                                    detections[f], num_views)
    people.append([_refine_orientations(person, detections[f], cameras, essentials, mirror,
                                        min_score, threshold_px / focal)
                   for person in frame_people])
  num_people = max((len(frame) for frame in people), default=0)
  if max_people is not None:
    num_people = min(num_people, max_people)
  points = np.full((num_frames, num_views, num_people, num_joints, 2), np.nan)
  scores = np.zeros((num_frames, num_views, num_people, num_joints))
  for f, frame in enumerate(people):
    for p, person in enumerate(frame[:num_people]):
      for view, (i, mirrored) in person.items():
        joints, joint_scores = (np.asarray(x)[i] for x in detections[f][view])
        order = mirror if mirrored else np.arange(num_joints)
        points[f, view, p], scores[f, view, p] = joints[order], joint_scores[order]
  return people_calibration.Observations(points=points, scores=scores, joint_set=joint_set)


def match_people(detections, cameras: Sequence[camera_lib.Camera], joint_set: str, *,
                 association: str = "auto", min_score: float = people_tracks.DEFAULT_MIN_SCORE,
                 max_people: int | None = None) -> people_calibration.Observations:
  """The people of every view matched across views, by tracks or frame by frame.

  Args:
    detections: [F][V] (joints [N, J, 2] raw px, scores [N, J]).
    cameras: [V] cameras with known intrinsics.
    joint_set: The joints' set name.
    association: "tracks" (`people_tracks.observations_from_detections`: consecutive frames),
      "frames" (`observations_from_frames`: instants far apart), or "auto": tracks, then frames
      when the tracks leave a camera with no matched person.
    min_score: Joint confidence threshold.
    max_people: Keep at most this many people; None: all.
  """
  if association not in ASSOCIATIONS:
    raise ValueError(f"association is {association!r}, expected one of {ASSOCIATIONS}")
  if association in ("auto", "tracks"):
    observations = people_tracks.observations_from_detections(
        detections, cameras, joint_set, min_score=min_score, max_people=max_people)
    seen = (observations.scores >= min_score).any(axis=(0, 2, 3))  # [V]
    if association == "tracks" or seen.all():
      return observations
  return observations_from_frames(detections, cameras, joint_set, min_score=min_score,
                                  max_people=max_people)
