"""Calibration readers: every source convention into one (millimetres, x_cam = R X + t).

Conventions of the sources, each established by a test on the real files
(tests/geometry/test_geometry_calibration.py):

  source                 rotation R in file          translation in file      units
  CMU Panoptic JSON      world-to-camera             t (x_cam = R X + t)      centimetres
  Human3.6M (mmpose)     camera-to-world (R_file^T   T = camera centre        metres
                         is world-to-camera)         (x_cam = R_file^T (X - T))
  Shelf / Campus         world-to-camera             T = camera centre        millimetres
                                                     (x_cam = R (X - T))
  MPI-INF-3DHP (mmpose)  world-to-camera             T = translation          metres
  Total Capture .cal     world-to-camera             t = translation          metres

World "up" per source (stored in the Rig): Panoptic -y (floor at y = 0), Human3.6M, Shelf and
Campus +z (floor z = 0), MPI-INF-3DHP +y (floor y = 0); Total Capture unknown (None).

The canonical rig file (`save_rig_file` / `load_rig_file`) is JSON:

  {"name": str, "units": "mm", "up": [3] (optional), "floor": float mm (optional),
   "cameras": [{"name", "K" [3,3], "R" [3,3], "t" [3] mm, "dist" [5], "width", "height"}]}

Loading one rejects unknown fields (e.g. "distCoef" for "dist") and a rig whose cameras do not
share a capture volume (`mf_tf.geometry.volume.check_capture_volume`): a standing person,
1800 mm tall, upright along the world up at the point closest to every optical axis, must be in
front of every camera, inside its image, and project between MIN_PERSON_HEIGHT_PX and MAX_PERSON_IMAGE_FRACTION x the image
height. Cameras facing away fail the first test, a translation in the wrong units (e.g. cm read
as mm: |t| ten times too small) the last: a camera 550 mm from the person with a 1000 px focal
length would see them 3270 px tall, a third of them in a 1000 px image. Built-in and real rigs
project the person 80-1210 px tall, 0.26-1.12 of their image height; the same rigs with t / 10
give 2.6-11.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Mapping, Sequence

import numpy as np

from mf_tf import files
from mf_tf.geometry.camera import (Camera, CalibrationError, check_distance_mm,
                                   check_distortion, check_field, check_intrinsics,
                                   check_rotation)
from mf_tf.geometry.rig import Rig
from mf_tf.geometry.volume import check_capture_volume

# Image sizes that the Shelf, Campus and MPI-INF-3DHP calibration files do not (reliably) carry.
SHELF_IMAGE_SIZE = (1032, 776)  # (width, height)
CAMPUS_IMAGE_SIZE = (360, 288)
MPI_INF_3DHP_IMAGE_SIZE = (2048, 2048)

_CM_TO_MM = 10.0
_M_TO_MM = 1000.0


# Accepted fields of a canonical rig file and of each of its cameras.
RIG_FIELDS = ("name", "units", "up", "floor", "cameras")
CAMERA_FIELDS = ("name", "K", "R", "t", "dist", "width", "height")



# ------------------------------------------------------------------------------------------------
# Canonical rig files.


def _check_known_fields(entry: Mapping, accepted: Sequence[str], where: str) -> None:
  unknown = sorted(str(key) for key in entry if key not in accepted)
  if unknown:
    raise CalibrationError(f"{where}: unknown field(s) {unknown}; accepted fields are "
                           f"{list(accepted)}")


def rig_to_dict(rig: Rig) -> dict:
  """The canonical JSON-ready dict of a rig."""
  d = {"name": rig.name, "units": "mm"}
  if rig.up is not None:
    d["up"] = [float(value) for value in rig.up]
  if rig.floor is not None:
    d["floor"] = float(rig.floor)
  d["cameras"] = [camera.to_dict() for camera in rig.cameras]
  return d


def rig_from_dict(d: Mapping[str, Any], source: str = "<dict>", check_units: bool = True,
                  check_volume: bool = True) -> Rig:
  """Validates a canonical rig dict (see the module docstring) and builds the Rig.

  Args:
    d: The canonical dict.
    source: Where `d` came from (a file name), quoted in error messages.
    check_units: Reject camera distances to the world origin implausible in millimetres.
    check_volume: Reject cameras without a common capture volume (`check_capture_volume`).

  Raises:
    CalibrationError: naming `source`, the field and what was expected.
  """
  if not isinstance(d, Mapping):
    raise CalibrationError(f"{source}: expected a JSON object at the top level, got "
                           f"{type(d).__name__}")
  for field in ("name", "units", "cameras"):
    if field not in d:
      raise CalibrationError(f"{source}: missing field {field!r} (canonical rig file: name, "
                             "units, cameras)")
  _check_known_fields(d, RIG_FIELDS, source)
  if d["units"] != "mm":
    raise CalibrationError(f"{source}: field 'units' is {d['units']!r}, expected 'mm'")
  cameras = d["cameras"]
  if not isinstance(cameras, Sequence) or isinstance(cameras, str) or not cameras:
    raise CalibrationError(f"{source}: field 'cameras' must be a non-empty list of cameras")
  for index, camera in enumerate(cameras):
    if isinstance(camera, Mapping):
      _check_known_fields(camera, CAMERA_FIELDS,
                          f"{source}: camera {str(camera.get('name', index))!r}")
  up = check_field(d["up"], (3,), "up", source) if d.get("up") is not None else None
  floor = check_field(d["floor"], (), "floor", source) if d.get("floor") is not None else None
  try:
    # The name as written (not str(): a null would become the name "None"); `Rig` checks it.
    rig = Rig(d["name"],
              tuple(Camera.from_dict(camera, source, check_units) for camera in cameras),
              up=up, floor=floor)
  except CalibrationError:
    raise
  except ValueError as error:
    raise CalibrationError(f"{source}: {error}") from None
  if check_volume:
    check_capture_volume(rig, source)
  return rig


def load_rig_file(path: str | os.PathLike, check_units: bool = True,
                  check_volume: bool = True) -> Rig:
  """Reads a canonical rig JSON file (mm, x_cam = R X + t), validated as by `rig_from_dict`."""
  return rig_from_dict(_load_json(path), str(path), check_units, check_volume)


def save_rig_file(rig: Rig, path: str | os.PathLike) -> None:
  """Writes a canonical rig JSON file atomically (`mf_tf.files.write_atomic`)."""
  files.write_atomic(path, _format_rig_json(rig_to_dict(rig)))


def _format_rig_json(d: dict) -> str:
  """One camera field per line (readable diffs), full float precision."""
  cameras = d["cameras"]
  head = {key: value for key, value in d.items() if key != "cameras"}
  lines = ["{"]
  for key, value in head.items():
    lines.append(f"  {json.dumps(key)}: {json.dumps(value)},")
  lines.append('  "cameras": [')
  for index, camera in enumerate(cameras):
    fields = [f"    {json.dumps(key)}: {json.dumps(value)}" for key, value in camera.items()]
    separator = "," if index + 1 < len(cameras) else ""
    lines.append("   {\n" + ",\n".join(fields) + "\n   }" + separator)
  lines.append("  ]")
  lines.append("}")
  return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------
# Dataset readers.


def read_panoptic(path: str | os.PathLike, camera_type: str = "vga",
                  names: Sequence[str] | None = None) -> Rig:
  """Reads a CMU Panoptic calibration JSON (centimetres, x_cam = R X + t).

  Args:
    path: calibration_<sequence>.json.
    camera_type: "vga" (640x480, panels 1-20), "hd" (1920x1080, panel 0) or "kinect-color".
    names: Camera names ("PP_NN", panel_node) in the wanted order; None: all of `camera_type`
      in file order.

  Returns:
    Rig named "panoptic_<camera_type>", up [0, -1, 0], floor 0.
  """
  source = str(path)
  data = _load_json(path)
  entries = _require(data, "cameras", source)
  if not isinstance(entries, list):
    raise CalibrationError(f"{source}: field 'cameras' must be a list")
  by_name = {}
  for index, entry in enumerate(entries):
    where = f"{source}: cameras[{index}]"
    for field in ("name", "type"):
      _require(entry, field, where)
    if names is not None or entry["type"] == camera_type:
      by_name[str(entry["name"])] = entry
  if names is None:
    selected = [name for name, entry in by_name.items() if entry["type"] == camera_type]
    if not selected:
      types = sorted({str(entry.get("type")) for entry in entries})
      raise CalibrationError(
          f"{source}: no camera of type {camera_type!r}, expected one of {types}")
  else:
    missing = [name for name in names if name not in by_name]
    if missing:
      raise CalibrationError(f"{source}: cameras {missing} not found (names are 'PP_NN')")
    selected = list(names)
  cameras = []
  for name in selected:
    entry = by_name[name]
    where = f"{source}: camera {name!r}"
    K = check_field(_require(entry, "K", where), (3, 3), "K", where)
    R = check_field(_require(entry, "R", where), (3, 3), "R", where)
    t = check_field(_require(entry, "t", where), (3,), "t", where) * _CM_TO_MM
    dist = check_field(_require(entry, "distCoef", where), (5,), "distCoef", where)
    width, height = check_field(_require(entry, "resolution", where), (2,), "resolution", where)
    cameras.append(_make_camera(name, K, R, t, dist, width, height, where))
  return Rig(f"panoptic_{camera_type}", tuple(cameras), up=(0.0, -1.0, 0.0), floor=0.0)


def read_h36m(path: str | os.PathLike, subject: str = "S9") -> Rig:
  """Reads Human3.6M cameras (the mmpose cameras.json layout, key "S9/54138969").

  Fields: R (camera-to-world rotation: the world-to-camera rotation is its transpose), T (camera
  centre, metres), f [2], c [2], k (radial k1, k2, k3), p (tangential p1, p2), w, h.
  Human3.6M's own tangential model differs from OpenCV's by factors up to 2 on the (tiny, ~1e-3)
  tangential coefficients; they are used as OpenCV p1, p2 (sub-pixel effect).

  Returns:
    Rig named "h36m_<subject>" with the subject's 4 cameras in file order, up [0, 0, 1], floor 0.
  """
  source = str(path)
  data = _load_json(path)
  keys = [key for key in data if str(key).split("/")[0] == subject]
  if not keys:
    subjects = sorted({str(key).split("/")[0] for key in data})
    raise CalibrationError(f"{source}: no cameras for subject {subject!r}, expected one of "
                           f"{subjects}")
  cameras = []
  for key in keys:
    entry = data[key]
    where = f"{source}: camera {key!r}"
    rotation = check_field(_require(entry, "R", where), (3, 3), "R", where).T
    check_rotation(rotation, where)
    centre = check_field(_require(entry, "T", where), (3,), "T", where) * _M_TO_MM
    check_distance_mm(centre, "T", where, "camera centre in metres")
    f = check_field(_require(entry, "f", where), (2,), "f", where)
    c = check_field(_require(entry, "c", where), (2,), "c", where)
    k = check_field(_require(entry, "k", where), (3,), "k", where)
    p = check_field(_require(entry, "p", where), (2,), "p", where)
    width = check_field(_require(entry, "w", where), (), "w", where)
    height = check_field(_require(entry, "h", where), (), "h", where)
    K = np.array([[f[0], 0.0, c[0]], [0.0, f[1], c[1]], [0.0, 0.0, 1.0]])
    dist = np.array([k[0], k[1], p[0], p[1], k[2]])
    name = str(entry.get("id", str(key).split("/")[-1]))
    cameras.append(_make_camera(name, K, rotation, -rotation @ centre, dist, width, height, where))
  return Rig(f"h36m_{subject}", tuple(cameras), up=(0.0, 0.0, 1.0), floor=0.0)


def read_shelf(path: str | os.PathLike, image_size=SHELF_IMAGE_SIZE) -> Rig:
  """Reads the Shelf calibration (R world-to-camera, T camera centre in mm, fx fy cx cy k p).

  Args:
    path: calibration_shelf.json.
    image_size: (width, height); the file does not carry it (Shelf frames are 1032x776).
  """
  return _read_centre_mm(path, "shelf", image_size)


def read_campus(path: str | os.PathLike, image_size=CAMPUS_IMAGE_SIZE) -> Rig:
  """Reads the Campus calibration (same layout as Shelf; frames are 360x288)."""
  return _read_centre_mm(path, "campus", image_size)


def _read_centre_mm(path, rig_name: str, image_size) -> Rig:
  source = str(path)
  data = _load_json(path)
  if not isinstance(data, Mapping) or not data:
    raise CalibrationError(f"{source}: expected an object of cameras keyed by id")
  cameras = []
  for key, entry in data.items():
    where = f"{source}: camera {key!r}"
    rotation = check_field(_require(entry, "R", where), (3, 3), "R", where)
    centre = check_field(_require(entry, "T", where), (3,), "T", where)
    check_distance_mm(centre, "T", where, "camera centre in millimetres")
    fx, fy, cx, cy = (check_field(_require(entry, field, where), (), field, where)
                      for field in ("fx", "fy", "cx", "cy"))
    k = check_field(entry.get("k", [0.0, 0.0, 0.0]), (3,), "k", where)
    p = check_field(entry.get("p", [0.0, 0.0]), (2,), "p", where)
    K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    dist = np.array([k[0], k[1], p[0], p[1], k[2]])
    cameras.append(_make_camera(str(key), K, rotation, -rotation @ centre, dist, image_size[0],
                                image_size[1], where))
  return Rig(rig_name, tuple(cameras), up=(0.0, 0.0, 1.0), floor=0.0)


def read_mpi_inf_3dhp(path: str | os.PathLike, subject: str = "S1", sequence: str = "Seq1",
                      cameras: Sequence[int] | None = None, repair: bool = True) -> Rig:
  """Reads MPI-INF-3DHP cameras (the mmpose cameras_train.json layout, key "S1_Seq1_Cam0").

  Fields: R (world-to-camera), T (translation, metres: x_cam = R X + T), f [2], c [2], w, h.
  The file's image height is 204 for every camera although the frames are 2048x2048 (its
  principal points lie near 1024 in both axes): with `repair` (default) a size that disagrees
  with MPI_INF_3DHP_IMAGE_SIZE is replaced by it with a logged warning; without, it is an error.

  Args:
    path: cameras_train.json.
    subject: "S1".."S8".
    sequence: "Seq1" or "Seq2".
    cameras: Camera indices to keep (in this order); None: all cameras of the sequence.
    repair: Replace an implausible image size by the dataset's documented 2048x2048.

  Returns:
    Rig named "mpi_inf_3dhp_<subject>_<sequence>", up [0, 1, 0], floor 0.
  """
  source = str(path)
  data = _load_json(path)
  prefix = f"{subject}_{sequence}_Cam"
  keys = [key for key in data if str(key).startswith(prefix)]
  if cameras is not None:
    wanted = [f"{prefix}{index}" for index in cameras]
    missing = [key for key in wanted if key not in data]
    if missing:
      raise CalibrationError(f"{source}: cameras {missing} not found, expected some of {keys}")
    keys = wanted
  if not keys:
    sequences = sorted({str(key).rsplit("_Cam", 1)[0] for key in data})
    raise CalibrationError(f"{source}: no cameras for {subject}_{sequence}, expected one of "
                           f"{sequences}")
  result, repaired = [], []
  for key in keys:
    entry = data[key]
    where = f"{source}: camera {key!r}"
    rotation = check_field(_require(entry, "R", where), (3, 3), "R", where)
    t = check_field(_require(entry, "T", where), (3,), "T", where) * _M_TO_MM
    check_distance_mm(t, "T", where, "translation in metres")
    f = check_field(_require(entry, "f", where), (2,), "f", where)
    c = check_field(_require(entry, "c", where), (2,), "c", where)
    width = check_field(_require(entry, "w", where), (), "w", where)
    height = check_field(_require(entry, "h", where), (), "h", where)
    if (width, height) != MPI_INF_3DHP_IMAGE_SIZE:
      message = (f"{where}: fields 'w', 'h' are {width:g}x{height:g}, expected the dataset's "
                 f"{MPI_INF_3DHP_IMAGE_SIZE[0]}x{MPI_INF_3DHP_IMAGE_SIZE[1]} (principal point "
                 f"{c.tolist()})")
      if not repair:
        raise CalibrationError(message)
      repaired.append(f"{key} ({width:g}x{height:g})")
      width, height = MPI_INF_3DHP_IMAGE_SIZE
    K = np.array([[f[0], 0.0, c[0]], [0.0, f[1], c[1]], [0.0, 0.0, 1.0]])
    result.append(_make_camera(str(key).rsplit("_", 1)[-1].lower(), K, rotation, t, np.zeros(5),
                               width, height, where))
  if repaired:
    logging.warning("%s: image size of %s disagrees with the dataset's %dx%d frames (principal "
                    "points near the centre of 2048x2048); using %dx%d", source,
                    ", ".join(repaired), *MPI_INF_3DHP_IMAGE_SIZE, *MPI_INF_3DHP_IMAGE_SIZE)
  return Rig(f"mpi_inf_3dhp_{subject}_{sequence}", tuple(result), up=(0.0, 1.0, 0.0), floor=0.0)


def read_totalcapture(path: str | os.PathLike) -> Rig:
  """Reads a Total Capture `calibration.cal` (plain text, world in metres, x_cam = R X + t).

  Layout: first line "num_cameras distortion_order"; then per camera 7 lines:
    "min_row max_row min_col max_col"   image bounds (inclusive), size = max - min + 1
    "fx fy cx cy"                         pixels
    "d1 [d2 [d3]]"                        `distortion_order` radial coefficients (k1, k2, k3)
    three lines of R (world-to-camera), one line of t (metres).

  Returns:
    Rig named "totalcapture" with cameras "cam1".."camN"; `up` unknown (None).
  """
  source = str(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"calibration file {source} does not exist")
  with open(path) as stream:
    lines = [line.split() for line in stream if line.strip()]
  if not lines or len(lines[0]) != 2:
    raise CalibrationError(f"{source}: line 1 must be 'num_cameras distortion_order'")
  header = _numbers(lines[0], 2, "line 1 (num_cameras distortion_order)", source)
  num_cameras, order = int(header[0]), int(header[1])
  if num_cameras < 1 or not 0 <= order <= 3:
    raise CalibrationError(f"{source}: line 1 gives {num_cameras} cameras and distortion order "
                           f"{order}, expected >= 1 and 0..3")
  if len(lines) < 1 + 7 * num_cameras:
    raise CalibrationError(f"{source}: {len(lines)} non-empty lines, expected "
                           f"{1 + 7 * num_cameras} for {num_cameras} cameras (7 per camera)")
  cameras = []
  for index in range(num_cameras):
    block = lines[1 + 7 * index: 1 + 7 * (index + 1)]
    name = f"cam{index + 1}"
    where = f"{source}: camera {name!r}"
    bounds = _numbers(block[0], 4, "image bounds 'min_row max_row min_col max_col'", where)
    fx, fy, cx, cy = _numbers(block[1], 4, "intrinsics 'fx fy cx cy'", where)
    radial = _numbers(block[2], max(order, 1), f"distortion ({order} coefficients)", where)
    rotation = np.stack([_numbers(block[3 + row], 3, f"R row {row + 1}", where)
                         for row in range(3)])
    t = _numbers(block[6], 3, "t (metres)", where) * _M_TO_MM
    check_distance_mm(t, "t", where, "translation in metres")
    radial = np.pad(radial[:order], (0, 3 - order))
    dist = np.array([radial[0], radial[1], 0.0, 0.0, radial[2]])
    K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    height, width = bounds[1] - bounds[0] + 1, bounds[3] - bounds[2] + 1
    cameras.append(_make_camera(name, K, rotation, t, dist, width, height, where))
  return Rig("totalcapture", tuple(cameras))


# ------------------------------------------------------------------------------------------------
# Helpers.


def _load_json(path) -> Any:
  if not os.path.isfile(path):
    raise FileNotFoundError(f"calibration file {os.fspath(path)} does not exist")
  try:
    with open(path, encoding="utf-8") as stream:
      return json.load(stream)
  except json.JSONDecodeError as error:
    raise CalibrationError(f"{os.fspath(path)}: not valid JSON ({error})") from None
  except UnicodeDecodeError as error:
    raise CalibrationError(f"{os.fspath(path)}: not a UTF-8 JSON text file (byte "
                           f"{error.start}: {error.reason}); expected a rig or calibration "
                           "JSON file") from None


def _require(entry, field: str, where: str):
  if not isinstance(entry, Mapping):
    raise CalibrationError(f"{where}: expected an object with field {field!r}, got "
                           f"{type(entry).__name__}")
  if field not in entry:
    raise CalibrationError(f"{where}: missing field {field!r}")
  return entry[field]


def _numbers(tokens, count: int, what: str, where: str) -> np.ndarray:
  try:
    values = np.array([float(token) for token in tokens])
  except ValueError:
    raise CalibrationError(f"{where}: {what}: {' '.join(tokens)!r} is not numeric") from None
  if values.size != count:
    raise CalibrationError(f"{where}: {what} has {values.size} values, expected {count}")
  if not np.all(np.isfinite(values)):
    raise CalibrationError(f"{where}: {what} holds non-finite values {values.tolist()}")
  return values


def _make_camera(name, K, R, t, dist, width, height, where) -> Camera:
  """Validates converted values (rotation, intrinsics, units) and builds the camera."""
  check_intrinsics(K, where)
  check_rotation(R, where)
  check_distance_mm(t, "t", where)
  check_distortion(np.asarray(dist, np.float64).ravel(), where)
  if width <= 0 or height <= 0:
    raise CalibrationError(f"{where}: image size {width}x{height}, expected positive")
  return Camera(name, K, R, t, dist, int(round(width)), int(round(height)))
