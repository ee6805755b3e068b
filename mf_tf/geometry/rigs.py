"""Rigs by name: built-in real calibrations (package data) and procedural generators.

Built-in rigs are canonical rig files in mf_tf/geometry/rigs/*.json, converted once from the real
calibrations by `python -m mf_tf.geometry.make_builtin_rigs --shared_data=../shared/data`, so that
nothing outside the package is needed at run time. `get_rig` also accepts a path to any canonical
rig file.

The capture volume and world up of a rig are in `mf_tf.geometry.volume`.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np

from mf_tf.geometry import calibration_formats
from mf_tf.geometry.calibration import load_rig_file
from mf_tf.geometry.camera import Camera
from mf_tf.geometry.rig import Rig

BUILTIN_DIR = pathlib.Path(__file__).resolve().parent / "rigs"

# name -> (file in BUILTIN_DIR, one-line description). "h36m_S1", ... "h36m_S11" are added below.
_BUILTIN = {
    "panoptic_vga20": ("panoptic_vga20.json",
                       "20 Panoptic VGA cameras, one per panel 1-20 (pretraining rig)"),
    "panoptic_heldout6": ("panoptic_heldout6.json",
                          "6 Panoptic VGA cameras disjoint from panoptic_vga20"),
    "panoptic_hd": ("panoptic_hd.json", "the 31 Panoptic HD cameras (panel 0)"),
    "h36m": ("h36m_S9.json", "Human3.6M, subject S9's 4 cameras"),
    "shelf": ("shelf.json", "Shelf, 5 cameras"),
    "campus": ("campus.json", "Campus, 3 outdoor cameras"),
    "mpi_inf_3dhp": ("mpi_inf_3dhp.json", "MPI-INF-3DHP S1 Seq1, the 8 cameras of the train set"),
}
H36M_SUBJECTS = ("S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8", "S9", "S10", "S11")
for _subject in H36M_SUBJECTS:
  _BUILTIN[f"h36m_{_subject}"] = (f"h36m_{_subject}.json", f"Human3.6M, subject {_subject}")


def list_rigs() -> list[str]:
  """Names of the built-in rigs whose files are present in the package."""
  return sorted(name for name, (file, _) in _BUILTIN.items() if (BUILTIN_DIR / file).is_file())


def builtin_rig_path(name: str) -> pathlib.Path:
  """Path of a built-in rig's canonical file (it may not exist yet before generation)."""
  return BUILTIN_DIR / _BUILTIN[name][0]


def get_rig(name_or_path: str | os.PathLike, *, image_sizes=None, units: str | None = None) -> Rig:
  """The one rig resolver: a built-in rig by name, or a calibration file by path.

  A canonical rig JSON file is read as written (`calibration.load_rig_file`); any other supported
  format (`calibration_formats.READERS`: Panoptic JSON, TOML, Qualisys, EasyMocap) through
  `calibration_formats.read_calibration`, which validates it.

  Args:
    name_or_path: A built-in name (`list_rigs`) or a calibration file (or EasyMocap folder).
    image_sizes: {camera: (width, height)}: EasyMocap's sizes (its files carry none).
    units: Unit of a TOML/EasyMocap file's translations when it cannot be told.

  Raises:
    FileNotFoundError: a path-like spec with nothing there, or a built-in rig's missing file.
    ValueError: neither a built-in name nor an existing file; the message lists valid names.
  """
  key = os.fspath(name_or_path)
  if key in _BUILTIN:
    path = builtin_rig_path(key)
    if not path.is_file():
      raise FileNotFoundError(
          f"built-in rig {key!r} is missing its file {path}; regenerate with "
          "`python -m mf_tf.geometry.make_builtin_rigs --shared_data=../shared/data`")
    rig = load_rig_file(path)
    return Rig(key, rig.cameras, up=rig.up, floor=rig.floor)
  if os.path.exists(key):
    if calibration_formats.detect_format(key) == "json":
      return load_rig_file(key)
    return calibration_formats.read_calibration(key, image_sizes=image_sizes, units=units)
  if os.sep in key or "." in os.path.basename(key):
    raise FileNotFoundError(f"calibration file {key!r} not found")
  raise ValueError(f"unknown rig {key!r}: expected a built-in name, one of {list_rigs()}, or the "
                   "path of a canonical rig JSON file")


# ------------------------------------------------------------------------------------------------
# Procedural rigs.


def look_at(center: np.ndarray, target: np.ndarray, up: np.ndarray):
  """World-to-camera (R, t) of a camera at `center` looking at `target`, image rows along -up.

  Camera axes: z forward (towards target), x = z cross up (image right), y = z cross x (image
  down), so the camera is upright with respect to `up`.

  Returns:
    R [3, 3], t [3] with x_cam = R X + t.
  """
  center, target, up = (np.asarray(value, np.float64) for value in (center, target, up))
  forward = target - center
  forward /= np.linalg.norm(forward)
  right = np.cross(forward, up)
  if np.linalg.norm(right) < 1e-9:  # Looking straight along up: any right axis will do.
    right = np.cross(forward, [1.0, 0.0, 0.0] if abs(forward[0]) < 0.9 else [0.0, 1.0, 0.0])
  right /= np.linalg.norm(right)
  down = np.cross(forward, right)
  R = np.stack([right, down, forward])
  return R, -R @ center


def _focal_for(image_size, distance_mm, volume_radius_mm, fill):
  """Focal length (px) making a sphere of `volume_radius_mm` at `distance_mm` fill `fill` of
  the smaller image side."""
  half_side = 0.5 * min(image_size) * fill
  return half_side * distance_mm / volume_radius_mm


def _jitter_generator(num_cameras: int, seed: int) -> np.random.Generator:
  """The random generator of a procedural rig's placement, once `num_cameras` is checked."""
  if num_cameras < 1:
    raise ValueError(f"num_cameras must be >= 1, got {num_cameras}")
  return np.random.default_rng(seed)


def ring_rig(num_cameras: int, radius_mm: float = 4500.0, height_mm: float = 1500.0,
             seed: int = 0, jitter_deg: float = 5.0, jitter_mm: float = 150.0,
             image_size=(1000, 1000), focal: float | None = None,
             target=(0.0, 0.0, 900.0), volume_radius_mm: float = 1200.0,
             name: str | None = None) -> Rig:
  """Cameras on a horizontal ring around the capture volume, looking at its centre (z-up world).

  Azimuths are evenly spaced with a random offset and jitter; positions are jittered in 3D.

  Args:
    num_cameras: Number of views.
    radius_mm: Ring radius.
    height_mm: Camera height above the floor (z = 0).
    seed: Seed of the jitter.
    jitter_deg: Std of the azimuth jitter, degrees.
    jitter_mm: Std of the position jitter, millimetres.
    image_size: (width, height) pixels.
    focal: Focal length in pixels; None: chosen so a sphere of `volume_radius_mm` around
      `target` fills 80% of the smaller image side.
    target: Point every camera looks at (capture volume centre), mm.
    volume_radius_mm: Radius of the volume that must stay in view (for the default focal).
    name: Rig name (default "ring<num_cameras>_s<seed>").

  Returns:
    Rig with up [0, 0, 1], floor 0, no lens distortion.
  """
  rng = _jitter_generator(num_cameras, seed)
  azimuth = (2.0 * np.pi * np.arange(num_cameras) / num_cameras + rng.uniform(0, 2 * np.pi)
             + np.deg2rad(jitter_deg) * rng.standard_normal(num_cameras))
  centers = np.stack([radius_mm * np.cos(azimuth), radius_mm * np.sin(azimuth),
                      np.full(num_cameras, float(height_mm))], axis=-1)
  centers += jitter_mm * rng.standard_normal(centers.shape)
  return _rig_looking_at(centers, target, image_size, focal, volume_radius_mm,
                         name or f"ring{num_cameras}_s{seed}")


def dome_rig(num_cameras: int, radius_mm: float = 4500.0, seed: int = 0,
             min_elevation_deg: float = 5.0, max_elevation_deg: float = 50.0,
             jitter_mm: float = 150.0, image_size=(1000, 1000), focal: float | None = None,
             target=(0.0, 0.0, 900.0), volume_radius_mm: float = 1200.0,
             name: str | None = None) -> Rig:
  """Cameras spread over a spherical cap (a dome) around the volume, looking at its centre.

  Directions follow a Fibonacci spiral over the elevation band (even coverage), rotated by a
  random azimuth, then jittered.

  Args:
    num_cameras: Number of views.
    radius_mm: Dome radius, measured from `target`.
    seed: Seed of the azimuth offset and jitter.
    min_elevation_deg: Lowest camera elevation above the target's horizontal plane.
    max_elevation_deg: Highest elevation.
    jitter_mm: Std of the position jitter.
    image_size: (width, height) pixels.
    focal: Focal length in pixels; None: see `ring_rig`.
    target: Capture volume centre, mm.
    volume_radius_mm: Radius of the volume that must stay in view.
    name: Rig name (default "dome<num_cameras>_s<seed>").

  Returns:
    Rig with up [0, 0, 1], floor 0, no lens distortion.
  """
  rng = _jitter_generator(num_cameras, seed)
  index = np.arange(num_cameras) + 0.5
  low, high = np.sin(np.deg2rad(min_elevation_deg)), np.sin(np.deg2rad(max_elevation_deg))
  sin_elevation = low + (high - low) * index / num_cameras
  azimuth = np.pi * (3.0 - np.sqrt(5.0)) * index + rng.uniform(0, 2 * np.pi)
  cos_elevation = np.sqrt(1.0 - sin_elevation**2)
  directions = np.stack([cos_elevation * np.cos(azimuth), cos_elevation * np.sin(azimuth),
                         sin_elevation], axis=-1)
  centers = np.asarray(target, np.float64) + radius_mm * directions
  centers += jitter_mm * rng.standard_normal(centers.shape)
  return _rig_looking_at(centers, target, image_size, focal, volume_radius_mm,
                         name or f"dome{num_cameras}_s{seed}")


def _rig_looking_at(centers, target, image_size, focal, volume_radius_mm, name) -> Rig:
  width, height = (int(value) for value in image_size)
  up = np.array([0.0, 0.0, 1.0])
  cameras = []
  for index, center in enumerate(centers):
    R, t = look_at(center, target, up)
    distance = np.linalg.norm(np.asarray(target) - center)
    f = focal if focal is not None else _focal_for((width, height), distance, volume_radius_mm,
                                                   0.8)
    K = np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])
    cameras.append(Camera(f"cam{index:02d}", K, R, t, np.zeros(5), width, height))
  return Rig(name, tuple(cameras), up=up, floor=0.0)
