"""Volumetric body of capsules on the h36m17 skeleton, and occlusion computed from it.

Each capsule is the set of points within `radius` mm of the segment between two joints. Limbs,
the neck and the head are one capsule per bone; the torso volume is a central column
(pelvis-spine-thorax) flanked by two hip-to-shoulder capsules, plus the hip and shoulder girdles.

A joint is visible in a camera when it projects inside the image, lies in front of the camera,
and the segment from the camera centre to the joint meets no capsule other than those attached to
the joint (its own bones and the torso flanks it anchors). Segment-to-capsule tests are exact
closest-point distances between two segments (Ericson, Real-Time Collision Detection, 5.1.9),
vectorized over frames, joints and capsules.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mf_tf.data import joints as joints_lib

_H36M = joints_lib.H36M17

# (name, first end, second end, radius mm); an end is a joint name or {joint: weight} (a point
# between joints). Radii are typical adult half-widths (thigh ~75 mm, upper arm ~45 mm, ...).
# The torso flanks end part-way between thorax and shoulder so that a hanging arm runs beside
# the torso, not through it.
_FLANK_TOP = {"thorax": 0.4}
_CAPSULES = (
    ("pelvis", "pelvis", "spine", 95.0),
    ("chest", "spine", "thorax", 95.0),
    ("rflank", "rhip", {**_FLANK_TOP, "rshoulder": 0.6}, 70.0),
    ("lflank", "lhip", {**_FLANK_TOP, "lshoulder": 0.6}, 70.0),
    ("rgirdle", "pelvis", "rhip", 80.0),
    ("lgirdle", "pelvis", "lhip", 80.0),
    ("rclavicle", "thorax", "rshoulder", 50.0),
    ("lclavicle", "thorax", "lshoulder", 50.0),
    ("neck", "thorax", "nose", 50.0),
    ("head", "nose", "head", 85.0),
    ("rthigh", "rhip", "rknee", 72.0),
    ("rshank", "rknee", "rankle", 52.0),
    ("lthigh", "lhip", "lknee", 72.0),
    ("lshank", "lknee", "lankle", 52.0),
    ("rupperarm", "rshoulder", "relbow", 45.0),
    ("rforearm", "relbow", "rwrist", 38.0),
    ("lupperarm", "lshoulder", "lelbow", 45.0),
    ("lforearm", "lelbow", "lwrist", 38.0),
)


def _end_weights(end, joint_set):
  weights = np.zeros(joint_set.num_joints)
  items = {end: 1.0} if isinstance(end, str) else dict(end)
  for name, weight in items.items():
    weights[joint_set.index(name)] = weight
  if isinstance(end, dict) and abs(weights.sum() - 1.0) > 1e-9:
    raise ValueError(f"capsule end weights {end} must sum to 1")
  return weights


@dataclasses.dataclass(frozen=True, eq=False)
class BodyModel:
  """Capsules hung on the joints of a joint set.

  Attributes:
    joint_set: Name of the joint set the capsule ends are built from.
    names: Capsule names.
    end_weights: [C, 2, J] each capsule end as a convex combination of joints.
    radii: [C] radii in mm.
  """

  joint_set: str
  names: tuple[str, ...]
  end_weights: np.ndarray
  radii: np.ndarray

  def __post_init__(self):
    weights = np.asarray(self.end_weights, np.float64)
    radii = np.asarray(self.radii, np.float64)
    count = len(self.names)
    num_joints = joints_lib.get_joint_set(self.joint_set).num_joints
    if weights.shape != (count, 2, num_joints) or radii.shape != (count,):
      raise ValueError(
          f"body model: end_weights {weights.shape} and radii {radii.shape}, expected "
          f"({count}, 2, {num_joints}) and ({count},)")
    weights.setflags(write=False)
    radii.setflags(write=False)
    object.__setattr__(self, "end_weights", weights)
    object.__setattr__(self, "radii", radii)

  @property
  def num_capsules(self) -> int:
    return len(self.names)

  @property
  def radius_array(self) -> np.ndarray:
    return self.radii

  def attached(self) -> np.ndarray:
    """[J, C] bool: capsule c is built on joint j (it never occludes j)."""
    return np.any(self.end_weights > 0, axis=1).T

  def segments(self, joints3d) -> tuple[np.ndarray, np.ndarray]:
    """Capsule axes of posed bodies: joints3d [..., J, 3] -> (starts, ends) [..., C, 3]."""
    joints3d = np.asarray(joints3d, np.float64)
    ends = np.einsum("cej,...jd->...ced", self.end_weights, joints3d)
    return ends[..., 0, :], ends[..., 1, :]


def _build_body(joint_set, capsules) -> BodyModel:
  weights = np.stack([np.stack([_end_weights(a, joint_set), _end_weights(b, joint_set)])
                      for _, a, b, _ in capsules])
  return BodyModel(joint_set.name, tuple(c[0] for c in capsules), weights,
                   np.asarray([c[3] for c in capsules]))


H36M_BODY = _build_body(_H36M, _CAPSULES)


def penetration(joints3d, body: BodyModel = H36M_BODY) -> np.ndarray:
  """Whether a pose pushes a joint or a bone's midpoint into a capsule it is not part of.

  Args:
    joints3d: [N, J, 3] joints in mm.
    body: The capsule model.

  Returns:
    [N] bool, True for self-intersecting poses.
  """
  joints3d = np.asarray(joints3d, np.float64)
  joint_set = joints_lib.get_joint_set(body.joint_set)
  limbs = np.asarray(joint_set.limbs, np.int32)
  midpoints = 0.5 * (joints3d[:, limbs[:, 0]] + joints3d[:, limbs[:, 1]])
  points = np.concatenate([joints3d, midpoints], axis=1)  # [N, J + L, 3]
  attached = body.attached()
  exempt = np.concatenate([attached, attached[limbs[:, 0]] | attached[limbs[:, 1]]], axis=0)
  starts, ends = body.segments(joints3d)
  distance = point_segment_distance(points[:, :, None], starts[:, None], ends[:, None])
  return np.any((distance < body.radii) & ~exempt[None], axis=(1, 2))


def point_segment_distance(point, start, end) -> np.ndarray:
  """Distance from points [..., 3] to segments [start, end] [..., 3] (broadcast) -> [...]."""
  axis = end - start
  offset = point - start
  t = np.clip(np.sum(offset * axis, axis=-1) / np.maximum(np.sum(axis * axis, axis=-1), 1e-12),
              0.0, 1.0)
  gap = offset - axis * t[..., None]
  return np.sqrt(np.sum(gap * gap, axis=-1))


def segment_distance(p1, q1, p2, q2) -> np.ndarray:
  """Smallest distance between segments [p1, q1] and [p2, q2] (broadcast over leading dims).

  Args:
    p1, q1: [..., 3] first segment endpoints.
    p2, q2: [..., 3] second segment endpoints.

  Returns:
    [...] distances (same units as the inputs).
  """
  d1, d2, r = q1 - p1, q2 - p2, p1 - p2
  a = np.sum(d1 * d1, axis=-1)
  e = np.sum(d2 * d2, axis=-1)
  f = np.sum(d2 * r, axis=-1)
  c = np.sum(d1 * r, axis=-1)
  b = np.sum(d1 * d2, axis=-1)
  tiny = 1e-12
  safe_a = np.maximum(a, tiny)
  safe_e = np.maximum(e, tiny)
  denom = a * e - b * b
  s = np.where(denom > tiny * np.maximum(a * e, 1.0),
               np.clip((b * f - c * e) / np.maximum(denom, tiny), 0.0, 1.0), 0.0)
  t = (b * s + f) / safe_e
  s = np.where(t < 0.0, np.clip(-c / safe_a, 0.0, 1.0),
               np.where(t > 1.0, np.clip((b - c) / safe_a, 0.0, 1.0), s))
  t = np.clip(t, 0.0, 1.0)
  gap = p1 + d1 * s[..., None] - (p2 + d2 * t[..., None])
  return np.sqrt(np.sum(gap * gap, axis=-1))


def occluded(camera_center, joints3d, body: BodyModel = H36M_BODY) -> np.ndarray:
  """Self-occlusion by the body's capsules, ignoring the image bounds.

  Args:
    camera_center: [3] camera centre in world mm.
    joints3d: [N, J, 3] joints in world mm, in `body.joint_set` order.
    body: The capsule model.

  Returns:
    [N, J] bool, True where a non-attached capsule lies between the camera and the joint.
  """
  joints3d = np.asarray(joints3d, np.float64)
  center = np.asarray(camera_center, np.float64).reshape(1, 1, 1, 3)
  starts, ends = body.segments(joints3d)  # [N, C, 3]
  distance = segment_distance(
      np.broadcast_to(center, joints3d.shape[:2] + (1, 3)), joints3d[:, :, None, :],
      starts[:, None, :, :], ends[:, None, :, :])  # [N, J, C]
  hit = (distance < body.radius_array) & ~body.attached()[None]
  return np.any(hit, axis=-1)


def visibility(camera, joints3d, body: BodyModel = H36M_BODY) -> np.ndarray:
  """Whether each joint is seen by `camera`: in front, inside the image and not occluded.

  Args:
    camera: mf_tf.geometry.camera.Camera.
    joints3d: [N, J, 3] joints in world mm, in `body.joint_set` order.
    body: The capsule model.

  Returns:
    [N, J] bool.
  """
  joints3d = np.asarray(joints3d, np.float64)
  expected = joints_lib.get_joint_set(body.joint_set).num_joints
  if joints3d.ndim != 3 or joints3d.shape[1:] != (expected, 3):
    raise ValueError(
        f"joints3d has shape {joints3d.shape}, expected [N, {expected}, 3] ({body.joint_set})")
  uv, depth = camera.project(joints3d)
  inside = ((uv[..., 0] >= -0.5) & (uv[..., 0] < camera.width - 0.5)
            & (uv[..., 1] >= -0.5) & (uv[..., 1] < camera.height - 0.5))
  return (depth > 0) & inside & ~occluded(camera.center, joints3d, body)
