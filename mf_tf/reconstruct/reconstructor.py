"""One frame's people after another, with crops and identities carried from frame to frame.

    images of one instant -> per view: landmarks in the crops carried from the previous frame,
    the person detector only where needed (`tracking.needs_detection`) -> association
    (`models.association`), crop fusion, robust triangulation (`people`) -> people split by
    association merged (`tracking.same_person`) -> views recovered from 3D
    (`tracking.box_from_projection`) -> 3D identities (`tracking.Tracker`)

`Reconstructor.step` does this for one frame; `mf_tf.reconstruct.pipeline` calls it for every
frame of a recording and writes the files. Every stage is timed by a `StageTimer`.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import itertools
import queue
import threading
import time
from typing import Sequence

import numpy as np

from mf_tf.data import joints as joints_lib
from mf_tf.geometry.rig import Rig
from mf_tf.models import association
from mf_tf.reconstruct import people as people_lib
from mf_tf.reconstruct import tracking


class StageTimer:
  """Time per named stage (`with timer.stage("fusion"): ...`), nested stages excluded from their
  parent's time. Thread-safe: stages timed in worker threads add their own time, so with several
  workers the stages run inside them ("detection", "landmarks", "fusion", "triangulation") sum
  to more than the wall time they took; "views" and "people" time those parallel sections in
  the calling thread."""

  def __init__(self):
    self.seconds = collections.defaultdict(float)
    self._lock = threading.Lock()
    self._local = threading.local()

  @contextlib.contextmanager
  def stage(self, name: str):
    stack = self._local.__dict__.setdefault("stack", [])
    start = time.perf_counter()
    stack.append([name, 0.0])
    try:
      yield
    finally:
      _, nested = stack.pop()
      elapsed = time.perf_counter() - start
      with self._lock:
        self.seconds[name] += elapsed - nested
      if stack:
        stack[-1][1] += elapsed


@dataclasses.dataclass(frozen=True)
class TrackingSettings:
  """How people are followed over time (`tracking`'s module docstring; config.video's values,
  measured in BUILD.md; `mf_tf.modes.video.session_settings` builds them).

  Attributes:
    redetect_every: Frames between person-detector runs in a view whose people are tracked.
    recover_views: Search the views that missed a reconstructed person (`tracking`, 3).
    recovery_max_px: A recovered pose joins its person when its confident joints lie this close
      to the person's projection on average (raw px).
    max_distance_mm: A person's centre move per frame that keeps their identity.
    max_gap_frames: Frames a track may go unseen; gaps this short are filled in the output.
    min_track_frames: Tracks seen in fewer frames are not written as motion files.
    duplicate_distance_mm: Two people of disjoint views whose joints lie this close (median) are
      one person split by association (`Reconstructor._merge_duplicates`).
  """

  redetect_every: int
  recover_views: bool
  recovery_max_px: float
  max_distance_mm: float
  max_gap_frames: int
  min_track_frames: int
  duplicate_distance_mm: float

  def __post_init__(self):
    if self.redetect_every < 0 or self.max_gap_frames < 0 or self.min_track_frames < 1:
      raise ValueError(f"redetect_every {self.redetect_every} and max_gap_frames "
                       f"{self.max_gap_frames} must be >= 0, min_track_frames "
                       f"{self.min_track_frames} >= 1")
    if self.recovery_max_px <= 0 or self.max_distance_mm <= 0:
      raise ValueError(f"recovery_max_px {self.recovery_max_px} and max_distance_mm "
                       f"{self.max_distance_mm} must be positive")


class Reconstructor:
  """People of each frame of one recording, in order (crops and identities carry over).

  The views' person detection and landmarks, then the people's fusion and triangulation, run on
  one worker thread per model (the TFLite models and NumPy release the interpreter lock; each
  model is used by one thread at a time).

  Args:
    models: A `blazepose.BlazePose`, or several (one worker each; give each `num_threads=1`).
    rig: The views' cameras, in the order of the frames' images.
    joint_set: JointSet (or name) of the output.
    instant: `people.InstantSettings`.
    tracking_settings: TrackingSettings.
    timer: StageTimer (a new one when None).
  """

  def __init__(self, models, rig: Rig, joint_set,
               instant: people_lib.InstantSettings, tracking_settings: TrackingSettings,
               timer: StageTimer | None = None):
    models = list(models) if isinstance(models, (list, tuple)) else [models]
    if not models:
      raise ValueError("Reconstructor needs at least one BlazePose model")
    self.rig = rig
    self.joint_set = joints_lib.get_joint_set(joint_set)
    self.instant = instant
    self.tracking = tracking_settings
    self.timer = timer or StageTimer()
    self._models = queue.SimpleQueue()
    for model in models:
      self._models.put(model)
    self._pool = (concurrent.futures.ThreadPoolExecutor(len(models), "mf_tf_views")
                  if len(models) > 1 else None)
    self._carried = [[] for _ in range(rig.num_views)]
    self._tracker = tracking.Tracker(self.joint_set, tracking_settings.max_distance_mm,
                                     tracking_settings.max_gap_frames)
    self._frame = 0

  def close(self) -> None:
    """Stops the worker threads."""
    if self._pool is not None:
      self._pool.shutdown()

  def _map(self, function, items) -> list:
    items = list(items)
    if self._pool is None or len(items) < 2:
      return [function(item) for item in items]
    return list(self._pool.map(function, items))

  @contextlib.contextmanager
  def _model(self):
    model = self._models.get()
    try:
      yield model
    finally:
      self._models.put(model)

  def step(self, images: Sequence[np.ndarray]) -> dict:
    """One frame's people.

    Args:
      images: Per view, [H, W, 3] uint8 RGB, the rig's image size.

    Returns:
      {"detections": [V] poses found per view before recovery, "recovered": [V] poses added by
       recovery, "detector_runs": [V] bool, "people": per person `people.reconstruct_person`'s
       dict plus "views", "members" and "track"}.
    """
    if len(images) != self.rig.num_views:
      raise ValueError(f"got {len(images)} images, expected one per camera of rig "
                       f"{self.rig.name!r} ({self.rig.num_views})")
    stage = self.timer.stage
    with stage("views"):
      found_views = self._map(lambda view: self._view_poses(view, images[view]),
                              range(self.rig.num_views))
    estimates = [poses for poses, _ in found_views]
    runs = [run for _, run in found_views]
    detections = [len(poses) for poses in estimates]
    with stage("association"):
      found = association.associate(
          [_stack(poses, "joints2d", (0, self.joint_set.num_joints, 2)) for poses in estimates],
          [_stack(poses, "scores", (0, self.joint_set.num_joints)) for poses in estimates],
          self.rig, max_cost_px=self.instant.max_cost_px, min_score=self.instant.min_score,
          mirror=self.joint_set.mirror)
    with stage("people"):
      people = self._map(
          lambda person: self._reconstruct(estimates, dict(person.members),
                                           dict(person.mirrored)), found)
    with stage("recovery"):
      people = self._merge_duplicates(estimates, people)
      if self.tracking.recover_views:
        people = [self._recover(images, estimates, person) for person in people]
    recovered = [len(poses) - count for poses, count in zip(estimates, detections)]
    with stage("tracking"):
      tracks = self._tracker.update(self._frame, [person["joints3d"] for person in people])
      for person, track in zip(people, tracks):
        person["track"] = track
      self._carried = [[pose["next_box"] for pose in poses] for poses in estimates]
    self._frame += 1
    return {"detections": detections, "recovered": recovered, "detector_runs": runs,
            "people": people}

  def _view_poses(self, view: int, image) -> tuple[list[dict], bool]:
    """One view's poses: the crops carried from the previous frame, then the detector's people
    where it runs (`tracking.needs_detection`)."""
    stage = self.timer.stage
    camera, carried = self.rig.cameras[view], self._carried[view]
    with self._model() as model:
      with stage("landmarks"):
        poses = model.estimate_boxes(image, carried, self.joint_set, camera)
      run = tracking.needs_detection(self._frame, len(carried), len(carried) - len(poses),
                                     self.tracking.redetect_every)
      if run:
        with stage("detection"):
          boxes = [box for box in model.detect_people(image)
                   if not any(_covers(pose, box) for pose in poses)]
        with stage("landmarks"):
          poses += model.estimate_boxes(image, boxes, self.joint_set, camera, kept=poses)
    return poses, run

  def _reconstruct(self, estimates, members: dict, mirrored: dict) -> dict:
    views = sorted(members)
    result = people_lib.reconstruct_person(
        [estimates[view][members[view]] for view in views], [mirrored[view] for view in views],
        [self.rig.cameras[view] for view in views], self.joint_set, self.instant, self.timer)
    result.update(views=views, members=dict(sorted(members.items())))
    return result

  def _merge_duplicates(self, estimates, people: list[dict]) -> list[dict]:
    """One person split into two groups of views becomes one (`tracking.same_person`).

    Association keeps a group's mean epipolar cost under its threshold, so one view whose pose is
    off (a limb taken for another) can split a person seen by 4 views into two pairs, each
    triangulating the same body: on Pose2Sim's multi-person demo, frame 77 gave two 2-view
    people 80 mm apart. Their union is reconstructed and kept when it reprojects onto every view
    within the association threshold (median over confident joints).
    """
    merged = True
    while merged:
      merged = False
      for first, second in itertools.combinations(range(len(people)), 2):
        a, b = people[first], people[second]
        if set(a["views"]) & set(b["views"]):
          continue
        flip = tracking.same_person(a["joints3d"], b["joints3d"], self.joint_set,
                                    self.tracking.duplicate_distance_mm)
        if flip is None:
          continue
        mirrored = {**dict(zip(a["views"], a["mirrored"])),
                    **{view: value ^ flip for view, value in zip(b["views"], b["mirrored"])}}
        union = self._reconstruct(estimates, {**a["members"], **b["members"]}, mirrored)
        confident = union["scores"] >= self.instant.min_score
        errors = np.where(confident, union["errors"], np.nan)
        medians = [np.nanmedian(row) if np.isfinite(row).any() else np.inf for row in errors]
        if max(medians) < self.instant.max_cost_px:
          people = [person for index, person in enumerate(people)
                    if index not in (first, second)] + [union]
          people.sort(key=lambda person: -len(person["views"]))
          merged = True
          break
    return people

  def _recover(self, images, estimates, person: dict) -> dict:
    """The person with the views that missed them searched (`tracking`, mechanism 3)."""
    members, mirrored = dict(person["members"]), dict(zip(person["views"], person["mirrored"]))
    claimed = {(view, index) for view, index in members.items()}
    added = False
    for view, camera in enumerate(self.rig.cameras):
      if view in members:
        continue
      projected, inside = tracking.project_person(person["joints3d"], camera)
      box = tracking.box_from_projection(projected, self.joint_set, inside=inside)
      if box is None:
        continue
      # A pose already found in this view that nobody claimed, else the landmark model's answer
      # in the crop around the projection.
      candidates = [(index, pose) for index, pose in enumerate(estimates[view])
                    if (view, index) not in claimed]
      with self.timer.stage("landmarks"), self._model() as model:
        fresh = model.estimate_boxes(images[view], [box], self.joint_set, camera,
                                     kept=estimates[view])
      candidates += [(len(estimates[view]), pose) for pose in fresh]
      for index, pose in candidates:
        accepted, flip, agreeing = tracking.agrees_with_projection(
            pose, projected, self.joint_set, self.tracking.recovery_max_px,
            self.instant.min_score)
        if accepted:
          # Only the joints that agree are used (the others may be another person's limbs).
          order = self.joint_set.mirror_array if flip else np.arange(self.joint_set.num_joints)
          gated = np.zeros_like(pose["scores"])
          gated[order] = np.where(agreeing, pose["scores"][order], 0.0)
          pose = {**pose, "scores": gated}
          if index == len(estimates[view]):
            estimates[view].append(pose)
          else:
            estimates[view][index] = pose
          members[view], mirrored[view] = index, flip
          added = True
          break
    return self._reconstruct(estimates, members, mirrored) if added else person


def _covers(pose: dict, box) -> bool:
  """Whether a detector box's centre lies inside the extent of a pose found already (the
  detector found a person that a carried crop follows)."""
  points = pose["joints2d"][pose["scores"] > 0]
  if not len(points):
    return False
  low, high = points.min(axis=0), points.max(axis=0)
  center = (np.asarray(box.box[:2]) + np.asarray(box.box[2:])) / 2
  return bool(np.all(center >= low) and np.all(center <= high))


def _stack(poses, field: str, empty_shape) -> np.ndarray:
  return np.stack([pose[field] for pose in poses]) if poses else np.zeros(empty_shape)
