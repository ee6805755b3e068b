"""The capture volume of a rig: the world up, where the optical axes meet, what every camera sees.

World "up": every built-in rig file stores its world's up axis ("up") and floor height along it
("floor", mm); procedural rigs are z-up with the floor at z = 0. `up_vector(rig)` returns the
stored axis, or estimates it from the cameras (cameras are mounted upright: image rows run
downwards, so the mean of -R[1] over cameras points up).

`check_capture_volume` is the sanity test every loaded rig file passes (see
`mf_tf.geometry.calibration`): a standing person, PERSON_HEIGHT_MM tall, at the point closest to
every optical axis must be in front of every camera, inside its image, and of a plausible height
in pixels.
"""

from __future__ import annotations

import numpy as np

from mf_tf.geometry.camera import CalibrationError
from mf_tf.geometry.rig import Rig

# Capture-volume criterion of `check_capture_volume` (see the module docstring).
PERSON_HEIGHT_MM = 1800.0  # A standing adult.
MIN_PERSON_HEIGHT_PX = 20.0  # Smaller is undetectable (real rigs: >= 80 px, Campus).
MAX_PERSON_IMAGE_FRACTION = 2.0  # Larger: under half of the person fits (real rigs: <= 1.12).


def up_vector(rig: Rig) -> np.ndarray:
  """[3] unit world up: the rig's stored `up`, else the mean camera up (-R[1]) normalized."""
  if rig.up is not None:
    return np.array(rig.up)
  mean = np.mean([-camera.R[1] for camera in rig.cameras], axis=0)
  return mean / np.linalg.norm(mean)


def axes_meeting_point(rig: Rig) -> np.ndarray:
  """[3] least-squares point closest to every camera's optical axis, mm.

  Minimizes sum_v |(I - d_v d_v^T)(p - C_v)|^2 over p (C_v centre, d_v viewing direction).
  """
  centers = np.stack([camera.center for camera in rig.cameras])
  directions = np.stack([camera.R[2] for camera in rig.cameras])
  projectors = np.eye(3) - directions[:, :, None] * directions[:, None, :]  # [V, 3, 3]
  lhs = projectors.sum(axis=0)
  rhs = np.einsum("vij,vj->i", projectors, centers)
  if np.linalg.cond(lhs) > 1e8:  # Parallel axes (or one camera): a point in front instead.
    depth = np.mean(np.linalg.norm(centers - centers.mean(axis=0), axis=-1)) or 3000.0
    return np.mean(centers + depth * directions, axis=0)
  return np.linalg.solve(lhs, rhs)


def visible_fraction(rig: Rig, points: np.ndarray, margin: float = 0.0) -> np.ndarray:
  """[V, ...] bool: whether each point is in front of each camera and inside its image.

  Args:
    rig: The rig.
    points: [..., 3] world points, mm.
    margin: Pixels kept clear of the image border.
  """
  result = []
  for camera in rig.cameras:
    uv, depth = camera.project(points)
    inside = ((uv[..., 0] >= -0.5 + margin) & (uv[..., 0] <= camera.width - 0.5 - margin)
              & (uv[..., 1] >= -0.5 + margin) & (uv[..., 1] <= camera.height - 0.5 - margin))
    result.append(inside & (depth > 0))
  return np.stack(result)


def capture_volume(rig: Rig, max_half_extent_mm: float = 1500.0, margin: float = 0.05):
  """Estimates the region every camera sees: an axis-aligned box around the axes' meeting point.

  The centre is `axes_meeting_point`. The half extent starts at `max_half_extent_mm` on every
  axis and shrinks (by 10% a step) until all 8 corners and 6 face centres project inside every
  image (keeping `margin` of each image side clear) and in front of every camera.

  Args:
    rig: The rig.
    max_half_extent_mm: Largest half extent considered.
    margin: Fraction of the smaller image side kept clear of the border.

  Returns:
    center: [3] mm, world coordinates.
    half_extent: [3] mm (equal on all axes; 0 if the centre itself is not seen by every camera).
  """
  center = axes_meeting_point(rig)
  corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)]
                     + [[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]],
                     np.float64)
  half = float(max_half_extent_mm)
  for _ in range(60):
    seen = all(
        visible_fraction(Rig(rig.name, (camera,)), center + half * corners,
                         margin * min(camera.width, camera.height)).all()
        for camera in rig.cameras)
    if seen:
      return center, np.full(3, half)
    half *= 0.9
  return center, np.zeros(3)


def check_capture_volume(rig: Rig, source: str = "<rig>") -> None:
  """Raises unless every camera of `rig` sees a person standing in a common capture volume.

  The volume centre is the point closest to every optical axis (`axes_meeting_point`); the
  person is a vertical segment of PERSON_HEIGHT_MM along the world up (`up_vector`) centred
  there. Every camera must have both of its ends in front of it (depth > 0), the centre inside
  its image (pinhole projection), and its pinhole height f_y * PERSON_HEIGHT_MM / depth (depth of
  the centre) must lie within [MIN_PERSON_HEIGHT_PX, MAX_PERSON_IMAGE_FRACTION * image height].

  Args:
    rig: The rig (millimetres).
    source: Where the rig came from (a file name), quoted in the message.

  Raises:
    CalibrationError: naming `source`, every failing camera, the measured value and the range
      expected.
  """
  center = axes_meeting_point(rig)
  half = 0.5 * PERSON_HEIGHT_MM * up_vector(rig)
  stacked = rig.stacked()
  person = np.stack([center - half, center, center + half])  # [3, 3]: feet, centre, head.
  depths = person @ stacked["R"][:, 2].T + stacked["t"][:, 2]  # [3, V] mm.
  in_front = np.all(depths > 0, axis=0)
  height_px = stacked["K"][:, 1, 1] * PERSON_HEIGHT_MM / np.where(in_front, depths[1], 1.0)
  problems = []
  for view, camera in enumerate(rig.cameras):
    if not in_front[view]:
      problems.append(
          f"camera {camera.name!r} faces away: the volume centre {np.round(center).tolist()} mm "
          f"is at depth {depths[1, view]:.0f} mm (person's ends at {depths[0, view]:.0f} and "
          f"{depths[2, view]:.0f} mm), expected in front of it (> 0)")
      continue
    u, v = camera.project(center[None], distort=False)[0][0]
    if not (0.0 <= u < camera.width and 0.0 <= v < camera.height):
      problems.append(
          f"camera {camera.name!r} looks past the volume centre {np.round(center).tolist()} mm: "
          f"it projects to pixel ({u:.0f}, {v:.0f}), expected inside its {camera.width}x"
          f"{camera.height} image")
      continue
    low, high = MIN_PERSON_HEIGHT_PX, MAX_PERSON_IMAGE_FRACTION * camera.height
    if not low <= height_px[view] <= high:
      problems.append(
          f"camera {camera.name!r} sees a {PERSON_HEIGHT_MM:.0f} mm person at the volume centre "
          f"({depths[1, view]:.0f} mm away) {height_px[view]:.0f} px tall, expected "
          f"{low:.0f}-{high:.0f} px (its image is {camera.height} px high): is 't' in "
          "millimetres?")
  if problems:
    raise CalibrationError(f"{source}: the cameras do not share a capture volume: "
                           + "; ".join(problems))
