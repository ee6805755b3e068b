r"""--mode=video: multi-person 3D poses from synchronized real frames of a calibrated rig.

  python -m mf_tf.main --mode=video --workdir=/tmp/video \
      --config.video.frames_dir=tests/fixtures/panoptic_demo \
      --config.video.rig=tests/fixtures/panoptic_demo/camera_parameters.json

Input: `frames_dir` holds one subfolder per camera, named as the rig's cameras (e.g. 00_03), each
with one image per instant (.jpg / .jpeg / .png). An instant's key is the file name without its
extension and without a leading "<camera>_" (00_03/00_03_00004500.jpg -> "00004500"), so every
folder must hold the same keys. `rig` is a canonical rig file (`calibration.load_rig_file`), a
built-in rig name, or a Panoptic calibration JSON (its cameras picked by folder name); the views
are the folders, in sorted order.

Per instant: BlazePose in every view (crops of the undistorted image, `models.blazepose`),
cross-view association (`models.association`, which also finds the views where BlazePose
swapped the person's left and right; their joints are exchanged), then per person seen by >= 2
views: fusion of the crop heatmaps along the exact per-frame crop geometry
(`fusion.epipolar_fusion` with `geometry.crops.crop_fundamental_matrix`, each view's confident
joints as sources; `fusion=none` skips it), sub-pixel argmax decoding
(`data.codec.HeatmapCodec.decode`), back to image pixels, a confidence-weighted DLT over the
person's views (`geometry.triangulation`; weights: BlazePose's joint visibility, views below
`min_score` dropped, then views beyond `max_error_px` of the others dropped per joint:
`triangulate_person`), and joints attached by a bone of implausible length dropped
(`drop_implausible_joints`). Across instants, in key order, each person takes the track of the
previous instant's person whose pelvis is nearest, within `track_max_distance_mm`
(`assign_tracks`); the others start new tracks.

Output (under `output_dir`, default <workdir>/video):
  frames/<key>.json, one per instant:
    {"instant": key, "index": int, "joint_set": name, "joint_names": [J], "fusion": "none" |
     "epipolar", "cameras": [V names], "images": {camera: path},
     "detections": {camera: number of people BlazePose found},
     "people": [                                  # seen by >= 2 views; [] if nobody
       {"id": int (order within this instant: more views first),
        "track": int (the same person over consecutive instants, see `assign_tracks`),
        "views": [camera names],
        "joints2d_before": {camera: [J x [x, y]]}, # raw image px, decoded from BlazePose heatmaps
        "joints2d_after": {camera: [J x [x, y]]},  # the same after fusion (= before for none)
        "scores": {camera: [J]},                   # BlazePose joint visibility
        "joints3d_mm": [J x ([x, y, z] | null)],   # world mm; null: < 2 confident views or
                                                   # an implausible bone
        "reprojection_error_px": {camera: [J x (float | null)]}}]}
                                                   # |project(joints3d) - joints2d_after|, raw px
  overlays/<key>_<camera>.png: the view with each person's fused 2D joints (dots) and its
    reprojected 3D skeleton (lines, the joint set's limbs), one colour and number per track.
  summary.json: per instant, the number of people, their tracks and the median reprojection
    error.
"""

from __future__ import annotations

import json
import os
import re
from typing import Sequence

import numpy as np
from absl import logging
from keras.utils import Progbar

from mf_tf.data import codec as codec_lib
from mf_tf.data import joints as joints_lib
from mf_tf.data import skeleton as skeleton_lib
from mf_tf.fusion import epipolar_fusion
from mf_tf.geometry import calibration
from mf_tf.geometry import camera as camera_lib
from mf_tf.geometry import crops
from mf_tf.geometry import rigs
from mf_tf.geometry import triangulation
from mf_tf.geometry.rig import Rig
from mf_tf.geometry.rig import ordered_pairs
from mf_tf.models import association
from mf_tf.models import blazepose

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
FUSIONS = ("none", "epipolar")
# A view leaves a joint seen by >= 3 views when its reprojection error exceeds this (raw px): on
# the 25 Panoptic demo frames the fused joints of confident views reproject a median 2.6 px from
# their estimate (90th percentile 7.1 px, 99th 15.3 px, largest 57 px); 25 px takes one view out
# of one joint (00004500, the left ankle of the man in grey: 57 px in 00_03 while the 3 other
# confident views agree within 3 px).
DEFAULT_MAX_ERROR_PX = 25.0
# Accepted bone length / reference (`drop_implausible_joints`). The 95 checked bones of the
# people seen by 4-5 views, whose extra views make the triangulation reliable, measure 0.66-1.40
# of the reference (BlazePose's hips lie closer together than the mocap markers); the 2-view
# person of instant 00004500 whose legs in 00_12 are those of the person standing in front of
# him measures 0.59 to 5.4 times the reference on his hips and legs, 1.69 from spine to pelvis.
DEFAULT_BONE_RATIO_RANGE = (0.55, 1.6)
# Largest move (mm) of one person's pelvis between consecutive instants that keeps its track: at
# 30 fps a person walking at 1.5 m/s moves 50 mm a frame, and the closest two people of the demo
# frames stand 0.87 m apart.
DEFAULT_TRACK_MAX_DISTANCE_MM = 500.0
# h36m17 joints that BlazePose marks at the same anatomical point (`reference_bone_lengths`), and
# the other sets' names of two of them.
_REFERENCE_POINTS = ("pelvis", "rhip", "rknee", "rankle", "lhip", "lknee", "lankle", "spine",
                     "thorax", "lshoulder", "lelbow", "lwrist", "rshoulder", "relbow", "rwrist")
_REFERENCE_ALIASES = {"bodycenter": "pelvis", "neck": "thorax"}


# ------------------------------------------------------------------------------------------------
# Inputs.


def list_instants(frames_dir: str) -> tuple[list[str], list[str], dict[str, dict[str, str]]]:
  """Camera folders and the synchronized frames of each instant.

  Args:
    frames_dir: Folder with one subfolder per camera.

  Returns:
    cameras: sorted folder names; keys: sorted instant keys; paths: {key: {camera: file}}.

  Raises:
    FileNotFoundError: frames_dir missing, fewer than 2 camera folders, a folder without
      images, or an instant missing in some folder (named).
  """
  if not os.path.isdir(frames_dir):
    raise FileNotFoundError(f"frames_dir {frames_dir!r} is not a folder; expected one subfolder "
                            "of synchronized frames per camera")
  cameras = sorted(name for name in os.listdir(frames_dir)
                   if os.path.isdir(os.path.join(frames_dir, name)))
  if len(cameras) < 2:
    raise FileNotFoundError(f"frames_dir {frames_dir!r} has camera folders {cameras}; expected "
                            "at least 2 (one per camera, named as the rig's cameras)")
  frames = {}
  for camera in cameras:
    folder = os.path.join(frames_dir, camera)
    files = {}
    for name in sorted(os.listdir(folder)):
      stem, extension = os.path.splitext(name)
      if extension.lower() in IMAGE_EXTENSIONS:
        files[re.sub(f"^{re.escape(camera)}_", "", stem)] = os.path.join(folder, name)
    if not files:
      raise FileNotFoundError(f"camera folder {folder!r} holds no image ({IMAGE_EXTENSIONS})")
    frames[camera] = files
  keys = sorted(set().union(*(files.keys() for files in frames.values())))
  for camera, files in frames.items():
    missing = [key for key in keys if key not in files]
    if missing:
      raise FileNotFoundError(
          f"camera folder {os.path.join(frames_dir, camera)!r} lacks the frames of instants "
          f"{missing[:5]}{' ...' if len(missing) > 5 else ''} that other cameras have; expected "
          "synchronized frames in every folder")
  return cameras, keys, {key: {camera: frames[camera][key] for camera in cameras}
                         for key in keys}


def load_rig(rig_spec: str, cameras: Sequence[str]) -> Rig:
  """The rig of the given camera folders, in their order.

  Args:
    rig_spec: Canonical rig file, built-in rig name, or Panoptic calibration JSON.
    cameras: Camera (folder) names.

  Raises:
    ValueError: empty spec, or a folder naming no camera of the rig (a rig with fewer cameras).
    FileNotFoundError: the file does not exist.
  """
  if not rig_spec:
    raise ValueError("config.video.rig is empty; expected a rig file, a built-in rig name or a "
                     "Panoptic calibration JSON")
  panoptic = False
  if os.path.isfile(rig_spec):
    with open(rig_spec) as stream:
      try:
        data = json.load(stream)
      except json.JSONDecodeError as error:
        raise ValueError(f"rig file {rig_spec!r} is not valid JSON: {error}") from None
    entries = data.get("cameras") if isinstance(data, dict) else None
    panoptic = bool(entries) and isinstance(entries[0], dict) and "distCoef" in entries[0]
  elif os.sep in rig_spec or rig_spec.endswith(".json"):
    raise FileNotFoundError(f"rig file {rig_spec!r} not found")
  if panoptic:
    available = [str(entry.get("name")) for entry in data["cameras"]]
  else:
    full = rigs.get_rig(rig_spec)
    available = list(full.camera_names)
  missing = [camera for camera in cameras if camera not in available]
  if missing:
    shown = f"{available[:8]}{' ...' if len(available) > 8 else ''}"
    raise ValueError(f"camera folders {missing} have no camera in rig {rig_spec!r} "
                     f"({len(available)} cameras: {shown}); expected one folder per rig camera, "
                     "named as the camera")
  if panoptic:
    return calibration.read_panoptic(rig_spec, names=list(cameras))
  return full.subset([available.index(camera) for camera in cameras], name=full.name)


def check_image(image: np.ndarray, camera: camera_lib.Camera, path: str) -> None:
  """Raises ValueError naming the file when an image's size is not its camera's."""
  height, width = image.shape[:2]
  if (width, height) != (int(camera.width), int(camera.height)):
    raise ValueError(f"frame {path!r} is {width}x{height}, expected {int(camera.width)}x"
                     f"{int(camera.height)} (camera {camera.name!r} of the rig); every frame of a "
                     "camera must have its calibrated size")


# ------------------------------------------------------------------------------------------------
# One person, one instant.


def fuse_person(heatmaps, affines, cameras, fusion: str, line_width_px: float,
                line_value: float, source_mask=None) -> np.ndarray:
  """Fuses one person's crop heatmaps along the per-frame crop geometry.

  Each view keeps its own heatmap and receives the epipolar lines of the other views' heatmaps
  (`epipolar_fusion.epipolar_fuse`, linear in the heatmaps); `source_mask` restricts the sources
  to the joints a view actually sees. A joint that BlazePose places outside the image or behind
  another body part (visibility below min_score) still has a heatmap, and its peak then lies
  anywhere; fused into the other views it can move their peaks along its epipolar line: on the
  Panoptic demo instant 00009348 the right knee of the person in the red shirt, cut off in 00_03
  (visibility 0.20), pulled the fused knee of 00_06 and 00_13 to hip height (the triangulated
  shin measured 857 mm; 318 mm from the unfused heatmaps, and the same with this mask).

  Args:
    heatmaps: [V, 64, 64, J] BlazePose crop heatmaps of the person's views.
    affines: [V, 3, 3] undistorted image px -> heatmap px of each crop.
    cameras: The V cameras.
    fusion: "none" or "epipolar".
    line_width_px, line_value: The calibrated line base.
    source_mask: Optional [V, J] bool: the heatmaps that may be fused into other views (None:
      all of them).

  Returns:
    [V, 64, 64, J] float32.
  """
  heatmaps = np.asarray(heatmaps, np.float32)
  if fusion == "none":
    return heatmaps
  pairs = ordered_pairs(len(cameras))
  fundamental = np.stack([crops.crop_fundamental_matrix(cameras[s], cameras[t], affines[s],
                                                        affines[t]) for s, t in pairs])
  sources = heatmaps
  if source_mask is not None:
    sources = heatmaps * np.asarray(source_mask, np.float32)[:, None, None, :]
  # epipolar_fuse(h) = h + messages(h), so the messages of the sources alone are
  # epipolar_fuse(sources) - sources.
  fused = epipolar_fusion.epipolar_fuse(sources, fundamental, line_width_px=line_width_px,
                                        line_value=line_value).numpy()
  return heatmaps + (fused - sources)


def decode_to_image(heatmaps, affines, cameras) -> np.ndarray:
  """[V, H, W, J] crop heatmaps -> [V, J, 2] RAW image px (sub-pixel argmax, then A^-1, distort)."""
  coords, _ = codec_lib.HeatmapCodec(int(heatmaps.shape[1])).decode(heatmaps)
  undistorted = crops.apply_affine(np.linalg.inv(np.asarray(affines, np.float64)),
                                   coords.numpy().astype(np.float64))
  return np.stack([camera_lib.distort_points(camera, points)
                   for camera, points in zip(cameras, undistorted)])


def triangulate_person(joints2d, scores, cameras, min_score: float,
                       max_error_px: float = np.inf):
  """Confidence-weighted DLT of one person, dropping views that disagree with the others.

  Per joint, while more than 2 views take part and the largest of their reprojection errors
  exceeds `max_error_px`, the view with that error leaves and the joint is triangulated again (a
  view whose detection took another person's limb for this one's; Hartley & Zisserman 12.2 for
  the DLT, the loop a deterministic form of RANSAC's outlier rejection).

  Args:
    joints2d: [V, J, 2] raw image px.
    scores: [V, J] confidences; views below min_score are dropped per joint.
    cameras: The V cameras.
    min_score: Confidence threshold.
    max_error_px: Reprojection error (raw px) beyond which a view leaves a joint of >= 3 views.

  Returns:
    joints3d: [J, 3] world mm, NaN where < 2 confident views.
    errors: [V, J] |project(joints3d) - joints2d| raw px (NaN where joints3d is NaN), for every
      view, including those that left.
  """
  joints2d = np.asarray(joints2d, np.float64)
  undistorted = np.stack([camera_lib.undistort_points(camera, points)
                          for camera, points in zip(cameras, joints2d)])
  weights = np.where(np.asarray(scores) >= min_score, np.asarray(scores, np.float64), 0.0)
  projections = np.stack([camera.projection_matrix for camera in cameras])

  def solve(weights):
    joints3d = triangulation.triangulate_dlt_np(projections, undistorted, weights)
    joints3d[(weights > 0).sum(0) < 2] = np.nan
    reprojected = np.stack([camera.project(np.nan_to_num(joints3d))[0] for camera in cameras])
    errors = np.linalg.norm(reprojected - joints2d, axis=-1)
    errors[:, np.isnan(joints3d[:, 0])] = np.nan
    return joints3d, errors

  joints3d, errors = solve(weights)
  for _ in range(len(cameras) - 2):
    used = np.where(weights > 0, errors, -np.inf)  # [V, J]
    worst = np.argmax(used, axis=0)
    drop = ((weights > 0).sum(0) > 2) & (used.max(axis=0) > max_error_px)
    if not drop.any():
      break
    weights[worst[drop], np.flatnonzero(drop)] = 0.0
    joints3d, errors = solve(weights)
  return joints3d, errors


def reference_bone_lengths(joint_set) -> np.ndarray:
  """[J] reference length (mm) of each joint's bone to its parent, NaN where unknown.

  A bone between two joints that BlazePose marks at the points of h36m17's skeleton (pelvis /
  bodycenter, hips, knees, ankles, spine, thorax / neck, shoulders, elbows, wrists: see
  `blazepose.JOINT_SOURCES`) measures the length of the path between them in that skeleton,
  `mf_tf.data.skeleton.BONE_LENGTHS_MM` (real Human3.6M and Panoptic poses): a bone of h36m17
  itself, or the trunk pelvis-spine-thorax for coco19's bodycenter-neck. Bones to the nose, eyes,
  ears and head have no reference (derived points that differ from the mocap markers).
  """
  joint_set = joints_lib.get_joint_set(joint_set)
  reference = skeleton_lib.JOINT_SET
  lengths = np.full(joint_set.num_joints, np.nan)
  for joint, parent in enumerate(joint_set.parents):
    ends = [_REFERENCE_ALIASES.get(joint_set.names[j], joint_set.names[j]) for j in (joint, parent)]
    if parent < 0 or not all(name in _REFERENCE_POINTS for name in ends):
      continue
    paths = [_path_to_root(reference, reference.index(name)) for name in ends]
    shared = set(paths[0]) & set(paths[1])
    lengths[joint] = sum(skeleton_lib.BONE_LENGTHS_MM[j] for path in paths for j in path
                         if j not in shared)
  return lengths


def drop_implausible_joints(joints3d, joint_set, bone_ratio_range) -> np.ndarray:
  """Joints joined to the body by a bone of implausible length become NaN, with what hangs on them.

  The skeleton is walked from the thorax (coco19, totalcapture16: the neck) outwards: legs and
  arms are what the image edge and people in front take away, the shoulders are seen far more
  often. A joint whose bone to the joint it is reached from measures a length / reference
  (`reference_bone_lengths`) outside `bone_ratio_range` is dropped, and so is everything reached
  through a dropped joint. Bones without a reference, or with a NaN end (not triangulated), are
  not checked.

  Args:
    joints3d: [J, 3] world mm (NaN: not triangulated).
    joint_set: The joints' JointSet.
    bone_ratio_range: (low, high) accepted ratio to the reference length.

  Returns:
    [J, 3] copy with the dropped joints NaN.
  """
  joint_set = joints_lib.get_joint_set(joint_set)
  joints3d = np.array(joints3d, np.float64)
  reference = reference_bone_lengths(joint_set)
  low, high = bone_ratio_range
  neighbours = {joint: [] for joint in range(joint_set.num_joints)}
  for joint, parent in enumerate(joint_set.parents):
    if parent >= 0:  # The bone's reference is stored at its child end.
      neighbours[joint].append((parent, reference[joint]))
      neighbours[parent].append((joint, reference[joint]))
  names = [_REFERENCE_ALIASES.get(name, name) for name in joint_set.names]
  anchor = names.index("thorax") if "thorax" in names else joint_set.root
  dropped = np.zeros(joint_set.num_joints, bool)
  reached, queue = {anchor}, [anchor]
  while queue:
    joint = queue.pop(0)
    for other, length in neighbours[joint]:
      if other in reached:
        continue
      reached.add(other)
      queue.append(other)
      if dropped[joint]:
        dropped[other] = True
      elif np.isfinite(length) and not np.isnan(joints3d[[joint, other], 0]).any():
        ratio = np.linalg.norm(joints3d[other] - joints3d[joint]) / length
        dropped[other] = not low <= ratio <= high
  joints3d[dropped] = np.nan
  return joints3d


def _path_to_root(joint_set, joint: int) -> list[int]:
  """The joint and its ancestors, root excluded (the joints whose bones lead to the root)."""
  path = []
  while joint_set.parents[joint] >= 0:
    path.append(joint)
    joint = joint_set.parents[joint]
  return path


def reconstruct_instant(images, rig: Rig, model, joint_set, *, fusion: str = "epipolar",
                        line_width_px: float = epipolar_fusion.DEFAULT_LINE_WIDTH_PX,
                        line_value: float = epipolar_fusion.DEFAULT_LINE_VALUE,
                        max_cost_px: float = association.DEFAULT_MAX_COST_PX,
                        min_score: float = association.DEFAULT_MIN_SCORE,
                        max_error_px: float = DEFAULT_MAX_ERROR_PX,
                        bone_ratio_range: tuple[float, float] = DEFAULT_BONE_RATIO_RANGE,
                        estimates=None) -> dict:
  """People of one instant (the "detections" and "people" fields of the per-frame JSON).

  Args:
    images: Per view, [H, W, 3] RGB.
    rig: The views' cameras.
    model: A `blazepose.BlazePose` (unused when `estimates` is given).
    joint_set: JointSet.
    fusion: "none" or "epipolar".
    line_width_px, line_value: Calibrated line base of the fusion.
    max_cost_px, min_score: Association threshold and joint confidence threshold.
    max_error_px: Reprojection error that takes a view out of a joint (`triangulate_person`).
    bone_ratio_range: Accepted bone length / reference (`drop_implausible_joints`).
    estimates: Optional per view `model.estimate` results (to compare fusions on one run).

  Returns:
    {"detections": [V counts], "people": [per person dict with numpy arrays: views, joints2d
     before / after [Vp, J, 2], scores [Vp, J], joints3d [J, 3], errors [Vp, J]]}.
  """
  if fusion not in FUSIONS:
    raise ValueError(f"fusion {fusion!r}, expected one of {FUSIONS}")
  if estimates is None:
    estimates = [model.estimate(image, joint_set, camera=camera)
                 for image, camera in zip(images, rig.cameras)]
  people = association.associate(
      [np.stack([p["joints2d"] for p in view]) if view else np.zeros((0, joint_set.num_joints, 2))
       for view in estimates],
      [np.stack([p["scores"] for p in view]) if view else np.zeros((0, joint_set.num_joints))
       for view in estimates], rig, max_cost_px=max_cost_px, min_score=min_score,
      mirror=joint_set.mirror)
  results = []
  for person in people:
    views = sorted(person.members)
    chosen = [estimates[view][person.members[view]] for view in views]
    # Detections whose sides BlazePose swapped take their partner joints' heatmaps and scores.
    order = [joint_set.mirror_array if person.mirrored[view] else np.arange(joint_set.num_joints)
             for view in views]
    cameras = [rig.cameras[view] for view in views]
    heatmaps = np.stack([found["heatmaps"][..., joints] for found, joints in zip(chosen, order)])
    affines = np.stack([found["crop_affine"] for found in chosen])
    scores = np.stack([found["scores"][joints] for found, joints in zip(chosen, order)])
    before = decode_to_image(heatmaps, affines, cameras)
    fused = fuse_person(heatmaps, affines, cameras, fusion, line_width_px, line_value,
                        source_mask=scores >= min_score)
    after = before if fusion == "none" else decode_to_image(fused, affines, cameras)
    joints3d, errors = triangulate_person(after, scores, cameras, min_score, max_error_px)
    joints3d = drop_implausible_joints(joints3d, joint_set, bone_ratio_range)
    errors[:, np.isnan(joints3d[:, 0])] = np.nan
    results.append({"views": views, "mirrored": [person.mirrored[view] for view in views],
                    "joints2d_before": before, "joints2d_after": after,
                    "scores": scores, "joints3d": joints3d, "errors": errors})
  return {"detections": [len(view) for view in estimates], "people": results}


# ------------------------------------------------------------------------------------------------
# Tracking.


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
    max_distance_mm: Largest move of one person between two consecutive instants.

  Returns:
    tracks: [N] track id per person; next_track: the first id still unused.
  """
  centers = np.asarray(centers, np.float64).reshape(-1, 3)
  pairs = [(float(np.linalg.norm(center - position)), person, track)
           for track, position in previous.items() for person, center in enumerate(centers)]
  tracks: list[int | None] = [None] * len(centers)
  taken = set()
  for distance, person, track in sorted(pair for pair in pairs if np.isfinite(pair[0])):
    if distance >= max_distance_mm:
      break
    if tracks[person] is None and track not in taken:
      tracks[person] = track
      taken.add(track)
  for person, track in enumerate(tracks):
    if track is None:
      tracks[person], next_track = next_track, next_track + 1
  return tracks, next_track


# ------------------------------------------------------------------------------------------------
# Outputs.


def _nullable(array) -> list:
  """Nested lists with NaN -> None (JSON null), rounded to 0.01."""
  array = np.asarray(array, np.float64)
  if array.ndim == 0:
    return None if np.isnan(array) else round(float(array), 2)
  return [_nullable(item) for item in array]


def frame_record(key: str, index: int, rig: Rig, joint_set, fusion: str, paths, result,
                 tracks: Sequence[int] | None = None) -> dict:
  """The per-frame JSON object (schema in the module docstring); `tracks`: one per person
  (`assign_tracks`), None writes null."""
  names = rig.camera_names
  tracks = [None] * len(result["people"]) if tracks is None else list(tracks)
  people = []
  for person_id, (person, track) in enumerate(zip(result["people"], tracks)):
    cams = [names[view] for view in person["views"]]
    joints3d = [None if np.isnan(point[0]) else [round(float(v), 1) for v in point]
                for point in person["joints3d"]]
    people.append({
        "id": person_id, "track": None if track is None else int(track), "views": cams,
        "joints2d_before": dict(zip(cams, _nullable(person["joints2d_before"]))),
        "joints2d_after": dict(zip(cams, _nullable(person["joints2d_after"]))),
        "scores": dict(zip(cams, _nullable(person["scores"]))),
        "joints3d_mm": joints3d,
        "reprojection_error_px": dict(zip(cams, _nullable(person["errors"]))),
    })
  return {"instant": key, "index": index, "joint_set": joint_set.name,
          "joint_names": list(joint_set.names), "fusion": fusion, "cameras": list(names),
          "images": {camera: paths[camera] for camera in names},
          "detections": dict(zip(names, result["detections"])), "people": people}


def write_json(path: str, record) -> None:
  """Writes JSON atomically (temporary file, then rename)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  temporary = path + ".tmp"
  with open(temporary, "w") as stream:
    json.dump(record, stream, indent=1)
  os.replace(temporary, path)


def write_overlay(path: str, image, camera: camera_lib.Camera, view: int, people,
                  joint_set, labels: Sequence[int] | None = None) -> None:
  """One view with each person's fused joints (dots) and reprojected 3D skeleton (lines), in the
  colour of and marked with the person's label (its track; default: its index)."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel
  height, width = image.shape[:2]
  figure = plt.figure(figsize=(width / 200, height / 200), dpi=100)
  axes = figure.add_axes([0, 0, 1, 1])
  axes.imshow(image)
  axes.set_xlim(0, width)
  axes.set_ylim(height, 0)
  axes.axis("off")
  colors = plt.get_cmap("tab10")
  labels = range(len(people)) if labels is None else labels
  for label, person in zip(labels, people):
    color = colors(int(label) % 10)
    if view in person["views"]:
      points = person["joints2d_after"][person["views"].index(view)]
      axes.scatter(points[:, 0], points[:, 1], s=6, color=color, edgecolors="white",
                   linewidths=0.3, zorder=3)
    reprojected, depth = camera.project(np.nan_to_num(person["joints3d"]))
    valid = ~np.isnan(person["joints3d"][:, 0]) & (depth > 0)
    for parent, child in joint_set.limbs:
      if valid[parent] and valid[child]:
        axes.plot(reprojected[[parent, child], 0], reprojected[[parent, child], 1],
                  color=color, linewidth=1.2, zorder=2)
    inside = valid & np.all((reprojected >= 0) & (reprojected < [width, height]), axis=-1)
    if inside.any():
      top = reprojected[inside][np.argmin(reprojected[inside, 1])]
      axes.text(top[0], top[1] - 15, f"{label}", color=color, fontsize=7, ha="center")
  os.makedirs(os.path.dirname(path), exist_ok=True)
  figure.savefig(path, dpi=100)
  plt.close(figure)


# ------------------------------------------------------------------------------------------------
# The mode.


def run(config, workdir: str) -> None:
  """--mode=video: reads config.video (see configs/default.py) and writes the outputs above."""
  settings = config.video
  if settings.fusion not in FUSIONS:
    raise ValueError(f"config.video.fusion={settings.fusion!r}, expected one of {FUSIONS}")
  if int(settings.max_frames) < 0:
    raise ValueError(f"config.video.max_frames={settings.max_frames}, expected >= 0 (0: all)")
  joint_set = joints_lib.get_joint_set(settings.joint_set)
  cameras, keys, paths = list_instants(os.path.expanduser(settings.frames_dir))
  rig = load_rig(os.path.expanduser(settings.rig), cameras)
  if int(settings.max_frames):
    keys = keys[:int(settings.max_frames)]
  output_dir = settings.output_dir or os.path.join(workdir, "video")
  model = None  # Loaded after the first instant's frames passed their checks.
  logging.info("video: %d instants x %d cameras %s, fusion=%s -> %s", len(keys), len(cameras),
               cameras, settings.fusion, output_dir)
  progress = Progbar(len(keys), unit_name="instant")
  summary = []
  previous, next_track = {}, 0  # Track id -> centre (mm) of the previous instant's people.
  for index, key in enumerate(keys):
    images = []
    for camera in rig.cameras:
      image = blazepose.read_image(paths[key][camera.name])
      check_image(image, camera, paths[key][camera.name])
      images.append(image)
    model = model or blazepose.BlazePose()
    result = reconstruct_instant(
        images, rig, model, joint_set, fusion=settings.fusion,
        line_width_px=float(config.fusion.line_width_px),
        line_value=float(config.fusion.line_value),
        max_cost_px=float(settings.max_cost_px), min_score=float(settings.min_score),
        max_error_px=float(settings.max_error_px),
        bone_ratio_range=(float(settings.min_bone_ratio), float(settings.max_bone_ratio)))
    centers = [person_center(person["joints3d"], joint_set) for person in result["people"]]
    tracks, next_track = assign_tracks(previous, np.reshape(centers, (-1, 3)), next_track,
                                       float(settings.track_max_distance_mm))
    previous = {track: center for track, center in zip(tracks, centers)}
    write_json(os.path.join(output_dir, "frames", f"{key}.json"),
               frame_record(key, index, rig, joint_set, settings.fusion, paths[key], result,
                            tracks))
    if settings.overlays:
      for view, (camera, image) in enumerate(zip(rig.cameras, images)):
        write_overlay(os.path.join(output_dir, "overlays", f"{key}_{camera.name}.png"), image,
                      camera, view, result["people"], joint_set, labels=tracks)
    errors = [person["errors"] for person in result["people"]]
    finite = np.concatenate([e.ravel() for e in errors] + [np.zeros(0)])
    finite = finite[np.isfinite(finite)]
    median = float(np.median(finite)) if finite.size else None
    summary.append({"instant": key, "people": len(result["people"]), "tracks": tracks,
                    "median_reprojection_error_px": median})
    progress.update(index + 1, values=[("people", len(result["people"]))])
  write_json(os.path.join(output_dir, "summary.json"), summary)
