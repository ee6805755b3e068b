"""Named joint sets (h36m17, coco19, totalcapture16) and the explicit maps between them.

A `JointSet` is an immutable value: joint names in dataset order, a parent per joint forming one
tree (-1 for the root), and a left/right mirror partner per joint (itself for centre joints). The
mirror is what the simulated detector uses to place its most common distractor and what
augmentation uses to flip a pose.

Correspondences between sets are spelled out in `_SAME_JOINT` (joints that are the same anatomical
point in both sets, up to each dataset's marker conventions) and `_DERIVED_JOINT` (a target joint
defined as the mean of source joints). `index_map` uses only the former; `convert_joints` uses both.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class JointSet:
  """An ordered, named set of joints forming a kinematic tree.

  Attributes:
    name: Set name, e.g. "h36m17".
    names: Joint names in dataset order.
    parents: Parent index per joint, -1 for the (single) root.
    mirror: Index of the left/right partner per joint, the joint itself for centre joints.
  """

  name: str
  names: tuple[str, ...]
  parents: tuple[int, ...]
  mirror: tuple[int, ...]

  def __post_init__(self):
    object.__setattr__(self, "names", tuple(self.names))
    object.__setattr__(self, "parents", tuple(int(p) for p in self.parents))
    object.__setattr__(self, "mirror", tuple(int(m) for m in self.mirror))
    count = len(self.names)
    if len(set(self.names)) != count:
      raise ValueError(f"joint set {self.name!r} has duplicate joint names: {self.names}")
    if len(self.parents) != count or len(self.mirror) != count:
      raise ValueError(
          f"joint set {self.name!r}: {count} names but {len(self.parents)} parents and "
          f"{len(self.mirror)} mirror entries, expected equal lengths")
    roots = [j for j, p in enumerate(self.parents) if p == -1]
    if len(roots) != 1:
      raise ValueError(f"joint set {self.name!r} has roots {roots}, expected exactly one")
    for joint in range(count):  # Every joint must reach the root without a cycle.
      seen, current = set(), joint
      while current != -1:
        if current in seen or not -1 <= self.parents[current] < count:
          raise ValueError(f"joint set {self.name!r}: parents {self.parents} do not form a tree")
        seen.add(current)
        current = self.parents[current]
    for joint, partner in enumerate(self.mirror):
      if not 0 <= partner < count or self.mirror[partner] != joint:
        raise ValueError(
            f"joint set {self.name!r}: mirror {self.mirror} is not a symmetric involution "
            f"(joint {joint} -> {partner})")

  @property
  def num_joints(self) -> int:
    return len(self.names)

  @property
  def root(self) -> int:
    return self.parents.index(-1)

  @property
  def limbs(self) -> tuple[tuple[int, int], ...]:
    """(parent, child) index pairs, one per non-root joint, in child order."""
    return tuple((p, j) for j, p in enumerate(self.parents) if p != -1)

  def index(self, name: str) -> int:
    try:
      return self.names.index(name)
    except ValueError:
      raise ValueError(
          f"joint {name!r} is not in joint set {self.name!r}; expected one of {self.names}"
      ) from None

  @property
  def mirror_array(self) -> np.ndarray:
    """[J] int32 mirror partner indices."""
    return np.asarray(self.mirror, np.int32)

  @property
  def parent_array(self) -> np.ndarray:
    """[J] int32 parent indices (-1 for the root)."""
    return np.asarray(self.parents, np.int32)


def _make(name, spec):
  """Builds a JointSet from [(joint, parent_name or None, mirror_name or None)]."""
  names = tuple(joint for joint, _, _ in spec)
  parents = tuple(-1 if parent is None else names.index(parent) for _, parent, _ in spec)
  mirror = tuple(names.index(partner or joint) for joint, _, partner in spec)
  return JointSet(name, names, parents, mirror)


_LEG = ("hip", "knee", "ankle")
_ARM = ("shoulder", "elbow", "wrist")


def _limb(side: str, parts: tuple[str, ...], attached_to: str) -> list:
  """The spec entries of one limb: `side` + each part, in chain order from `attached_to`, each
  mirrored by the same part of the other side."""
  other = "r" if side == "l" else "l"
  parents = (attached_to,) + tuple(side + part for part in parts[:-1])
  return [(side + part, parent, other + part) for part, parent in zip(parts, parents)]


# Human3.6M 17-joint order used by CrossView (Qiu et al. 2019) and mmpose's h36m body3d.
# "nose" is the H36M "neck/nose" marker (between chin and nose), "head" the top of the head.
H36M17 = _make("h36m17", [
    ("pelvis", None, None),
    *_limb("r", _LEG, "pelvis"),
    *_limb("l", _LEG, "pelvis"),
    ("spine", "pelvis", None),
    ("thorax", "spine", None),
    ("nose", "thorax", None),
    ("head", "nose", None),
    *_limb("l", _ARM, "thorax"),
    *_limb("r", _ARM, "thorax"),
])

# CMU Panoptic hdPose3d_stage1_coco19 order; the tree is rooted at the body centre (pelvis).
COCO19 = _make("coco19", [
    ("neck", "bodycenter", None),
    ("nose", "neck", None),
    ("bodycenter", None, None),
    *_limb("l", _ARM, "neck"),
    *_limb("l", _LEG, "bodycenter"),
    *_limb("r", _ARM, "neck"),
    *_limb("r", _LEG, "bodycenter"),
    ("leye", "nose", "reye"),
    ("lear", "leye", "rear"),
    ("reye", "nose", "leye"),
    ("rear", "reye", "lear"),
])

# Total Capture 16-joint order as used by CrossView: the H36M order without the thorax/nose
# distinction ("neck" sits at the base of the neck, "head" at the top of the head).
TOTALCAPTURE16 = _make("totalcapture16", [
    ("pelvis", None, None),
    *_limb("r", _LEG, "pelvis"),
    *_limb("l", _LEG, "pelvis"),
    ("spine", "pelvis", None),
    ("neck", "spine", None),
    ("head", "neck", None),
    *_limb("l", _ARM, "neck"),
    *_limb("r", _ARM, "neck"),
])

JOINT_SETS: dict[str, JointSet] = {s.name: s for s in (H36M17, COCO19, TOTALCAPTURE16)}

_SIDED = tuple(side + part for side in "lr" for part in _LEG + _ARM)

# (source set, target set) -> {target joint: source joint} for joints that are the same point.
#   h36m17 <-> coco19: sided limb joints and pelvis <-> bodycenter (Panoptic's body centre is the
#     pelvis centre). h36m "thorax" vs coco "neck" are both the base of the neck but marked
#     differently (the h36m thorax sits ~5 cm lower), and h36m "nose" is a neck/chin marker, not
#     the nose: neither is an explicit correspondence.
#   h36m17 <-> totalcapture16: same skeleton; h36m "thorax" is totalcapture "neck".
#   coco19 <-> totalcapture16: sided limb joints and pelvis <-> bodycenter.
_SAME_JOINT: dict[tuple[str, str], dict[str, str]] = {
    ("h36m17", "coco19"): {**{j: j for j in _SIDED}, "bodycenter": "pelvis"},
    ("h36m17", "totalcapture16"): {
        **{j: j for j in _SIDED}, "pelvis": "pelvis", "spine": "spine", "neck": "thorax",
        "head": "head"},
    ("coco19", "totalcapture16"): {**{j: j for j in _SIDED}, "pelvis": "bodycenter"},
}
for (_source, _target), _mapping in list(_SAME_JOINT.items()):
  _SAME_JOINT[(_target, _source)] = {s: t for t, s in _mapping.items()}

# (source set, target set) -> {target joint: source joints averaged}, used by `convert_joints`
# for target joints with no explicit counterpart. Approximations, documented per entry:
#   coco19 -> h36m17: spine = mean(bodycenter, neck) (h36m spine marker lies about half way);
#     thorax = coco neck; nose (h36m neck/chin marker) = mean(neck, nose); head = mean of the
#     ears (centre of the skull, the closest coco19 point to h36m's head-top marker).
#   coco19 -> totalcapture16: the same approximations for spine, neck and head.
#   h36m17 -> coco19: neck = thorax; nose = h36m head marker averaged with its nose marker.
#     Eyes and ears have no h36m counterpart and stay undefined (NaN).
_DERIVED_JOINT: dict[tuple[str, str], dict[str, tuple[str, ...]]] = {
    ("coco19", "h36m17"): {
        "spine": ("bodycenter", "neck"), "thorax": ("neck",), "nose": ("neck", "nose"),
        "head": ("lear", "rear")},
    ("coco19", "totalcapture16"): {
        "spine": ("bodycenter", "neck"), "neck": ("neck",), "head": ("lear", "rear")},
    ("h36m17", "coco19"): {"neck": ("thorax",), "nose": ("nose", "head")},
    ("totalcapture16", "coco19"): {"neck": ("neck",)},
    ("totalcapture16", "h36m17"): {"nose": ("neck", "head")},
}


def get_joint_set(name) -> JointSet:
  """Looks up a joint set by name (a JointSet is passed through)."""
  if isinstance(name, JointSet):
    return name
  if name not in JOINT_SETS:
    raise ValueError(f"unknown joint set {name!r}; expected one of {sorted(JOINT_SETS)}")
  return JOINT_SETS[name]


def index_map(source_set, target_set) -> tuple[np.ndarray, np.ndarray]:
  """Indices of the joints with an explicit one-to-one correspondence between two sets.

  `target[..., target_indices, :] = source[..., source_indices, :]` copies every corresponding
  joint. The correspondences are documented in `_SAME_JOINT` above.

  Args:
    source_set: JointSet or name.
    target_set: JointSet or name.

  Returns:
    (source_indices, target_indices): int32 arrays of equal length, sorted by target index.
  """
  source, target = get_joint_set(source_set), get_joint_set(target_set)
  if source.name == target.name:
    indices = np.arange(source.num_joints, dtype=np.int32)
    return indices, indices.copy()
  mapping = _SAME_JOINT.get((source.name, target.name), {})
  pairs = sorted((target.index(t), source.index(s)) for t, s in mapping.items())
  target_indices = np.asarray([t for t, _ in pairs], np.int32)
  source_indices = np.asarray([s for _, s in pairs], np.int32)
  return source_indices, target_indices


def convert_joints(points, source_set, target_set) -> np.ndarray:
  """Converts joint positions between sets, deriving joints without a direct counterpart.

  Args:
    points: [..., J_source, D] joint positions (any D, e.g. 2 or 3; any units).
    source_set: JointSet or name.
    target_set: JointSet or name.

  Returns:
    [..., J_target, D] float64; joints with neither a direct nor a derived definition are NaN.
  """
  source, target = get_joint_set(source_set), get_joint_set(target_set)
  points = np.asarray(points, np.float64)
  if points.ndim < 2 or points.shape[-2] != source.num_joints:
    raise ValueError(
        f"points have shape {points.shape}, expected [..., {source.num_joints}, D] for "
        f"joint set {source.name!r}")
  out = np.full(points.shape[:-2] + (target.num_joints, points.shape[-1]), np.nan)
  source_indices, target_indices = index_map(source, target)
  out[..., target_indices, :] = points[..., source_indices, :]
  for joint, parts in _DERIVED_JOINT.get((source.name, target.name), {}).items():
    indices = [source.index(p) for p in parts]
    out[..., target.index(joint), :] = points[..., indices, :].mean(axis=-2)
  return out
