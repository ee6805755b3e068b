"""Kinematic h36m17 skeleton with joint-angle limits, calibrated on real 3D poses.

A pose is built by forward kinematics in a body frame (x = the body's right, y = forward,
z = up; right-handed, so right x forward = up, the convention measured on the real Human3.6M and
Panoptic poses in ../shared/data), then turned about the world up axis by a random yaw and placed
in the capture volume with the lower ankle at ankle height above the floor.

Bone lengths (`BONE_LENGTHS_MM`) are the calibrated constants below; `calibrate_bone_lengths`
recomputes them from the real files and a test checks that both agree.
"""

from __future__ import annotations

import glob
import json
import os

import numpy as np

from mf_tf.data import body as body_lib
from mf_tf.data import joints as joints_lib

JOINT_SET = joints_lib.H36M17

# Mean bone length per h36m17 joint (length of the bone from its parent; 0 for the root), in mm,
# left and right pooled. Obtained with `calibrate_bone_lengths("../shared/data")`:
#   - Human3.6M: the 4 frames of h36m/body3d_sample.npz (metres -> mm), every bone;
#   - CMU Panoptic: the 120 bodies (40 frames) of panoptic/*/hdPose3d_stage1_coco19/*.json (cm -> mm, joints
#     with confidence < 0 dropped), for the bones with a coco19 counterpart: pelvis-hip
#     (bodycenter-hip), thorax-shoulder (neck-shoulder), hip-knee, knee-ankle, shoulder-elbow,
#     elbow-wrist;
#   - a bone measured in both datasets takes the mean of the two dataset means (each dataset
#     weighs equally); trunk and head bones come from Human3.6M alone (the coco19 neck and nose
#     are different markers from the h36m thorax and neck/nose).
BONE_LENGTHS_MM = np.array([
    0.0,  # pelvis (root)
    118.9, 425.9, 423.0,  # rhip, rknee, rankle
    118.9, 425.9, 423.0,  # lhip, lknee, lankle
    236.3, 254.4, 116.5, 115.0,  # spine, thorax, nose, head
    154.8, 279.8, 242.8,  # lshoulder, lelbow, lwrist
    154.8, 279.8, 242.8,  # rshoulder, relbow, rwrist
])

# Ankle-joint height above the floor when standing, mm: the real Panoptic ankles of feet on the
# floor (y = 0 is the floor there) sit 65-130 mm above it.
ANKLE_HEIGHT_MM = 80.0

# Joint-angle limits in degrees, (low, high). Sign conventions (body frame x right, y forward,
# z up): pitch > 0 leans forward, roll > 0 bends towards the body's right, twist/yaw > 0 turns
# left (counter-clockwise seen from above). Limb flexion > 0 moves the limb forward, abduction > 0
# moves it away from the midline, internal rotation > 0 turns the elbow plane towards the belly.
# Ranges follow textbook active ranges of motion, narrowed where the capsule body would
# self-intersect; the sampled h36m offsets (nose 40 deg ahead of the neck line, shoulders 15 deg
# below the thorax, hips 5 deg below the pelvis) match the real Human3.6M frames.
ANGLE_LIMITS_DEG = {
    "torso_pitch": (-10.0, 35.0), "torso_roll": (-12.0, 12.0), "torso_twist": (-15.0, 15.0),
    "chest_pitch": (-10.0, 25.0), "chest_roll": (-10.0, 10.0), "chest_twist": (-30.0, 30.0),
    "neck_pitch": (-25.0, 35.0), "neck_roll": (-20.0, 20.0), "neck_yaw": (-60.0, 60.0),
    "head_pitch": (-15.0, 30.0),
    "shoulder_drop": (5.0, 25.0),
    "shoulder_flexion": (-40.0, 160.0), "shoulder_abduction": (-10.0, 140.0),
    "shoulder_rotation": (-40.0, 90.0), "elbow_flexion": (0.0, 145.0),
    "stance_hip_flexion": (-15.0, 30.0), "stance_knee_flexion": (0.0, 45.0),
    "free_hip_flexion": (-20.0, 100.0), "free_knee_flexion": (0.0, 120.0),
    "hip_abduction": (-10.0, 40.0), "hip_rotation": (-30.0, 30.0),
}
_NOSE_TILT_DEG = 40.0
_HIP_DROP_DEG = 5.0

# Body proportions: one overall scale per person and a small per-bone factor (shared left/right).
PERSON_SCALE_RANGE = (0.88, 1.12)
BONE_JITTER_STD = 0.03


def _load_panoptic_coco19(data_dir) -> np.ndarray:
  """[N, 19, 4] Panoptic bodies, x y z in mm and confidence."""
  pattern = os.path.join(str(data_dir), "panoptic", "*", "hdPose3d_stage1_coco19", "*.json")
  bodies = []
  for path in sorted(glob.glob(pattern)):
    with open(path) as f:
      for body in json.load(f)["bodies"]:
        bodies.append(np.asarray(body["joints19"], np.float64).reshape(19, 4))
  if not bodies:
    raise FileNotFoundError(f"no Panoptic coco19 poses match {pattern}")
  poses = np.stack(bodies)
  poses[..., :3] *= 10.0  # Panoptic stores centimetres.
  return poses


def _load_h36m17(data_dir) -> np.ndarray:
  """[N, 17, 3] Human3.6M poses in mm."""
  path = os.path.join(str(data_dir), "h36m", "body3d_sample.npz")
  with np.load(path, allow_pickle=False) as data:
    return data["S"][..., :3] * 1000.0  # The sample stores metres (bone lengths ~0.45 m).


def calibrate_bone_lengths(data_dir) -> np.ndarray:
  """Recomputes `BONE_LENGTHS_MM` from the real poses in `data_dir` (../shared/data).

  Args:
    data_dir: Folder holding panoptic/ and h36m/ as described in its SOURCES.md.

  Returns:
    [17] float64 mean bone length per h36m17 joint in mm (0 for the root), left/right pooled.
  """
  h36m = _load_h36m17(data_dir)
  panoptic = _load_panoptic_coco19(data_dir)
  coco = joints_lib.COCO19

  def h36m_mean(child_names):
    lengths = [np.linalg.norm(h36m[:, JOINT_SET.index(c)] - h36m[:, JOINT_SET.parents[
        JOINT_SET.index(c)]], axis=-1) for c in child_names]
    return float(np.mean(np.concatenate(lengths)))

  def panoptic_mean(bones):
    lengths = []
    for parent, child in bones:
      p, c = coco.index(parent), coco.index(child)
      valid = (panoptic[:, p, 3] >= 0) & (panoptic[:, c, 3] >= 0)
      lengths.append(np.linalg.norm(panoptic[valid, c, :3] - panoptic[valid, p, :3], axis=-1))
    return float(np.mean(np.concatenate(lengths)))

  lengths = np.zeros(JOINT_SET.num_joints)
  both = {  # h36m child (suffix) -> coco19 (parent, child suffix) bones.
      "hip": ("bodycenter", "hip"), "knee": ("hip", "knee"), "ankle": ("knee", "ankle"),
      "shoulder": ("neck", "shoulder"), "elbow": ("shoulder", "elbow"),
      "wrist": ("elbow", "wrist"),
  }
  for suffix, (coco_parent, coco_child) in both.items():
    sides = [("l", "r"), ("r", "l")]
    coco_bones = [((side + coco_parent) if coco_parent not in ("bodycenter", "neck")
                   else coco_parent, side + coco_child) for side, _ in sides]
    value = 0.5 * (h36m_mean(["l" + suffix, "r" + suffix]) + panoptic_mean(coco_bones))
    lengths[JOINT_SET.index("l" + suffix)] = lengths[JOINT_SET.index("r" + suffix)] = value
  for name in ("spine", "thorax", "nose", "head"):
    lengths[JOINT_SET.index(name)] = h36m_mean([name])
  return lengths


def _rotation(axis: int, angle: np.ndarray) -> np.ndarray:
  """[N, 3, 3] rotations by `angle` [N] radians about coordinate axis 0 (x), 1 (y) or 2 (z)."""
  c, s = np.cos(angle), np.sin(angle)
  one, zero = np.ones_like(angle), np.zeros_like(angle)
  if axis == 0:
    rows = [[one, zero, zero], [zero, c, -s], [zero, s, c]]
  elif axis == 1:
    rows = [[c, zero, s], [zero, one, zero], [-s, zero, c]]
  else:
    rows = [[c, -s, zero], [s, c, zero], [zero, zero, one]]
  return np.stack([np.stack(row, axis=-1) for row in rows], axis=-2)


def _chain(*rotations):
  out = rotations[0]
  for rotation in rotations[1:]:
    out = out @ rotation
  return out


def _apply(frame, vector):
  """frame [N, 3, 3] @ vector [3] or [N, 3] -> [N, 3]."""
  vector = np.broadcast_to(np.asarray(vector, np.float64), frame.shape[:1] + (3,))
  return np.einsum("nij,nj->ni", frame, vector)


def _uniform(rng, name, num, low=None, high=None):
  lo, hi = ANGLE_LIMITS_DEG[name] if low is None else (low, high)
  return np.radians(rng.uniform(lo, hi, size=num))


def sample_body_poses(rng: np.random.Generator, num_poses: int,
                      max_rounds: int = 50) -> np.ndarray:
  """Random poses in the body frame (x right, y forward, z up), pelvis at the origin.

  Angles are uniform within `ANGLE_LIMITS_DEG`; poses that push a joint or a bone into the
  capsule body (`body.penetration`, e.g. a hand inside the chest) are redrawn, so about a third
  of the raw draws are rejected.

  Args:
    rng: numpy Generator (the only source of randomness).
    num_poses: N.
    max_rounds: Redraw rounds before giving up on the few poses still intersecting.

  Returns:
    [N, 17, 3] float64 h36m17 joints in mm.
  """
  poses = _draw_body_poses(rng, int(num_poses))
  bad = np.flatnonzero(body_lib.penetration(poses))
  for _ in range(max_rounds):
    if bad.size == 0:
      break
    poses[bad] = _draw_body_poses(rng, bad.size)
    bad = bad[body_lib.penetration(poses[bad])]  # Only the redrawn poses can have changed.
  return poses


def _draw_body_poses(rng: np.random.Generator, n: int) -> np.ndarray:
  """Raw forward-kinematics draws, [n, 17, 3] body-frame mm (see `sample_body_poses`)."""
  index = JOINT_SET.index
  scale = rng.uniform(*PERSON_SCALE_RANGE, size=(n, 1))
  jitter = 1.0 + BONE_JITTER_STD * rng.standard_normal((n, JOINT_SET.num_joints))
  mirror = JOINT_SET.mirror_array
  jitter = np.where(np.arange(JOINT_SET.num_joints) < mirror, jitter, jitter[:, mirror])
  length = BONE_LENGTHS_MM[None, :] * scale * jitter  # [N, J]
  out = np.zeros((n, JOINT_SET.num_joints, 3))
  identity = np.broadcast_to(np.eye(3), (n, 3, 3))
  up = np.array([0.0, 0.0, 1.0])

  # Trunk: pelvis -> spine -> thorax, each segment leaning, bending and twisting.
  spine_frame = _chain(identity, _rotation(2, _uniform(rng, "torso_twist", n)),
                       _rotation(0, -_uniform(rng, "torso_pitch", n)),
                       _rotation(1, _uniform(rng, "torso_roll", n)))
  out[:, index("spine")] = _apply(spine_frame, up) * length[:, index("spine"), None]
  chest_frame = _chain(spine_frame, _rotation(2, _uniform(rng, "chest_twist", n)),
                       _rotation(0, -_uniform(rng, "chest_pitch", n)),
                       _rotation(1, _uniform(rng, "chest_roll", n)))
  thorax = out[:, index("spine")] + _apply(chest_frame, up) * length[:, index("thorax"), None]
  out[:, index("thorax")] = thorax
  neck_frame = _chain(chest_frame, _rotation(2, _uniform(rng, "neck_yaw", n)),
                      _rotation(0, -_uniform(rng, "neck_pitch", n)),
                      _rotation(1, _uniform(rng, "neck_roll", n)))
  tilt = np.radians(_NOSE_TILT_DEG)
  nose = thorax + _apply(neck_frame, [0.0, np.sin(tilt), np.cos(tilt)]) * length[
      :, index("nose"), None]
  out[:, index("nose")] = nose
  head_frame = neck_frame @ _rotation(0, -_uniform(rng, "head_pitch", n))
  out[:, index("head")] = nose + _apply(head_frame, up) * length[:, index("head"), None]

  # Legs hang from the pelvis; one stance leg stays near straight so the body stands on it.
  stance_is_right = rng.random(n) < 0.5
  hip_drop = np.radians(_HIP_DROP_DEG)
  for side, sign in (("r", 1.0), ("l", -1.0)):
    stance = stance_is_right if side == "r" else ~stance_is_right
    flexion = np.where(stance, _uniform(rng, "stance_hip_flexion", n),
                       _uniform(rng, "free_hip_flexion", n))
    knee = np.where(stance, _uniform(rng, "stance_knee_flexion", n),
                    _uniform(rng, "free_knee_flexion", n))
    hip = np.array([sign * np.cos(hip_drop), 0.0, -np.sin(hip_drop)])
    hip = hip[None] * length[:, index(side + "hip"), None]
    thigh_frame = _chain(identity, _rotation(1, -sign * _uniform(rng, "hip_abduction", n)),
                         _rotation(0, flexion),
                         _rotation(2, sign * _uniform(rng, "hip_rotation", n)))
    knee_point = hip + _apply(thigh_frame, -up) * length[:, index(side + "knee"), None]
    ankle = knee_point + _apply(thigh_frame @ _rotation(0, -knee), -up) * length[
        :, index(side + "ankle"), None]
    out[:, index(side + "hip")] = hip
    out[:, index(side + "knee")] = knee_point
    out[:, index(side + "ankle")] = ankle

  # Arms hang from the shoulders, which sit on the chest slightly below the thorax.
  for side, sign in (("r", 1.0), ("l", -1.0)):
    drop = _uniform(rng, "shoulder_drop", n)
    direction = np.stack([sign * np.cos(drop), np.zeros(n), -np.sin(drop)], axis=-1)
    shoulder = thorax + _apply(chest_frame, direction) * length[:, index(side + "shoulder"), None]
    arm_frame = _chain(chest_frame,
                       _rotation(1, -sign * _uniform(rng, "shoulder_abduction", n)),
                       _rotation(0, _uniform(rng, "shoulder_flexion", n)),
                       _rotation(2, sign * _uniform(rng, "shoulder_rotation", n)))
    elbow = shoulder + _apply(arm_frame, -up) * length[:, index(side + "elbow"), None]
    forearm = arm_frame @ _rotation(0, _uniform(rng, "elbow_flexion", n))
    wrist = elbow + _apply(forearm, -up) * length[:, index(side + "wrist"), None]
    out[:, index(side + "shoulder")] = shoulder
    out[:, index(side + "elbow")] = elbow
    out[:, index(side + "wrist")] = wrist
  return out


def _horizontal_basis(up: np.ndarray):
  """Two unit vectors spanning the plane orthogonal to the unit vector `up`."""
  helper = np.eye(3)[int(np.argmin(np.abs(up)))]
  first = np.cross(helper, up)
  first /= np.linalg.norm(first)
  return first, np.cross(up, first)


def sample_poses(rng: np.random.Generator, num_poses: int, center_mm, half_extent_mm,
                 up=(0.0, 0.0, 1.0), floor_mm: float | None = None) -> np.ndarray:
  """Random h36m17 poses standing in a capture volume.

  Joint angles are uniform within `ANGLE_LIMITS_DEG`, the yaw about `up` is uniform in
  [0, 2 pi), the pelvis is uniform over the volume's horizontal extent, and the lower ankle sits
  `ANKLE_HEIGHT_MM` above the floor (`floor_mm`, else the face of the box lowest along `up`).

  Args:
    rng: numpy Generator; equal seeds give equal poses.
    num_poses: N.
    center_mm: [3] centre of the capture volume (world mm).
    half_extent_mm: [3] half side lengths of the axis-aligned volume box (world mm).
    up: [3] world up direction (normalized here); Panoptic's world is y-down, (0, -1, 0).
    floor_mm: Floor height along `up` (floor points X satisfy dot(up, X) = floor_mm), or None.

  Returns:
    [N, 17, 3] float64 world joints in mm.
  """
  center = np.asarray(center_mm, np.float64).reshape(3)
  half = np.abs(np.asarray(half_extent_mm, np.float64).reshape(3))
  up = np.asarray(up, np.float64).reshape(3)
  if not np.linalg.norm(up) > 0:
    raise ValueError(f"up must be a non-zero 3-vector, got {up}")
  if int(num_poses) < 0:
    raise ValueError(f"num_poses must be non-negative, got {num_poses}")
  up = up / np.linalg.norm(up)
  body = sample_body_poses(rng, num_poses)
  yaw = rng.uniform(0.0, 2.0 * np.pi, size=int(num_poses))
  first, second = _horizontal_basis(up)
  forward = np.cos(yaw)[:, None] * first + np.sin(yaw)[:, None] * second  # [N, 3]
  right = np.cross(forward, up)
  basis = np.stack([right, forward, np.broadcast_to(up, forward.shape)], axis=-1)  # [N, 3, 3]
  world = np.einsum("nij,nkj->nki", basis, body)
  position = center + rng.uniform(-1.0, 1.0, size=(int(num_poses), 3)) * half
  floor = center @ up - half @ np.abs(up) if floor_mm is None else float(floor_mm)
  lowest = np.min(body[:, [JOINT_SET.index("rankle"), JOINT_SET.index("lankle")], 2], axis=1)
  height = floor + ANKLE_HEIGHT_MM - lowest
  position = position - (position @ up)[:, None] * up + height[:, None] * up
  return world + position[:, None, :]
