"""One instant of a recording: people associated across views, fused, triangulated.

Per instant: BlazePose's 2D poses in every view (`mf_tf.models.blazepose`, crops of the
undistorted image), cross-view association (`mf_tf.models.association`, which also finds the
views where BlazePose swapped the person's left and right; their joints are exchanged), then per
person seen by >= 2 views: fusion of the crop heatmaps along the exact per-frame crop geometry
(`fusion.epipolar_fusion` with `geometry.crops.crop_fundamental_matrix`, each view's confident
joints as sources; `fusion=none` skips it), sub-pixel argmax decoding
(`data.codec.HeatmapCodec.decode`), back to image pixels (fusion and decoding: a `CropFusion`,
in process by default, or a served rig's fuse_crops signature,
`mf_tf.serving.client.ServedCropFusion`), a confidence-weighted DLT over the
person's views (`geometry.triangulation`; weights: BlazePose's joint visibility, views below
`min_score` dropped, then views beyond `max_error_px` of the others dropped per joint:
`triangulate_person`), and joints attached by a bone of implausible length dropped
(`drop_implausible_joints`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from typing import Callable

import numpy as np
import tensorflow as tf

from mf_tf.data import codec as codec_lib
from mf_tf.data import joints as joints_lib
from mf_tf.data import skeleton as skeleton_lib
from mf_tf.fusion import epipolar_fusion
from mf_tf.fusion import readout
from mf_tf.geometry import camera as camera_lib
from mf_tf.geometry import crops
from mf_tf.geometry import triangulation
from mf_tf.geometry.rig import Rig
from mf_tf.geometry.rig import ordered_pairs
from mf_tf.models import association

FUSIONS = ("none", "epipolar")
# h36m17 joints that BlazePose marks at the same anatomical point (`reference_bone_lengths`), and
# the other sets' names of two of them.
_REFERENCE_POINTS = ("pelvis", "rhip", "rknee", "rankle", "lhip", "lknee", "lankle", "spine",
                     "thorax", "lshoulder", "lelbow", "lwrist", "rshoulder", "relbow", "rwrist")
_REFERENCE_ALIASES = {"bodycenter": "pelvis", "neck": "thorax"}


# One person's crop fusion and decoding: (heatmaps [Vp, C, C, J], affines [Vp, 3, 3] undistorted
# image px -> crop heatmap px, the Vp cameras of a rig, source_mask [Vp, J] bool: the heatmaps
# that may be fused into other views) -> [Vp, J, 2] fused joints, raw image px. `fuse_and_decode`
# runs it in process, `mf_tf.serving.client.ServedCropFusion` on a served rig.
CropFusion = Callable[[np.ndarray, np.ndarray, list, np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class InstantSettings:
  """How one instant's people are found and reconstructed (config.video's values, measured in
  BUILD.md; `mf_tf.modes.video.session_settings` builds them).

  Attributes:
    fusion: "none" or "epipolar".
    line_width_px, line_value: Calibrated line base of the fusion.
    max_cost_px: Association threshold (`association.associate`).
    min_score: Joint visibility below it: not associated, not fused from, not triangulated.
    max_error_px: Reprojection error that takes a view out of a joint (`triangulate_person`).
    bone_ratio_range: Accepted bone length / reference (`drop_implausible_joints`).
    fuse: The `CropFusion` of fusion="epipolar"; None: `fuse_and_decode` in process with
      line_width_px and line_value (a served one, `mf_tf.serving.client.ServedCropFusion`,
      uses the served rig's).
  """

  fusion: str
  line_width_px: float
  line_value: float
  max_cost_px: float
  min_score: float
  max_error_px: float
  bone_ratio_range: tuple[float, float]
  fuse: CropFusion | None = None

  def __post_init__(self):
    if self.fusion not in FUSIONS:
      raise ValueError(f"fusion {self.fusion!r}, expected one of {FUSIONS}")
    if self.fuse is not None and (self.fusion == "none" or not callable(self.fuse)):
      raise ValueError(f"fuse {self.fuse!r} with fusion {self.fusion!r}: expected a callable "
                       "CropFusion with fusion 'epipolar'")
    low, high = self.bone_ratio_range
    if not 0 <= low < high:
      raise ValueError(f"bone_ratio_range {self.bone_ratio_range}, expected 0 <= low < high")
    if not 0 <= self.min_score <= 1:
      raise ValueError(f"min_score {self.min_score}, expected a probability in [0, 1]")
    if self.max_cost_px <= 0 or self.max_error_px <= 0:
      raise ValueError(f"max_cost_px {self.max_cost_px} and max_error_px {self.max_error_px}: "
                       "expected positive pixel distances")



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


@functools.lru_cache(maxsize=None)
def _decoder(heatmap_size: int):
  """The codec's decode as one compiled graph per heatmap size (eager op by op it costs 5 ms a
  person; the graph 0.5 ms)."""
  return tf.function(functools.partial(readout.decode_crops,
                                       codec=codec_lib.HeatmapCodec(heatmap_size)),
                     reduce_retracing=True)


def decode_to_image(heatmaps, affines, cameras) -> np.ndarray:
  """[V, H, W, J] crop heatmaps -> [V, J, 2] RAW image px (sub-pixel argmax, then A^-1, distort)."""
  heatmaps = np.asarray(heatmaps, np.float32)
  coords, _ = _decoder(int(heatmaps.shape[1]))(tf.constant(heatmaps))
  undistorted = crops.apply_affine(np.linalg.inv(np.asarray(affines, np.float64)),
                                   coords.numpy().astype(np.float64))
  return np.stack([camera_lib.distort_points(camera, points)
                   for camera, points in zip(cameras, undistorted)])


def fuse_and_decode(heatmaps, affines, cameras, source_mask=None, *,
                    line_width_px: float = epipolar_fusion.DEFAULT_LINE_WIDTH_PX,
                    line_value: float = epipolar_fusion.DEFAULT_LINE_VALUE) -> np.ndarray:
  """The in-process `CropFusion`: `fuse_person` (epipolar) then `decode_to_image`.

  Args:
    heatmaps: [V, 64, 64, J] crop heatmaps of one person's views.
    affines: [V, 3, 3] undistorted image px -> heatmap px of each crop.
    cameras: The V cameras.
    source_mask: Optional [V, J] bool, see `fuse_person`.
    line_width_px, line_value: The calibrated line base.

  Returns:
    [V, J, 2] fused joints, raw image px.
  """
  fused = fuse_person(heatmaps, affines, cameras, "epipolar", line_width_px, line_value,
                      source_mask=source_mask)
  return decode_to_image(fused, affines, cameras)


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




def reconstruct_people(estimates, rig: Rig, joint_set, settings: InstantSettings) -> list[dict]:
  """People of one instant from every view's 2D poses.

  Args:
    estimates: Per view, a list of `BlazePose.estimate_boxes` results (joints2d, scores,
      heatmaps, crop_affine).
    rig: The views' cameras.
    joint_set: JointSet.
    settings: InstantSettings.

  Returns:
    Per person seen by >= 2 views (more views first), `reconstruct_person`'s dict plus
    "members": {view: index of its estimate in that view}.
  """
  joint_set = joints_lib.get_joint_set(joint_set)
  if len(estimates) != rig.num_views:
    raise ValueError(f"got poses for {len(estimates)} views, expected one list per camera of "
                     f"rig {rig.name!r} ({rig.num_views})")
  people = association.associate(
      [np.stack([p["joints2d"] for p in view]) if view else np.zeros((0, joint_set.num_joints, 2))
       for view in estimates],
      [np.stack([p["scores"] for p in view]) if view else np.zeros((0, joint_set.num_joints))
       for view in estimates], rig, max_cost_px=settings.max_cost_px,
      min_score=settings.min_score, mirror=joint_set.mirror)
  results = []
  for person in people:
    views = sorted(person.members)
    chosen = [estimates[view][person.members[view]] for view in views]
    result = reconstruct_person(chosen, [person.mirrored[view] for view in views],
                                [rig.cameras[view] for view in views], joint_set, settings)
    result["views"] = views
    result["members"] = dict(person.members)
    results.append(result)
  return results


def reconstruct_person(poses, mirrored, cameras, joint_set,
                       settings: InstantSettings, timer=None) -> dict:
  """One person from its 2D poses in >= 2 views: fusion, decoding, robust DLT, bone check.

  Args:
    poses: Per view, one `BlazePose.estimate_boxes` result of this person.
    mirrored: Per view, True where that pose's left and right must be exchanged.
    cameras: The views' cameras.
    joint_set: JointSet.
    settings: InstantSettings.
    timer: Optional `StageTimer`-like object whose `stage(name)` context times "fusion" and
      "triangulation".

  Returns:
    {"mirrored": [Vp], "joints2d_before" / "joints2d_after": [Vp, J, 2] raw px, "scores":
     [Vp, J], "joints3d": [J, 3] world mm (NaN: < 2 confident views or an implausible bone),
     "errors": [Vp, J] reprojection px (NaN where joints3d is)}.
  """
  joint_set = joints_lib.get_joint_set(joint_set)
  # Poses whose sides BlazePose swapped take their partner joints' heatmaps and scores.
  order = [joint_set.mirror_array if flip else np.arange(joint_set.num_joints)
           for flip in mirrored]
  heatmaps = np.stack([found["heatmaps"][..., joints] for found, joints in zip(poses, order)])
  affines = np.stack([found["crop_affine"] for found in poses])
  scores = np.stack([found["scores"][joints] for found, joints in zip(poses, order)])
  stage = timer.stage if timer is not None else lambda name: contextlib.nullcontext()
  with stage("fusion"):
    before = decode_to_image(heatmaps, affines, cameras)
    if settings.fusion == "none":
      after = before
    else:
      fuse = settings.fuse or functools.partial(
          fuse_and_decode, line_width_px=settings.line_width_px, line_value=settings.line_value)
      after = np.asarray(fuse(heatmaps, affines, cameras, scores >= settings.min_score),
                         np.float64)
  with stage("triangulation"):
    joints3d, errors = triangulate_person(after, scores, cameras, settings.min_score,
                                          settings.max_error_px)
    joints3d = drop_implausible_joints(joints3d, joint_set, settings.bone_ratio_range)
    errors[:, np.isnan(joints3d[:, 0])] = np.nan
  return {"mirrored": list(mirrored), "joints2d_before": before, "joints2d_after": after,
          "scores": scores, "joints3d": joints3d, "errors": errors}
