"""A rig: an ordered list of cameras with a name, and its ordered camera pairs.

Pair order (used by every fusion tensor in mf_tf): pairs are grouped by target view, and within a
target by increasing source view, skipping source == target:

    for target in range(V): for source in range(V): if source != target: (source, target)

so pair index p = target * (V - 1) + (source if source < target else source - 1), and the V - 1
pairs feeding target v are the contiguous slice [v * (V - 1), (v + 1) * (V - 1)).
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Sequence

import numpy as np

from mf_tf import files
from mf_tf.geometry.camera import Camera


def ordered_pairs(num_views: int) -> np.ndarray:
  """[V * (V - 1), 2] int32 array of (source_view, target_view), in the documented order."""
  if num_views < 2:
    raise ValueError(f"a rig needs at least 2 views for fusion, got num_views={num_views}")
  pairs = [(source, target) for target in range(num_views) for source in range(num_views)
           if source != target]
  return np.asarray(pairs, dtype=np.int32)


def pair_index(source_view: int, target_view: int, num_views: int) -> int:
  """Index of the ordered pair (source_view -> target_view) in `ordered_pairs(num_views)`."""
  if source_view == target_view:
    raise ValueError(f"source_view and target_view must differ, both are {source_view}")
  offset = source_view if source_view < target_view else source_view - 1
  return target_view * (num_views - 1) + offset


@dataclasses.dataclass(frozen=True, eq=False)
class Rig:
  """An ordered, named list of cameras.

  Attributes:
    name: Rig name: a safe single path component (`mf_tf.files.check_name`: 1-100 letters,
      digits, '.', '_' or '-', starting with a letter or digit), since it names the rig's
      dataset, checkpoint, results and served model folders.
    cameras: The cameras, in view order.
    up: Optional [3] unit vector, the world's "up" direction (Panoptic: [0, -1, 0], Human3.6M,
      Shelf, Campus: [0, 0, 1]); None when unknown (see `volume.up_vector` for an estimate).
    floor: Optional height of the floor plane along `up`, millimetres: floor points X satisfy
      dot(up, X) = floor.
  """

  name: str
  cameras: tuple[Camera, ...]
  up: np.ndarray | None = None
  floor: float | None = None

  def __post_init__(self):
    files.check_name(self.name, "rig name")
    object.__setattr__(self, "cameras", tuple(self.cameras))
    if not self.cameras:
      raise ValueError(f"rig {self.name!r} has no cameras")
    names = [camera.name for camera in self.cameras]
    if len(set(names)) != len(names):
      raise ValueError(f"rig {self.name!r} has duplicate camera names: {names}")
    if self.up is not None:
      up = np.asarray(self.up, np.float64).reshape(-1)
      if up.shape != (3,) or not np.all(np.isfinite(up)) or np.linalg.norm(up) < 1e-6:
        raise ValueError(f"rig {self.name!r}: 'up' is {self.up!r}, expected a non-zero [3] vector")
      up = up / np.linalg.norm(up)
      up.setflags(write=False)
      object.__setattr__(self, "up", up)
    if self.floor is not None:
      object.__setattr__(self, "floor", float(self.floor))

  @property
  def camera_names(self) -> tuple[str, ...]:
    return tuple(camera.name for camera in self.cameras)

  @property
  def num_views(self) -> int:
    return len(self.cameras)

  @property
  def pairs(self) -> np.ndarray:
    return ordered_pairs(self.num_views)

  def subset(self, indices: Sequence[int], name: str | None = None) -> "Rig":
    """The rig of the cameras `indices`, in that order (default name "<name>_v<i>-<j>-...")."""
    indices = [int(i) for i in indices]
    if name is None:
      name = f"{self.name}_v{'-'.join(str(i) for i in indices)}"
      if len(name) > 100:  # Still one safe name, distinct per subset.
        digest = hashlib.sha1(name.encode()).hexdigest()[:12]
        name = f"{self.name[:80]}_v{digest}"
    return Rig(name, tuple(self.cameras[i] for i in indices), up=self.up, floor=self.floor)

  def projection_matrices(self) -> np.ndarray:
    """[V, 3, 4] float64 projection matrices K [R | t], in view order."""
    return np.stack([camera.projection_matrix for camera in self.cameras])

  def stacked(self) -> dict:
    """Camera parameters stacked over views, for batched TF code (`project_points_tf`).

    Returns:
      {"K": [V,3,3], "R": [V,3,3], "t": [V,3], "dist": [V,5], "image_size": [V,2] (width,
      height)}, float64.
    """
    return {
        "K": np.stack([camera.K for camera in self.cameras]),
        "R": np.stack([camera.R for camera in self.cameras]),
        "t": np.stack([camera.t for camera in self.cameras]),
        "dist": np.stack([camera.dist for camera in self.cameras]),
        "image_size": np.array([[camera.width, camera.height] for camera in self.cameras],
                               np.float64),
    }


class RigMismatchError(ValueError):
  """Two rigs that must be the same (e.g. a model's rig and the data's rig) differ."""


def check_same_rig(rig_a: Rig, rig_b: Rig, check_geometry: bool = False,
                   tolerance: float = 1e-6) -> None:
  """Raises RigMismatchError unless both rigs have the same camera names in the same order.

  Args:
    rig_a: First rig (e.g. the one a model was built for).
    rig_b: Second rig (e.g. the one the data comes from).
    check_geometry: Also compare K, R, t, dist and image sizes.
    tolerance: Relative tolerance of the geometry comparison.
  """
  names_a, names_b = rig_a.camera_names, rig_b.camera_names
  if len(names_a) != len(names_b):
    raise RigMismatchError(
        f"mismatched rig: {rig_a.name!r} has {len(names_a)} views, {rig_b.name!r} has "
        f"{len(names_b)}; expected the same cameras in the same order")
  if names_a != names_b:
    raise RigMismatchError(
        f"mismatched rig: camera names differ, {rig_a.name!r} has {list(names_a)}, "
        f"{rig_b.name!r} has {list(names_b)}; expected the same cameras in the same order")
  if check_geometry:
    for camera_a, camera_b in zip(rig_a.cameras, rig_b.cameras):
      for field in ("K", "R", "t", "dist"):
        a, b = getattr(camera_a, field), getattr(camera_b, field)
        if not np.allclose(a, b, rtol=tolerance, atol=tolerance):
          raise RigMismatchError(
              f"mismatched rig: camera {camera_a.name!r} field {field!r} differs between "
              f"{rig_a.name!r} ({a.tolist()}) and {rig_b.name!r} ({b.tolist()})")
      if (camera_a.width, camera_a.height) != (camera_b.width, camera_b.height):
        raise RigMismatchError(
            f"mismatched rig: camera {camera_a.name!r} image size differs between "
            f"{rig_a.name!r} and {rig_b.name!r}")
