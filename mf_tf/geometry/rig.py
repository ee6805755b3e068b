"""A rig: an ordered list of cameras with a name, and its ordered camera pairs.

Pair order (used by every fusion tensor in mf_tf): pairs are grouped by target view, and within a
target by increasing source view, skipping source == target:

    for target in range(V): for source in range(V): if source != target: (source, target)

so pair index p = target * (V - 1) + (source if source < target else source - 1), and the V - 1
pairs feeding target v are the contiguous slice [v * (V - 1), (v + 1) * (V - 1)).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

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
  """An ordered, named list of cameras."""

  name: str
  cameras: tuple[Camera, ...]

  def __post_init__(self):
    object.__setattr__(self, "cameras", tuple(self.cameras))
    if not self.cameras:
      raise ValueError(f"rig {self.name!r} has no cameras")
    names = [camera.name for camera in self.cameras]
    if len(set(names)) != len(names):
      raise ValueError(f"rig {self.name!r} has duplicate camera names: {names}")

  @property
  def num_views(self) -> int:
    return len(self.cameras)

  @property
  def pairs(self) -> np.ndarray:
    return ordered_pairs(self.num_views)

  def subset(self, indices: Sequence[int], name: str | None = None) -> "Rig":
    return Rig(name or f"{self.name}[{','.join(str(i) for i in indices)}]",
               tuple(self.cameras[i] for i in indices))
