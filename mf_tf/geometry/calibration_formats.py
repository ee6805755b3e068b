"""Calibration files of other tools: one reader registry, writers, and fitting to video sizes.

Every reader returns a `Rig` in the project convention (millimetres, x_cam = R X + t, distortion
[k1, k2, p1, p2, k3]; see `mf_tf.geometry.camera`). `read_calibration` picks the reader from the
path (extension, then content); `write_calibration` the writer from the extension.

  format      files                      rotation in file          translation     units
  json        canonical rig JSON         world-to-camera R         t               mm
  panoptic    CMU Panoptic JSON          world-to-camera R         t               cm
  toml        OpenCV / anipose /         world-to-camera           t               m or mm (told
              Caliscope / Pose2Sim       Rodrigues vector                          apart, below)
  qualisys    Qualisys .qca.txt XML      camera-to-world, by       camera centre   mm
                                         columns, camera looks
                                         along its -z
  easymocap   intri.yml + extri.yml      Rodrigues R_ / matrix     T               m
              (OpenCV FileStorage)       Rot_, world-to-camera

TOML units. Pose2Sim writes metres, anipose the unit of its calibration board (often mm). The
reader tries metres and millimetres and keeps the one with which the rig has a common capture
volume (`mf_tf.geometry.volume.check_capture_volume`: a standing person projects in front of
every camera, inside its image, 20 px to twice the image height tall). Metres and millimetres
differ by a factor 1000 and are never both plausible. Centimetres are not guessed: a factor 10
stays within that range (a person 1000 px tall at 3 m is 100 px tall at 30 m), so a rig in
centimetres read as millimetres can pass; state `units="cm"`.

Qualisys (QTM) .qca.txt, as Pose2Sim's `read_qca` / `calib_qca_fun` read it, checked on the real
Pose2Sim demo file (tests/geometry/test_geometry_calibration_formats.py and
benchmarks/calibration_reprojection.py):
  - cameras: <camera> elements whose `model` names a video camera ("video", "hybrid" or "none");
    marker-only cameras are skipped; ordered by natural sort of `serial` (the camera name).
  - intrinsics: focalLengthU/V, centerPointU/V and the distortion coefficients are in sensor
    sub-pixel units, 64 per pixel; the principal point is relative to the sensor, the image is
    the sensor window fov_video (left, top, right, bottom inclusive): c = centerPoint / 64 -
    (left, top), size = (right - left + 1, bottom - top + 1). Coefficients: [k1, k2, p1, p2, k3]
    = [radialDistortion1, radialDistortion2, tangentalDistortion1, tangentalDistortion2,
    radialDistortion3] / 64.
  - video_resolution (e.g. "540p"), when present: the video is scaled from the 1080p sensor
    mode by res / 1080 (focal lengths, principal point and size).
  - transform: r11..r33 hold the camera's axes as columns (r_ij row i, column j of the
    camera-to-world rotation's transpose M) and x, y, z its centre C in mm; the QTM camera frame
    has y up and looks along -z, so the OpenCV world-to-camera rotation is R = diag(1, -1, -1) M
    and t = -R C.
  - viewrotation (the camera mounted on its side, the image rotated by QTM): only 0 is read.
  - world up: +z (the QTM default; the demo cameras stand 1.7-2.1 m high).
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re
import tomllib
import xml.etree.ElementTree as ElementTree
from typing import Callable, Mapping, Sequence

import cv2
import numpy as np
import tomli_w

from mf_tf import files
from mf_tf.geometry import calibration
from mf_tf.geometry.camera import CalibrationError, Camera, check_field
from mf_tf.geometry.rig import Rig
from mf_tf.geometry.volume import check_capture_volume

# Millimetres per unit of a calibration file's translations.
UNITS_TO_MM = {"m": 1000.0, "cm": 10.0, "mm": 1.0}
# Units a TOML file is tried in when not stated (see the module docstring for why not cm).
GUESSED_UNITS = ("m", "mm")

# Qualisys sensor coordinates: 64 sub-pixel units per pixel; video modes scale from 1080p.
QUALISYS_SUBPIXELS = 64.0
QUALISYS_SENSOR_LINES = 1080.0
# QTM camera frame (y up, looking along -z) to OpenCV's (y down, looking along +z).
_QTM_TO_OPENCV = np.diag([1.0, -1.0, -1.0])

# `fit_to_image_size`: largest size difference it explains by a crop, as a fraction of the size.
MAX_CROP_FRACTION = 0.02

EASYMOCAP_FILES = ("intri.yml", "extri.yml")


# ------------------------------------------------------------------------------------------------
# Readers. Each takes the path and keyword arguments `names`, `image_sizes`, `units`.


def rig_name_from(text: str) -> str:
  """A safe rig name (`mf_tf.files.check_name`) made from a file or folder name.

  Characters other than letters, digits, '.', '_' and '-' become '_' (a stem with spaces, e.g.
  "my calib" -> "my_calib"); a name not starting with a letter or digit gets "rig_" in front
  ("" -> "rig", ".hidden" -> "rig_.hidden"); at most 100 characters. Readers that name a rig after
  a file never fail on its name.
  """
  name = re.sub(r"[^A-Za-z0-9._-]", "_", str(text))
  if not name[:1].isalnum():
    name = f"rig_{name}" if name else "rig"
  return name[:100]


def _read_canonical_json(path, *, names=None, image_sizes=None, units=None) -> Rig:
  _check_units_absent(units, "json", "mm")
  return _finish(calibration.load_rig_file(path), path, names, image_sizes)


def _read_panoptic_json(path, *, names=None, image_sizes=None, units=None) -> Rig:
  """Panoptic cameras `names`; None: the VGA cameras, else the HD ones, else the first type."""
  _check_units_absent(units, "panoptic", "cm")
  types = [entry.get("type") for entry in calibration._load_json(path)["cameras"]
           if isinstance(entry, Mapping)]
  camera_type = next((kind for kind in ("vga", "hd") if kind in types),
                     types[0] if types else "vga")
  return _finish(calibration.read_panoptic(path, camera_type, names=names), path, None,
                 image_sizes)


def read_toml(path: str | os.PathLike, *, names: Sequence[str] | None = None,
              image_sizes: Mapping[str, tuple[int, int]] | None = None,
              units: str | None = None) -> Rig:
  """Reads an OpenCV / anipose / Caliscope / Pose2Sim calibration TOML.

  One table per camera: name (optional, else the table key), size [w, h] px, matrix [3, 3] px,
  distortions [4 or 5] (k1, k2, p1, p2[, k3]), rotation [3] (Rodrigues vector,
  world-to-camera), translation [3] (x_cam = R X + t, in `units`), fisheye (optional; true is
  refused). A [metadata] table is ignored.

  Args:
    path: The .toml file.
    names: Cameras to keep, in this order; None: all, in file order.
    image_sizes: {name: (width, height)} of the videos (`fit_to_image_size`); None: as in the file.
    units: "m", "cm" or "mm"; None tells metres from millimetres by plausibility (see the
      module docstring).

  Returns:
    Rig named after the file; `up` unknown (None).

  Raises:
    CalibrationError: naming the file and the field, or asking for `units` when neither metres
      nor millimetres (or both) give a plausible rig.
  """
  source = os.fspath(path)
  parsed = [_toml_camera(key, entry, source) for key, entry in _toml_tables(path)]
  build = functools.partial(_toml_rig, parsed,
                            rig_name_from(os.path.basename(source).rsplit(".", 1)[0]))
  if units is None:
    return _finish(_toml_rig_in_plausible_units(build, source), path, names, image_sizes)
  _check_unit_name(units, source)
  rig = build(units)
  check_capture_volume(rig, f"{source} (translations in {units})")
  return _finish(rig, path, names, image_sizes)


def _toml_tables(path) -> list[tuple[str, Mapping]]:
  """The (key, table) of every camera table of a TOML file: the tables other than [metadata]."""
  source = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"calibration file {source} does not exist")
  try:
    with open(path, "rb") as stream:
      data = tomllib.load(stream)
  except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
    raise CalibrationError(f"{source}: not a valid TOML file ({error})") from None
  entries = [(key, value) for key, value in data.items()
             if key != "metadata" and isinstance(value, Mapping)]
  if not entries:
    raise CalibrationError(f"{source}: no camera table, expected one table per camera with "
                           "name, size, matrix, distortions, rotation, translation")
  return entries


def _toml_camera(key: str, entry: Mapping, source: str) -> tuple:
  """One camera table, checked: (name, where, K [3, 3], R [3, 3], t [3] in the file's unit,
  dist [5], size [2]), `where` naming the file, camera and table for later messages."""
  name = str(entry.get("name", key))
  where = f"{source}: camera {name!r} (table [{key}])"
  if entry.get("fisheye", False) is not False:
    raise CalibrationError(f"{where}: field 'fisheye' is {entry['fisheye']!r}: the fisheye "
                           "lens model is not supported, expected fisheye = false (pinhole "
                           "with Brown-Conrady distortion)")
  size = check_field(calibration._require(entry, "size", where), (2,), "size", where)
  K = check_field(calibration._require(entry, "matrix", where), (3, 3), "matrix", where)
  dist = np.asarray(calibration._require(entry, "distortions", where), dtype=object).ravel()
  if dist.size not in (4, 5):
    raise CalibrationError(f"{where}: field 'distortions' has {dist.size} values, expected 4 "
                           "or 5 (k1, k2, p1, p2[, k3])")
  dist = np.pad(check_field(dist.tolist(), (dist.size,), "distortions", where),
                (0, 5 - dist.size))
  rvec = check_field(calibration._require(entry, "rotation", where), (3,), "rotation", where)
  t = check_field(calibration._require(entry, "translation", where), (3,), "translation",
                  where)
  return name, where, K, _rodrigues(rvec), t, dist, size


def _toml_rig(parsed: Sequence[tuple], rig_name: str, unit: str) -> Rig:
  """The rig of `_toml_camera`'s cameras with their translations read in `unit`."""
  cameras = tuple(calibration._make_camera(name, K, R, t * UNITS_TO_MM[unit], dist, size[0],
                                           size[1], where)
                  for name, where, K, R, t, dist, size in parsed)
  return Rig(rig_name, cameras)


def _toml_rig_in_plausible_units(build: Callable[[str], Rig], source: str) -> Rig:
  """`build(unit)` in the only one of GUESSED_UNITS that gives a plausible rig (module
  docstring); raises CalibrationError asking for the unit when none or several do."""
  plausible, reasons = {}, []
  for unit in GUESSED_UNITS:
    try:
      rig = build(unit)
      check_capture_volume(rig, f"as {unit}")
      plausible[unit] = rig
    except CalibrationError as error:
      reasons.append(f"in {unit}: {error}")
  if len(plausible) != 1:
    found = (f"translations read in {' and in '.join(plausible)} both give" if plausible
             else f"translations read in {' or in '.join(GUESSED_UNITS)} give no")
    raise CalibrationError(
        f"{source}: {found} plausible rig (a standing person in front of every camera, inside "
        f"its image, of a plausible height); state the unit of 'translation' (units='m', 'cm' "
        f"or 'mm'). " + "; ".join(reasons))
  unit, rig = next(iter(plausible.items()))
  logging.info("%s: translations read in %s (the only plausible unit)", source, unit)
  return rig


def read_qualisys(path: str | os.PathLike, *, names: Sequence[str] | None = None,
                  image_sizes: Mapping[str, tuple[int, int]] | None = None,
                  units: str | None = None) -> Rig:
  """Reads a Qualisys QTM calibration export (.qca.txt XML; convention in the module docstring).

  Args:
    path: The .qca.txt file.
    names: Cameras (serials) to keep, in this order; None: every video camera, natural order.
    image_sizes: {name: (width, height)} of the videos (`fit_to_image_size`); None: as in the file.
    units: Must be None or "mm" (QTM files are in millimetres).

  Returns:
    Rig named after the file, up [0, 0, 1].

  Raises:
    CalibrationError: naming the file, the camera and the element or attribute.
  """
  _check_units_absent(units, "qualisys", "mm")
  source = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"calibration file {source} does not exist")
  try:
    root = ElementTree.parse(path).getroot()
  except ElementTree.ParseError as error:
    raise CalibrationError(f"{source}: not valid XML ({error}), expected a Qualisys .qca.txt "
                           "calibration") from None
  elements = root.findall("cameras/camera")
  if not elements:
    raise CalibrationError(f"{source}: no <cameras>/<camera> element, expected a Qualisys "
                           ".qca.txt calibration")
  video = [element for element in elements
           if any(model in element.get("model", "").lower()
                  for model in ("video", "hybrid", "none"))]
  if not video:
    models = sorted({element.get("model", "") for element in elements})
    raise CalibrationError(f"{source}: no video camera (models {models}), expected a camera "
                           "whose model contains 'video', 'hybrid' or 'none'")
  cameras = []
  for index, element in enumerate(video):
    name = element.get("serial") or f"camera{index}"
    where = f"{source}: camera {name!r}"
    rotation = element.get("viewrotation", "0")
    if _qualisys_number(rotation, "viewrotation", where) != 0:
      raise CalibrationError(f"{where}: attribute 'viewrotation' is {rotation!r}: rotated "
                             "camera views are not supported, expected 0")
    fov = _qualisys_attributes(element, "fov_video", ("left", "top", "right", "bottom"), where)
    intrinsic = _qualisys_attributes(
        element, "intrinsic", ("focalLengthU", "focalLengthV", "centerPointU", "centerPointV",
                               "radialDistortion1", "radialDistortion2",
                               "tangentalDistortion1", "tangentalDistortion2"), where)
    intrinsic["radialDistortion3"] = _qualisys_number(
        element.find("intrinsic").get("radialDistortion3", "0"), "radialDistortion3", where)
    transform = _qualisys_attributes(
        element, "transform", ("x", "y", "z") + tuple(f"r{i}{j}" for i in "123" for j in "123"),
        where)
    scale = _qualisys_video_scale(element.get("video_resolution"), where)
    fx, fy, cx, cy = (intrinsic["focalLengthU"] / QUALISYS_SUBPIXELS,
                      intrinsic["focalLengthV"] / QUALISYS_SUBPIXELS,
                      intrinsic["centerPointU"] / QUALISYS_SUBPIXELS - fov["left"],
                      intrinsic["centerPointV"] / QUALISYS_SUBPIXELS - fov["top"])
    K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]) * [[scale], [scale], [1.0]]
    width = (fov["right"] - fov["left"] + 1) * scale
    height = (fov["bottom"] - fov["top"] + 1) * scale
    dist = np.array([intrinsic[key] for key in (
        "radialDistortion1", "radialDistortion2", "tangentalDistortion1", "tangentalDistortion2",
        "radialDistortion3")]) / QUALISYS_SUBPIXELS
    columns = np.array([[transform[f"r{i}{j}"] for j in "123"] for i in "123"])
    R = _QTM_TO_OPENCV @ columns
    center = np.array([transform["x"], transform["y"], transform["z"]])
    cameras.append(calibration._make_camera(name, K, R, -R @ center, dist, width, height, where))
  cameras.sort(key=lambda camera: _natural_key(camera.name))
  rig = Rig(rig_name_from(os.path.basename(source).split(".", 1)[0]), tuple(cameras),
            up=(0.0, 0.0, 1.0))
  check_capture_volume(rig, source)
  return _finish(rig, path, names, image_sizes)


def read_easymocap(path: str | os.PathLike, *, names: Sequence[str] | None = None,
                   image_sizes: Mapping[str, tuple[int, int]] | None = None,
                   units: str | None = None) -> Rig:
  """Reads EasyMocap's intri.yml + extri.yml (OpenCV FileStorage YAML).

  intri.yml: names (list), K_<name> [3, 3] px, dist_<name> [1, 5] (k1, k2, p1, p2, k3; 4 or
  fewer values are padded). extri.yml: R_<name> [3, 1] Rodrigues and/or Rot_<name> [3, 3]
  (world-to-camera; Rot_ wins, and both must agree), T_<name> [3, 1] (x_cam = R X + T, metres).

  Args:
    path: The folder holding both files, or the path of either.
    names: Cameras to keep, in this order; None: intri.yml's `names`, in order.
    image_sizes: {name: (width, height)} for every kept camera: the files carry no image size.
    units: Unit of T_<name>; None: metres (EasyMocap's).

  Returns:
    Rig named after the folder; `up` unknown (None).

  Raises:
    CalibrationError: naming the file and the field, or asking for `image_sizes`.
  """
  folder = _easymocap_folder(path)
  intri_path, extri_path = (os.path.join(folder, name) for name in EASYMOCAP_FILES)
  if units is not None:
    _check_unit_name(units, folder)
  scale = UNITS_TO_MM[units or "m"]
  with _file_storage(intri_path) as intri, _file_storage(extri_path) as extri:
    available = _yml_names(intri, intri_path)
    selected = list(available if names is None else names)
    missing = [name for name in selected if name not in available]
    if missing:
      raise CalibrationError(f"{intri_path}: cameras {missing} not in field 'names' "
                             f"{available}")
    sizes = dict(image_sizes or {})
    without = [name for name in selected if name not in sizes]
    if without:
      raise CalibrationError(
          f"{folder}: EasyMocap calibrations carry no image size; pass image_sizes="
          f"{{name: (width, height)}} for cameras {without}")
    cameras = []
    for name in selected:
      where = f"{folder}: camera {name!r}"
      K = _yml_matrix(intri, f"K_{name}", (3, 3), intri_path)
      dist = _yml_matrix(intri, f"dist_{name}", None, intri_path).ravel()
      if dist.size > 5:
        raise CalibrationError(f"{intri_path}: field 'dist_{name}' has {dist.size} values, "
                               "expected at most 5 (k1, k2, p1, p2, k3)")
      dist = np.pad(dist, (0, 5 - dist.size))
      R = _yml_rotation(extri, name, extri_path)
      t = _yml_matrix(extri, f"T_{name}", (3,), extri_path) * scale
      width, height = check_field(sizes[name], (2,), f"image_sizes[{name!r}]", where)
      cameras.append(calibration._make_camera(name, K, R, t, dist, width, height, where))
  rig = Rig(rig_name_from(os.path.basename(os.path.abspath(folder))), tuple(cameras))
  check_capture_volume(rig, folder)
  return rig


# Name -> reader; every reader takes (path, *, names, image_sizes, units) and returns a Rig.
READERS: dict[str, Callable[..., Rig]] = {
    "json": _read_canonical_json,
    "panoptic": _read_panoptic_json,
    "toml": read_toml,
    "qualisys": read_qualisys,
    "easymocap": read_easymocap,
}

_FORMAT_HELP = ("canonical rig .json, CMU Panoptic calibration .json, OpenCV/anipose/Pose2Sim "
                ".toml, Qualisys .qca.txt, EasyMocap folder with intri.yml and extri.yml")


def detect_format(path: str | os.PathLike) -> str:
  """The READERS key for `path`, from its extension, then its content.

  Raises:
    FileNotFoundError: nothing at `path`.
    CalibrationError: an unknown extension or content, listing the supported formats.
  """
  source = os.fspath(path)
  lower = source.lower()
  if os.path.isdir(path):
    if all(os.path.isfile(os.path.join(path, name)) for name in EASYMOCAP_FILES):
      return "easymocap"
    raise CalibrationError(f"{source}: a folder without {' and '.join(EASYMOCAP_FILES)}; "
                           f"supported calibrations: {_FORMAT_HELP}")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"calibration file {source} does not exist")
  if os.path.basename(lower) in EASYMOCAP_FILES:
    return "easymocap"
  if lower.endswith(".toml"):
    return "toml"
  if lower.endswith(".json"):
    data = calibration._load_json(path)
    entries = data.get("cameras") if isinstance(data, Mapping) else None
    if (isinstance(entries, list) and entries and isinstance(entries[0], Mapping)
        and "distCoef" in entries[0]):
      return "panoptic"
    return "json"
  if lower.endswith((".qca.txt", ".qca", ".xml", ".txt")):
    with open(path, "rb") as stream:
      head = stream.read(4096)
    if b"<calibration" in head:
      return "qualisys"
  raise CalibrationError(f"{source}: unknown calibration format (extension and content); "
                         f"supported: {_FORMAT_HELP}")


def read_calibration(path: str | os.PathLike, names: Sequence[str] | None = None,
                     image_sizes: Mapping[str, tuple[int, int]] | None = None,
                     units: str | None = None) -> Rig:
  """Reads any supported calibration (`READERS`, chosen by `detect_format`) into a Rig (mm).

  Args:
    path: A calibration file, or an EasyMocap folder.
    names: Cameras to keep, in this order (Panoptic: "PP_NN" names across camera types);
      None: every camera (Panoptic: the VGA cameras, or the HD ones in a file without VGA).
    image_sizes: {name: (width, height)} of the videos: required by EasyMocap (its files carry
      no size); for the other formats the cameras are fitted to them (`fit_to_image_size`).
    units: Unit of the file's translations, "m", "cm" or "mm": TOML (None: told apart by
      plausibility) and EasyMocap (None: metres); the other formats fix their unit.

  Returns:
    The rig, validated (rotations, intrinsics, units, a common capture volume).

  Raises:
    FileNotFoundError: nothing at `path`.
    CalibrationError: an unknown format (listing the supported ones), or a malformed file
      (naming the file and the field).
  """
  return READERS[detect_format(path)](path, names=names, image_sizes=image_sizes, units=units)


# ------------------------------------------------------------------------------------------------
# Writers.


def write_canonical_json(rig: Rig, path: str | os.PathLike) -> None:
  """Writes the canonical rig JSON (`calibration.save_rig_file`)."""
  calibration.save_rig_file(rig, path)


def write_toml(rig: Rig, path: str | os.PathLike) -> None:
  """Writes the Pose2Sim / anipose TOML layout atomically.

  One table per camera, keyed by its name: name, size [w, h], matrix [3, 3], distortions [5],
  rotation (Rodrigues vector, world-to-camera), translation (metres), fisheye = false; then
  [metadata] adjusted = false, error = 0.0.

  Raises:
    CalibrationError: a camera named "metadata" (the table of that name is not a camera).
  """
  if "metadata" in rig.camera_names:
    raise CalibrationError(f"rig {rig.name!r}: a camera named 'metadata' cannot be written to "
                           "TOML (the [metadata] table is not a camera); rename it")
  tables = {}
  for camera in rig.cameras:
    tables[camera.name] = {
        "name": camera.name,
        "size": [camera.width, camera.height],
        "matrix": camera.K.tolist(),
        "distortions": camera.dist.tolist(),
        "rotation": _rodrigues_vector(camera.R).tolist(),
        "translation": (camera.t / UNITS_TO_MM["m"]).tolist(),
        "fisheye": False,
    }
  tables["metadata"] = {"adjusted": False, "error": 0.0}
  files.write_atomic(path, tomli_w.dumps(tables))


def write_easymocap(rig: Rig, path: str | os.PathLike) -> None:
  """Writes EasyMocap's intri.yml and extri.yml (T in metres) into the folder `path`.

  Each file is written atomically (`_write_storage_atomic`); the folder is created if missing.
  """
  folder = os.fspath(path)

  def intri(storage):
    _yml_write_names(storage, rig.camera_names)
    for camera in rig.cameras:
      storage.write(f"K_{camera.name}", camera.K)
      storage.write(f"dist_{camera.name}", camera.dist[None, :])

  def extri(storage):
    _yml_write_names(storage, rig.camera_names)
    for camera in rig.cameras:
      storage.write(f"R_{camera.name}", _rodrigues_vector(camera.R)[:, None])
      storage.write(f"Rot_{camera.name}", camera.R)
      storage.write(f"T_{camera.name}", camera.t[:, None] / UNITS_TO_MM["m"])

  for name, fill in zip(EASYMOCAP_FILES, (intri, extri)):
    _write_storage_atomic(os.path.join(folder, name), fill)


# Name -> writer(rig, path).
WRITERS: dict[str, Callable[[Rig, str | os.PathLike], None]] = {
    "json": write_canonical_json,
    "toml": write_toml,
    "easymocap": write_easymocap,
}


def write_calibration(rig: Rig, path: str | os.PathLike, format: str | None = None) -> None:
  """Writes `rig` in one of WRITERS' formats.

  Args:
    rig: The rig (millimetres).
    path: The file (json, toml) or folder (easymocap).
    format: "json", "toml" or "easymocap"; None: from the extension (.json, .toml; a path
      without extension or an existing folder: easymocap).

  Raises:
    CalibrationError: an unknown format or extension, listing the supported ones.
  """
  if format is None:
    lower = os.fspath(path).lower()
    extension = os.path.splitext(lower)[1]
    if extension in (".json", ".toml"):
      format = extension[1:]
    elif os.path.isdir(path) or not extension:
      format = "easymocap"
    else:
      raise CalibrationError(f"{os.fspath(path)}: cannot tell the calibration format from the "
                             f"extension {extension!r}, expected .json, .toml or a folder "
                             f"(easymocap); or pass format= one of {sorted(WRITERS)}")
  if format not in WRITERS:
    raise CalibrationError(f"calibration format {format!r} is not writable, expected one of "
                           f"{sorted(WRITERS)}")
  WRITERS[format](rig, path)


# ------------------------------------------------------------------------------------------------
# Fitting a calibration to the videos.


def fit_to_image_size(rig: Rig, sizes: Mapping[str, tuple[int, int]]) -> Rig:
  """Adapts each camera to the size of its video frames.

  A video may differ from its calibration by a crop, or by a resize. Handled:
    - resize: width and height scaled by the same factor (within a pixel of rounding): K's
      first two rows are scaled (pixel centres at integers: u' = s (u + 0.5) - 0.5).
    - crop (or pad) of the right or bottom edge: one dimension differing by at most
      MAX_CROP_FRACTION of its size, the other unchanged; the pixel grid keeps its origin, so K
      is unchanged and only the size changes. This is how a video coded at a multiple of 16
      (1088) is shown at 1080: on the Pose2Sim demo, whose cam01 and cam02 videos are 1080 px
      wide and calibrated 1088, the static background of the 1080 px videos maps onto that of
      the 1088 px videos of the same cameras as x' = 0.9965 x - 0.5 and x' = 1.0009 x + 0.6
      (the same scale as y: no horizontal resize; an offset near 0: no left or centred crop,
      which would give -8 or -4 px); see benchmarks/calibration_reprojection.py.
  A warning is logged for each camera adjusted.

  Args:
    rig: The rig.
    sizes: {camera name: (width, height)} in pixels; cameras not named are kept as they are.

  Returns:
    The rig with adjusted cameras (same order, name, up and floor).

  Raises:
    CalibrationError: a name not in the rig, or a size difference neither explains.
  """
  unknown = [name for name in sizes if name not in rig.camera_names]
  if unknown:
    raise CalibrationError(f"rig {rig.name!r}: image sizes given for cameras {unknown}, "
                           f"expected names among {list(rig.camera_names)}")
  cameras = []
  for camera in rig.cameras:
    if camera.name not in sizes:
      cameras.append(camera)
      continue
    width, height = check_field(sizes[camera.name], (2,), f"sizes[{camera.name!r}]",
                                f"rig {rig.name!r}")
    if width <= 0 or height <= 0 or width != round(width) or height != round(height):
      raise CalibrationError(f"rig {rig.name!r}: camera {camera.name!r} image size "
                             f"{width}x{height}, expected positive integers")
    width, height = int(width), int(height)
    cameras.append(_fit_camera(camera, width, height, rig.name))
  return Rig(rig.name, tuple(cameras), up=rig.up, floor=rig.floor)


def _fit_camera(camera: Camera, width: int, height: int, rig_name: str) -> Camera:
  old = (camera.width, camera.height)
  if (width, height) == old:
    return camera
  where = f"rig {rig_name!r}: camera {camera.name!r}"
  scale_x, scale_y = width / old[0], height / old[1]
  K = camera.K.copy()
  differences = (abs(width - old[0]), abs(height - old[1]))
  if differences[0] == 0 or differences[1] == 0:
    if max(differences[0] / old[0], differences[1] / old[1]) > MAX_CROP_FRACTION:
      raise CalibrationError(
          f"{where}: video frames are {width}x{height}, calibrated {old[0]}x{old[1]}: a "
          f"difference of more than {MAX_CROP_FRACTION:.0%} in one dimension only, expected a "
          "crop within that or the same aspect ratio (a resize); is this the right calibration "
          "for this video?")
    logging.warning("%s: video frames are %dx%d, calibrated %dx%d: taken as cropped (or "
                    "padded) at the right and bottom, intrinsics unchanged", where, width, height,
                    *old)
  elif abs(old[0] * scale_y - width) <= 1.0 and abs(old[1] * scale_x - height) <= 1.0:
    K[0] *= scale_x
    K[1] *= scale_y
    K[0, 2] += 0.5 * (scale_x - 1.0)
    K[1, 2] += 0.5 * (scale_y - 1.0)
    logging.warning("%s: video frames are %dx%d, calibrated %dx%d: taken as a resize by "
                    "%.4g x %.4g", where, width, height, *old, scale_x, scale_y)
  else:
    raise CalibrationError(
        f"{where}: video frames are {width}x{height}, calibrated {old[0]}x{old[1]}: neither "
        f"a crop of one dimension (within {MAX_CROP_FRACTION:.0%}) nor a resize "
        "keeping the aspect ratio; is this the right calibration for this video?")
  return Camera(camera.name, K, camera.R, camera.t, camera.dist, width, height)


# ------------------------------------------------------------------------------------------------
# Helpers.


def _finish(rig: Rig, path, names, image_sizes) -> Rig:
  """Selects `names` (in order) and fits `image_sizes`."""
  if names is not None:
    missing = [name for name in names if name not in rig.camera_names]
    if missing:
      raise CalibrationError(f"{os.fspath(path)}: cameras {missing} not found, expected names "
                             f"among {list(rig.camera_names)}")
    rig = rig.subset([rig.camera_names.index(name) for name in names], name=rig.name)
  if image_sizes:
    rig = fit_to_image_size(rig, image_sizes)
  return rig


def _check_units_absent(units, format_name: str, fixed: str) -> None:
  if units is not None and units != fixed:
    raise CalibrationError(f"units={units!r} given for a {format_name} calibration, whose "
                           f"translations are always in {fixed}; expected units=None")


def _check_unit_name(units, source: str) -> None:
  if units not in UNITS_TO_MM:
    raise CalibrationError(f"{source}: units={units!r}, expected one of {list(UNITS_TO_MM)}")


def _rodrigues(rvec: np.ndarray) -> np.ndarray:
  """[3] axis * angle (radians) -> [3, 3] rotation (Rodrigues' formula)."""
  return cv2.Rodrigues(np.asarray(rvec, np.float64).reshape(3, 1))[0]


def _rodrigues_vector(R: np.ndarray) -> np.ndarray:
  """[3, 3] rotation -> [3] axis * angle (radians)."""
  return cv2.Rodrigues(np.asarray(R, np.float64))[0].ravel()


def _natural_key(name: str):
  return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _qualisys_number(text, attribute: str, where: str) -> float:
  try:
    value = float(text)
  except (TypeError, ValueError):
    raise CalibrationError(f"{where}: attribute {attribute!r} is {text!r}, expected a "
                           "number") from None
  if not math.isfinite(value):
    raise CalibrationError(f"{where}: attribute {attribute!r} is {text!r}, expected finite")
  return value


def _qualisys_attributes(element, tag: str, attributes: Sequence[str], where: str) -> dict:
  child = element.find(tag)
  if child is None:
    raise CalibrationError(f"{where}: missing element <{tag}>")
  values = {}
  for attribute in attributes:
    if attribute not in child.attrib:
      raise CalibrationError(f"{where}: <{tag}> is missing attribute {attribute!r}")
    values[attribute] = _qualisys_number(child.get(attribute), f"{tag}.{attribute}", where)
  return values


def _qualisys_video_scale(resolution, where: str) -> float:
  """Scale of a QTM video mode ("540p") relative to the 1080p sensor mode; 1 when unstated."""
  if resolution in (None, "", "N/A"):
    return 1.0
  match = re.fullmatch(r"\s*(\d+)\s*p?\s*", resolution)
  if not match or int(match.group(1)) <= 0:
    raise CalibrationError(f"{where}: attribute 'video_resolution' is {resolution!r}, expected "
                           "e.g. '1080p' or '540p'")
  return int(match.group(1)) / QUALISYS_SENSOR_LINES


def _easymocap_folder(path) -> str:
  source = os.fspath(path)
  folder = source if os.path.isdir(path) else os.path.dirname(source)
  if not os.path.isdir(path) and os.path.basename(source).lower() not in EASYMOCAP_FILES:
    raise CalibrationError(f"{source}: expected an EasyMocap folder or its intri.yml / extri.yml")
  for name in EASYMOCAP_FILES:
    if not os.path.isfile(os.path.join(folder, name)):
      raise FileNotFoundError(f"EasyMocap calibration {os.path.join(folder, name)} does not "
                              f"exist (expected {' and '.join(EASYMOCAP_FILES)} side by side)")
  return folder


class _file_storage:
  """cv2.FileStorage opened for reading as a context manager; errors name the file."""

  def __init__(self, path: str):
    self.path = path

  def __enter__(self):
    try:
      self.storage = cv2.FileStorage(self.path, cv2.FILE_STORAGE_READ)
    except cv2.error as error:
      raise CalibrationError(f"{self.path}: not a readable OpenCV FileStorage YAML "
                             f"({str(error).strip().splitlines()[-1]})") from None
    if not self.storage.isOpened():
      raise CalibrationError(f"{self.path}: cannot be opened as an OpenCV FileStorage YAML")
    return self.storage

  def __exit__(self, *exc_info):
    self.storage.release()
    return False


def _yml_names(storage, source: str) -> list[str]:
  node = storage.getNode("names")
  if node.empty() or not node.isSeq():
    raise CalibrationError(f"{source}: missing field 'names' (a list of camera names)")
  names = [node.at(index).string() if node.at(index).isString() else
           str(int(node.at(index).real())) for index in range(node.size())]
  if not names:
    raise CalibrationError(f"{source}: field 'names' is empty, expected camera names")
  return names


def _yml_matrix(storage, field: str, shape, source: str) -> np.ndarray:
  node = storage.getNode(field)
  if node.empty():
    raise CalibrationError(f"{source}: missing field {field!r}")
  matrix = node.mat()
  if matrix is None:
    raise CalibrationError(f"{source}: field {field!r} is not an OpenCV matrix (!!opencv-matrix)")
  matrix = np.asarray(matrix, np.float64)
  return check_field(matrix, shape or matrix.shape, field, source)


def _yml_rotation(storage, name: str, source: str) -> np.ndarray:
  has_matrix = not storage.getNode(f"Rot_{name}").empty()
  has_vector = not storage.getNode(f"R_{name}").empty()
  if not (has_matrix or has_vector):
    raise CalibrationError(f"{source}: missing field 'Rot_{name}' or 'R_{name}'")
  vector = (_rodrigues(_yml_matrix(storage, f"R_{name}", (3,), source)) if has_vector
            else None)
  if not has_matrix:
    return vector
  R = _yml_matrix(storage, f"Rot_{name}", (3, 3), source)
  if vector is not None and np.abs(vector - R).max() > 1e-6:
    raise CalibrationError(f"{source}: fields 'R_{name}' (Rodrigues) and 'Rot_{name}' are "
                           f"different rotations (max difference {np.abs(vector - R).max():.2e}), "
                           "expected the same")
  return R


def _yml_write_names(storage, names: Sequence[str]) -> None:
  storage.startWriteStruct("names", cv2.FileNode_SEQ)
  for name in names:
    storage.write("", name)
  storage.endWriteStruct()


def _write_storage_atomic(path: str, fill: Callable) -> None:
  """Writes a FileStorage YAML through a temporary .yml beside `path` (`files.atomic_path`)."""
  with files.atomic_path(path, suffix=".yml") as temporary:
    storage = cv2.FileStorage(temporary, cv2.FILE_STORAGE_WRITE)
    try:
      fill(storage)
    finally:
      storage.release()
