"""People over time: 3D identities, per-view crops carried between frames, missed views recovered.

Three mechanisms, each measured on the real recordings (figures in BUILD.md):

1. 3D identities (`Tracker`): each instant's people take the identity of the nearest live track
   (distance of their centres, `person_center`), nearest pairs first, each track and person at
   most once, while the distance stays below `max_distance_mm` times the square root of the
   frames elapsed (a person hidden for a few frames keeps their identity when they reappear near
   where they were); a track not seen for more than `max_gap_frames` ends; a person matching no
   track starts a new one.
2. Crops carried between frames (MediaPipe's pose tracking): the landmark model also gives two
   auxiliary points per person from which the next frame's crop follows
   (`BlazePose.estimate_boxes`' "next_box"), so the person detector (4 windows on a portrait
   1088 x 1920 view, the costliest stage) runs in a view only at the first frame, when a carried
   crop loses its person, and every `redetect_every` frames to find people who walked in
   (`needs_detection`).
3. Views recovered from 3D (`box_from_projection`): a person reconstructed from the views that
   see them is projected into each view where nobody was matched to them; where enough of the
   projection lies inside the image, the landmark model runs on the crop around it, and the pose
   it finds joins the person when it agrees with the projection (`agrees_with_projection`). The
   person detector misses people in crowded or wide views (on the Panoptic demo frames it finds
   1 person in views where 4 are visible); the landmark model, given the crop, does not.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from mf_tf.data import joints as joints_lib
from mf_tf.geometry import camera as camera_lib
from mf_tf.models import blazepose

# Largest move (mm) of one person's centre per frame elapsed that keeps its identity: at 30 fps a
# person walking at 1.5 m/s moves 50 mm a frame, and the closest two people of the Panoptic demo
# frames stand 0.87 m apart.
DEFAULT_TRACK_MAX_DISTANCE_MM = 500.0
# Frames a track may go unseen and keep its identity (a third of a second at 60 fps).
DEFAULT_MAX_GAP_FRAMES = 20
# Frames between two runs of the person detector in a view whose people are all tracked.
DEFAULT_REDETECT_EVERY = 30
# Projected joints inside the image needed before a view is searched for a person it missed.
DEFAULT_MIN_PROJECTED_JOINTS = 8
# Two reconstructions of disjoint views whose joints lie this close (median, mm) are one person:
# the closest two people of the Panoptic demo frames stand 870 mm apart (pelvis to pelvis), and
# one person's two partial reconstructions lie 40-120 mm apart.
DEFAULT_DUPLICATE_DISTANCE_MM = 200.0
# The radius of the detector's body circle over the farthest projected joint from the body centre:
# the head top lies beyond the ears, and BlazePose's ROI scale (1.25) adds the rest of the margin.
BODY_RADIUS_MARGIN = 1.15


def person_center(joints3d, joint_set) -> np.ndarray:
  """[3] a person's position, mm: the root joint (pelvis / bodycenter), or the mean of the
  triangulated joints when the root is not (NaN when none is)."""
  joints3d = np.asarray(joints3d, np.float64)
  root = joints_lib.get_joint_set(joint_set).root
  if np.isfinite(joints3d[root]).all():
    return joints3d[root]
  valid = np.isfinite(joints3d).all(axis=-1)
  return joints3d[valid].mean(axis=0) if valid.any() else np.full(3, np.nan)


def assign_tracks(previous: dict[int, np.ndarray], centers, next_track: int,
                  max_distance_mm: float = DEFAULT_TRACK_MAX_DISTANCE_MM
                  ) -> tuple[list[int], int]:
  """Carries track ids from the previous instant's people to this instant's.

  Pairs (previous track, current person) are taken nearest first (distance of their centres,
  `person_center`), each track and each person at most once, while the distance is below
  `max_distance_mm`; every other person starts a new track.

  Args:
    previous: {track: [3] centre mm} of the previous instant's people.
    centers: [N, 3] centres of this instant's people (NaN: never matched).
    next_track: The first unused track id.
    max_distance_mm: Largest move of one person between two consecutive instants; a scalar, or
      {track: mm} per track.

  Returns:
    tracks: [N] track id per person; next_track: the first id still unused.
  """
  centers = np.asarray(centers, np.float64).reshape(-1, 3)
  limits = (max_distance_mm if isinstance(max_distance_mm, dict)
            else {track: float(max_distance_mm) for track in previous})
  pairs = [(float(np.linalg.norm(center - position)), person, track)
           for track, position in previous.items() for person, center in enumerate(centers)]
  tracks: list[int | None] = [None] * len(centers)
  taken = set()
  for distance, person, track in sorted(pair for pair in pairs if np.isfinite(pair[0])):
    if distance >= limits[track]:
      continue
    if tracks[person] is None and track not in taken:
      tracks[person] = track
      taken.add(track)
  for person, track in enumerate(tracks):
    if track is None:
      tracks[person], next_track = next_track, next_track + 1
  return tracks, next_track


class Tracker:
  """3D identities over a recording (mechanism 1 of the module docstring).

  Args:
    joint_set: The people's JointSet.
    max_distance_mm: Largest move of a person's centre per frame elapsed.
    max_gap_frames: Frames a track may go unseen and keep its identity.
  """

  def __init__(self, joint_set, max_distance_mm: float = DEFAULT_TRACK_MAX_DISTANCE_MM,
               max_gap_frames: int = DEFAULT_MAX_GAP_FRAMES):
    if max_distance_mm <= 0 or max_gap_frames < 0:
      raise ValueError(f"max_distance_mm {max_distance_mm} must be > 0 and max_gap_frames "
                       f"{max_gap_frames} >= 0")
    self.joint_set = joints_lib.get_joint_set(joint_set)
    self.max_distance_mm = float(max_distance_mm)
    self.max_gap_frames = int(max_gap_frames)
    self._last: dict[int, tuple[int, np.ndarray]] = {}  # track -> (frame, centre mm)
    self._next_track = 0

  def update(self, frame: int, joints3d: Sequence[np.ndarray]) -> list[int]:
    """Track ids of one frame's people ([J, 3] world mm each), in their order."""
    centers = np.reshape([person_center(points, self.joint_set) for points in joints3d], (-1, 3))
    live = {track: (seen, center) for track, (seen, center) in self._last.items()
            if frame - seen <= self.max_gap_frames + 1}
    # A person unseen for n frames may have gone sqrt(n) times as far (a random walk's spread):
    # linear growth would let a track that paused a second claim anybody in the room.
    limits = {track: self.max_distance_mm * max(1, frame - seen) ** 0.5
              for track, (seen, _) in live.items()}
    tracks, self._next_track = assign_tracks(
        {track: center for track, (_, center) in live.items()}, centers, self._next_track, limits)
    for track, center in zip(tracks, centers):
      if np.isfinite(center).all():
        live[track] = (frame, center)
    self._last = live
    return tracks


def needs_detection(frame_index: int, carried: int, lost: int,
                    redetect_every: int = DEFAULT_REDETECT_EVERY) -> bool:
  """Whether the person detector runs in a view at this frame (mechanism 2).

  Args:
    frame_index: Frames processed before this one.
    carried: Crops carried into this view from the previous frame.
    lost: Of those, crops whose person the landmark model no longer found.
    redetect_every: Frames between two runs when every person is tracked (0: every frame).
  """
  return (frame_index == 0 or carried == 0 or lost > 0 or redetect_every <= 1
          or frame_index % redetect_every == 0)


def project_person(joints3d, camera: camera_lib.Camera) -> tuple[np.ndarray, np.ndarray]:
  """A person's 3D joints in a view.

  Args:
    joints3d: [J, 3] world mm, NaN where unknown.
    camera: The view.

  Returns:
    joints2d: [J, 2] raw image px (NaN where unknown or behind the camera); inside: [J] bool,
    the joints that land inside the image.
  """
  joints3d = np.asarray(joints3d, np.float64)
  known = np.isfinite(joints3d).all(axis=-1)
  uv, depth = camera.project(np.where(known[:, None], joints3d, 0.0))
  valid = known & (depth > 0)
  uv = np.where(valid[:, None], uv, np.nan)
  inside = valid & np.all((uv >= 0) & (uv <= [camera.width - 1, camera.height - 1]), axis=-1)
  return uv, inside


def box_from_projection(joints2d, joint_set, score: float = 1.0,
                        min_joints: int = DEFAULT_MIN_PROJECTED_JOINTS,
                        inside=None) -> blazepose.PersonBox | None:
  """The landmark model's crop around a projected person, as the detector would have given it.

  BlazePose's detector gives two keypoints: the body centre (mid-hips) and a point whose distance
  from it is the radius of the circle around the whole body, in the direction of the head. From a
  projection: the centre is the projected mid-hip point (the joint set's root, or the mean of the
  hips), the radius the largest distance of a projected joint from it times BODY_RADIUS_MARGIN,
  the direction from the centre to the mean of the upper-body joints (those whose path to the
  root passes through neither hip).

  Args:
    joints2d: [J, 2] raw image px, NaN where unknown.
    joint_set: JointSet.
    score: The box's score.
    min_joints: Fewer known joints (inside the image when `inside` is given): None.
    inside: Optional [J] bool, the joints inside the image.

  Returns:
    A PersonBox, or None where the projection cannot place one.
  """
  joint_set = joints_lib.get_joint_set(joint_set)
  joints2d = np.asarray(joints2d, np.float64)
  known = np.isfinite(joints2d).all(axis=-1)
  counted = known if inside is None else known & np.asarray(inside, bool)
  if counted.sum() < min_joints:
    return None
  root = joint_set.root
  hips = [joint_set.names.index(name) for name in ("lhip", "rhip") if name in joint_set.names]
  if known[root]:
    center = joints2d[root]
  elif len(hips) == 2 and known[hips].all():
    center = joints2d[hips].mean(axis=0)
  else:
    return None
  upper = [joint for joint in range(joint_set.num_joints)
           if known[joint] and joint != root and not _below(joint_set, joint, hips)]
  if not upper:
    return None
  direction = joints2d[upper].mean(axis=0) - center
  length = np.linalg.norm(direction)
  if length < 1e-6:
    return None
  radius = BODY_RADIUS_MARGIN * np.max(np.linalg.norm(joints2d[known] - center, axis=-1))
  scale_point = center + direction / length * radius
  return blazepose.box_from_keypoints(np.stack([center, scale_point]), score)


def _below(joint_set, joint: int, hips: Sequence[int]) -> bool:
  """Whether a joint hangs from the root through a hip (a leg joint)."""
  while joint >= 0:
    if joint in hips:
      return True
    joint = joint_set.parents[joint]
  return False


def agrees_with_projection(pose: dict, projected, joint_set, max_distance_px: float,
                           min_score: float, min_joints: int = 4
                           ) -> tuple[bool, bool, np.ndarray]:
  """Which joints of a pose found in a recovered crop are the projected person's.

  A confident joint (score >= min_score) agrees when it lies within `max_distance_px` (raw image
  px) of the person's projection. The pose is the person's when at least `min_joints` joints and
  more than half of its confident joints with a projection agree, as labelled or with left and
  right exchanged (BlazePose swaps the sides of people seen from behind; `association`),
  whichever agrees more. In a crowd the landmark model can take some limbs of the person behind
  for this one's (Pose2Sim's multi-person demo, cam03, frames 79-99: the man's left leg and
  trunk within 10-50 px, his right leg on the woman behind him, 100-150 px off): the joints that
  do not agree are not used.

  Args:
    pose: A `BlazePose.estimate_boxes` result.
    projected: [J, 2] the person's projection, raw px (NaN where unknown).
    joint_set: JointSet.
    max_distance_px: Distance within which a joint agrees.
    min_score: Joint confidence threshold.
    min_joints: Agreeing joints needed.

  Returns:
    (accepted, mirrored, agreeing [J] bool in the person's joint order).
  """
  joint_set = joints_lib.get_joint_set(joint_set)
  projected = np.asarray(projected, np.float64)
  best = (False, False, np.zeros(joint_set.num_joints, bool))
  best_count = -1
  for mirrored in (False, True):
    order = joint_set.mirror_array if mirrored else np.arange(joint_set.num_joints)
    points, scores = pose["joints2d"][order], pose["scores"][order]
    usable = (scores >= min_score) & np.isfinite(projected).all(axis=-1)
    distance = np.linalg.norm(points - np.nan_to_num(projected), axis=-1)
    agreeing = usable & (distance < max_distance_px)
    count = int(agreeing.sum())
    if count > best_count:
      accepted = count >= min_joints and 2 * count > int(usable.sum())
      best, best_count = (accepted, mirrored, agreeing), count
  return best


def same_person(first, second, joint_set,
                max_distance_mm: float = DEFAULT_DUPLICATE_DISTANCE_MM,
                min_joints: int = 4) -> bool | None:
  """Whether two 3D reconstructions are one person, and how their left and right relate.

  Args:
    first, second: [J, 3] world mm, NaN where unknown.
    joint_set: JointSet.
    max_distance_mm: Largest median distance of their joints.
    min_joints: Joints known in both needed.

  Returns:
    None when they are different people; else whether `second`'s left and right must be
    exchanged to match `first` (False: as labelled).
  """
  joint_set = joints_lib.get_joint_set(joint_set)
  first, second = np.asarray(first, np.float64), np.asarray(second, np.float64)
  best = None
  for mirrored in (False, True):
    other = second[joint_set.mirror_array] if mirrored else second
    known = np.isfinite(first).all(axis=-1) & np.isfinite(other).all(axis=-1)
    if known.sum() < min_joints:
      continue
    distance = float(np.median(np.linalg.norm(first[known] - other[known], axis=-1)))
    if best is None or distance < best[0]:
      best = (distance, mirrored)
  if best is None or best[0] >= max_distance_mm:
    return None
  return best[1]

