"""Motion files other people's tools read: OpenSim/Pose2Sim TRC, C3D (through ezc3d), plain CSV.

Conventions:
  * Positions are world millimetres, [T, J, 3] (frames, joints, xyz), NaN where a joint is missing
    (a joint with any NaN coordinate is missing as a whole in every file written here).
  * Every writer is atomic: the file is written under a temporary name in the destination folder
    and renamed into place, so a reader sees the old file or the new one, never a partial one.
  * Missing joints: TRC and CSV leave the fields empty (OpenSim reads an empty TRC field as NaN,
    and Pose2Sim writes its gaps that way); C3D writes the point with residual -1, the C3D
    convention for "not reconstructed in this frame".

TRC layout (tab separated; the five header lines as Pose2Sim's `make_trc` writes them, then the
blank line OpenSim's TRCFileAdapter writes before the data; OpenSim's reader skips blank lines
there but ends the data at the first blank line after it, so the data rows have none):

    PathFileType  4  (X/Y/Z)  <file name>
    DataRate  CameraRate  NumFrames  NumMarkers  Units  OrigDataRate  OrigDataStartFrame
        OrigNumFrames   (one line)
    <values of the line above>
    Frame#  Time  Name1  ""  ""  Name2  ""  ""  ...
    ""  ""  X1  Y1  Z1  X2  Y2  Z2  ...
    <empty line>
    frame  time  x  y  z  x  y  z  ...

OpenSim is Y-up. `write_trc(..., up=u)` turns the world by the smallest rotation that takes the
unit vector u to +Y (`rotation_to_axis`), a proper rotation, so the frame stays right-handed.
"""

from __future__ import annotations

import csv
import io
import math
import os

import numpy as np

from mf_tf import files


TRC_UNITS_TO_MM = {"m": 1000.0, "cm": 10.0, "mm": 1.0}
# Metres with 6 decimals (1 micrometre), millimetres with 4: far below any reconstruction's
# error; the rounding is what bounds a round trip (0.5 and 0.05 micrometre).
_TRC_DECIMALS = {"m": 6, "mm": 4}
_CSV_DECIMALS = 4  # 0.1 micrometre in millimetres: a CSV round trip is within 5e-5 mm.


def rotation_to_axis(up, axis) -> np.ndarray:
  """The smallest rotation that takes the direction `up` onto the direction `axis`.

  Rodrigues' formula for two unit vectors a, b with v = a x b, c = a . b:
  R = I + [v]x + [v]x^2 / (1 + c). For a = -b (c = -1) it is the half turn about the axis
  perpendicular to a that is closest to the coordinate axis least aligned with a.

  Args:
    up: [3] direction (any non-zero length), e.g. the world's up axis.
    axis: [3] target direction, e.g. (0, 1, 0) for OpenSim's +Y.

  Returns:
    [3, 3] rotation matrix R (det +1, right-handed frames stay right-handed) with R @ up/|up| =
    axis/|axis|; apply to points as `points @ R.T`.

  Raises:
    ValueError: if either vector is not 3 finite numbers of non-zero length.
  """
  vectors = []
  for name, value in (("up", up), ("axis", axis)):
    vector = np.asarray(value, dtype=np.float64)
    if vector.shape != (3,) or not np.all(np.isfinite(vector)) or np.linalg.norm(vector) < 1e-12:
      raise ValueError(f"{name} must be 3 finite numbers of non-zero length, got {value!r}")
    vectors.append(vector / np.linalg.norm(vector))
  a, b = vectors
  v, c = np.cross(a, b), float(np.dot(a, b))
  if c < -1.0 + 1e-9:  # Opposite directions: a half turn about any axis perpendicular to a.
    helper = np.eye(3)[np.argmin(np.abs(a))]
    n = np.cross(a, helper)
    n /= np.linalg.norm(n)
    return 2.0 * np.outer(n, n) - np.eye(3)
  skew = np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])
  return np.eye(3) + skew + skew @ skew / (1.0 + c)


def _check_motion(positions_mm, joint_names, fps) -> tuple[np.ndarray, list[str]]:
  """Validates the common writer arguments; returns positions as float64 and names as strs."""
  positions = np.asarray(positions_mm, dtype=np.float64)
  if positions.ndim != 3 or positions.shape[2] != 3 or positions.shape[0] < 1:
    raise ValueError(
        f"positions_mm must be [T, J, 3] with T >= 1, got shape {positions.shape}")
  if np.any(np.isinf(positions)):
    raise ValueError("positions_mm contains infinite values; expected finite millimetres or NaN "
                     "for a missing joint")
  if isinstance(joint_names, str):
    raise ValueError(f"joint_names must be a sequence of J names, got the string {joint_names!r}")
  names = [str(name) for name in joint_names]
  if len(names) != positions.shape[1]:
    raise ValueError(f"{len(names)} joint_names {names} for {positions.shape[1]} joints in "
                     f"positions_mm of shape {positions.shape}; expected one name per joint")
  if len(set(names)) != len(names):
    raise ValueError(f"joint_names must be unique, got {names}")
  banned = "\t\r\n"  # Field and line separators of every format here.
  for name in names:
    if not name or name != name.strip() or any(ch in name for ch in banned):
      raise ValueError(f"joint name {name!r} must be non-empty, without surrounding spaces and "
                       f"without any of {banned!r}")
  if not isinstance(fps, (int, float, np.integer, np.floating)) or not math.isfinite(fps) \
      or fps <= 0:
    raise ValueError(f"fps must be a finite number > 0 frames per second, got {fps!r}")
  # A joint with one NaN coordinate is missing as a whole.
  positions = np.where(np.isnan(positions).any(axis=-1, keepdims=True), np.nan, positions)
  return positions, names


def _format_row(leading: list[str], values: np.ndarray, decimals: int) -> list[str]:
  """Text fields of one frame: `leading` then every value, '' for NaN."""
  return leading + ["" if math.isnan(v) else f"{v:.{decimals}f}" for v in values.tolist()]


def write_trc(path, positions_mm, joint_names, fps, *, first_frame: int = 1, units: str = "m",
              up=None) -> str:
  """Writes an OpenSim marker file (.trc) in the layout Pose2Sim writes.

  Frame numbers are first_frame, first_frame + 1, ...; Time = (Frame# - 1) / fps seconds, so
  frame 1 is at t = 0 and a clip cut from frame 101 of a recording keeps its recording time.

  Args:
    path: Destination .trc file; its folder is created if missing.
    positions_mm: [T, J, 3] world millimetres, NaN where a joint is missing (written as empty
      fields, which OpenSim reads as missing).
    joint_names: J marker names (no tabs or line breaks).
    fps: Frame rate in frames per second (> 0); DataRate, CameraRate and OrigDataRate.
    first_frame: Frame# of the first row (>= 1; TRC frame numbers are 1-based).
    units: "m" (what OpenSim expects, the default) or "mm".
    up: [3] the world's up direction, or None to write the world as given. When given, points are
      rotated by `rotation_to_axis(up, (0, 1, 0))` so that `up` becomes OpenSim's +Y (a proper
      rotation: the frame stays right-handed, heading is kept as far as the turn allows).

  Returns:
    `path`.

  Raises:
    ValueError: on a wrong shape, a names count that differs from J, fps <= 0, first_frame < 1,
      or units other than "m"/"mm".
  """
  positions, names = _check_motion(positions_mm, joint_names, fps)
  if units not in ("m", "mm"):
    raise ValueError(f"units must be 'm' (OpenSim) or 'mm', got {units!r}")
  if not isinstance(first_frame, (int, np.integer)) or first_frame < 1:
    raise ValueError(f"first_frame must be an integer >= 1 (TRC frames are 1-based), "
                     f"got {first_frame!r}")
  if up is not None:
    positions = positions @ rotation_to_axis(up, (0.0, 1.0, 0.0)).T
  values = positions / TRC_UNITS_TO_MM[units]
  num_frames, num_joints = positions.shape[:2]
  fps_text = f"{float(fps):g}"
  lines = [
      f"PathFileType\t4\t(X/Y/Z)\t{os.path.basename(os.fspath(path))}",
      "DataRate\tCameraRate\tNumFrames\tNumMarkers\tUnits\tOrigDataRate\tOrigDataStartFrame\t"
      "OrigNumFrames",
      "\t".join([fps_text, fps_text, str(num_frames), str(num_joints), units, fps_text,
                 str(int(first_frame)), str(num_frames)]),
      "Frame#\tTime\t" + "\t\t\t".join(names) + "\t\t\t",
      "\t\t" + "\t".join(f"X{i}\tY{i}\tZ{i}" for i in range(1, num_joints + 1)) + "\t",
      "",
  ]
  decimals = _TRC_DECIMALS[units]
  for t in range(num_frames):
    frame = int(first_frame) + t
    lines.append("\t".join(_format_row([str(frame), f"{(frame - 1) / fps:.6f}"],
                                       values[t].reshape(-1), decimals)))
  return files.write_atomic(path, "\n".join(lines) + "\n")


def _parse_float(text: str, where: str) -> float:
  """A TRC/CSV number: '' (and 'nan') is missing."""
  text = text.strip()
  if not text or text.lower() == "nan":
    return math.nan
  try:
    return float(text)
  except ValueError:
    raise ValueError(f"{where}: {text!r} is not a number; expected a number or an empty field")


def read_trc(path) -> dict:
  """Reads an OpenSim/Pose2Sim marker file (.trc).

  Tolerates CRLF line ends, trailing tabs, a blank line (or none) between the header and the
  data, and missing trailing fields; empty fields and 'NaN' are missing values.

  Args:
    path: A .trc file.

  Returns:
    dict with
      positions_mm: [T, J, 3] float64 millimetres (converted from the file's Units), NaN where
        missing.
      joint_names: list of J marker names.
      fps: DataRate in frames per second (float).
      units: the file's Units ("m", "mm" or "cm").
      frames: [T] int64 Frame# column.
      times_s: [T] float64 Time column in seconds.

  Raises:
    ValueError: naming the file and line when the header or a data row does not follow the format.
  """
  path = os.fspath(path)
  with open(path, "r", encoding="utf-8-sig", newline="") as stream:
    lines = [line.rstrip("\r\n") for line in stream.read().splitlines()]
  if len(lines) < 5 or not lines[0].startswith("PathFileType"):
    raise ValueError(f"{path}: not a TRC file; expected 'PathFileType' on line 1 and 5 header "
                     f"lines, got {lines[:1]!r} and {len(lines)} lines")
  keys = [k.strip() for k in lines[1].split("\t") if k.strip()]
  values = [v.strip() for v in lines[2].split("\t")]
  header = dict(zip(keys, values))
  for key in ("DataRate", "NumMarkers", "Units"):
    if key not in header:
      raise ValueError(f"{path}: header line 2 lacks {key!r}; got keys {keys}")
  units = header["Units"]
  if units not in TRC_UNITS_TO_MM:
    raise ValueError(f"{path}: Units {units!r}, expected one of {sorted(TRC_UNITS_TO_MM)}")
  fps = _parse_float(header["DataRate"], f"{path}: DataRate")
  if not fps > 0:
    raise ValueError(f"{path}: DataRate {header['DataRate']!r}, expected a rate > 0")
  name_fields = lines[3].split("\t")
  if [f.strip() for f in name_fields[:2]] != ["Frame#", "Time"]:
    raise ValueError(f"{path}: line 4 should start 'Frame#<tab>Time', got {lines[3][:40]!r}")
  names = [f.strip() for f in name_fields[2:] if f.strip()]
  num_markers = int(float(header["NumMarkers"]))
  if len(names) != num_markers:
    raise ValueError(f"{path}: NumMarkers is {num_markers} but line 4 names {len(names)} "
                     f"markers {names}")
  width = 2 + 3 * num_markers
  frames, times, rows = [], [], []
  for number, line in enumerate(lines[5:], start=6):
    if not line.strip():
      continue
    fields = line.split("\t")
    if len(fields) > width and any(f.strip() for f in fields[width:]):
      raise ValueError(f"{path}: line {number} has {len(fields)} fields, expected at most "
                       f"{width} (Frame#, Time, 3 per marker for {num_markers} markers)")
    fields = (fields + [""] * width)[:width]
    frames.append(int(_parse_float(fields[0], f"{path}: line {number} Frame#")))
    times.append(_parse_float(fields[1], f"{path}: line {number} Time"))
    rows.append([_parse_float(f, f"{path}: line {number}") for f in fields[2:]])
  if "NumFrames" in header and int(float(header["NumFrames"])) != len(rows):
    raise ValueError(f"{path}: NumFrames is {header['NumFrames']} but the file has {len(rows)} "
                     f"data rows")
  positions = np.asarray(rows, dtype=np.float64).reshape(len(rows), num_markers, 3)
  return {
      "positions_mm": positions * TRC_UNITS_TO_MM[units],
      "joint_names": names,
      "fps": float(fps),
      "units": units,
      "frames": np.asarray(frames, dtype=np.int64),
      "times_s": np.asarray(times, dtype=np.float64),
  }


def write_c3d(path, positions_mm, joint_names, fps, residuals=None) -> str:
  """Writes a C3D file through ezc3d: points in millimetres, float storage.

  POINT:UNITS is "mm", POINT:RATE `fps`, POINT:LABELS the joint names. A missing joint is written
  with NaN coordinates and residual -1 (the C3D convention for an invalid point).

  Args:
    path: Destination .c3d file; its folder is created if missing.
    positions_mm: [T, J, 3] world millimetres, NaN where a joint is missing.
    joint_names: J point labels.
    fps: Frame rate in frames per second (> 0).
    residuals: Optional [T, J] residuals in millimetres (>= 0, e.g. the mean reprojection ray
      distance); None writes 0 for every present point. The C3D format stores them in steps of
      |POINT:SCALE| (1 mm for float files), so they come back rounded.

  Returns:
    `path`.

  Raises:
    ValueError: on a wrong shape, a names count that differs from J, fps <= 0, or residuals of
      another shape or with negative values.
  """
  import ezc3d  # Imported here: the other formats must not need it.

  positions, names = _check_motion(positions_mm, joint_names, fps)
  num_frames, num_joints = positions.shape[:2]
  missing = np.isnan(positions[..., 0])
  if residuals is None:
    residual = np.zeros((num_frames, num_joints))
  else:
    residual = np.asarray(residuals, dtype=np.float64)
    if residual.shape != (num_frames, num_joints):
      raise ValueError(f"residuals must be [T, J] = {(num_frames, num_joints)}, got shape "
                       f"{residual.shape}")
    if np.any(residual[~missing] < 0) or not np.all(np.isfinite(residual[~missing])):
      raise ValueError("residuals of present joints must be finite and >= 0 mm; missing joints "
                       "get -1 from their NaN positions")
  residual = np.where(missing, -1.0, residual)
  c3d = ezc3d.c3d()
  c3d["parameters"]["POINT"]["RATE"]["value"] = np.array([float(fps)])
  c3d["parameters"]["POINT"]["UNITS"]["value"] = ["mm"]
  c3d["parameters"]["POINT"]["LABELS"]["value"] = tuple(names)
  points = np.ones((4, num_joints, num_frames))
  points[:3] = np.transpose(positions, (2, 1, 0))
  c3d["data"]["points"] = points
  c3d["data"]["meta_points"] = {"residuals": residual.T[np.newaxis]}
  path = os.fspath(path)
  with files.atomic_path(path, suffix=".tmp.c3d") as temporary:  # ezc3d writes by file name.
    c3d.write(temporary)
  return path


def read_c3d(path) -> dict:
  """Reads the points of a C3D file through ezc3d.

  Args:
    path: A .c3d file.

  Returns:
    dict with
      positions_mm: [T, J, 3] float64 millimetres (converted from POINT:UNITS "m", "cm" or
        "mm"), NaN where the residual is negative (invalid point).
      joint_names: list of J POINT:LABELS.
      fps: POINT:RATE in frames per second.
      units: the file's POINT:UNITS.
      residuals: [T, J] float64, -1 where invalid.
      frames: [T] int64 1-based frame numbers from the header's first frame.

  Raises:
    ValueError: if the file's POINT:UNITS is not a length unit this reader knows.
  """
  import ezc3d

  path = os.fspath(path)
  c3d = ezc3d.c3d(path)
  point = c3d["parameters"]["POINT"]
  units_value = point.get("UNITS", {}).get("value", [])
  units = str(units_value[0]).strip() if len(units_value) else "mm"
  if units not in TRC_UNITS_TO_MM:
    raise ValueError(f"{path}: POINT:UNITS {units!r}, expected one of {sorted(TRC_UNITS_TO_MM)}")
  points = np.asarray(c3d["data"]["points"], dtype=np.float64)  # [4, J, T]
  residuals = np.asarray(c3d["data"]["meta_points"]["residuals"], dtype=np.float64)[0].T
  positions = np.transpose(points[:3], (2, 1, 0)) * TRC_UNITS_TO_MM[units]
  positions[residuals < 0] = np.nan  # ezc3d 1.7 does this too; the reader does not rely on it.
  first = int(c3d["header"]["points"]["first_frame"]) + 1  # ezc3d counts from 0, C3D from 1.
  return {
      "positions_mm": positions,
      "joint_names": [str(label).strip() for label in point["LABELS"]["value"]],
      "fps": float(np.asarray(point["RATE"]["value"]).reshape(-1)[0]),
      "units": units,
      "residuals": residuals,
      "frames": np.arange(first, first + positions.shape[0], dtype=np.int64),
  }


def write_csv(path, positions_mm, joint_names, fps) -> str:
  """Writes one row per frame: frame, time_s, then <joint>_x_mm, <joint>_y_mm, <joint>_z_mm.

  Frames are numbered from 0 (the video frame index) and time_s = frame / fps. Missing joints are
  empty fields.

  Args:
    path: Destination .csv file; its folder is created if missing.
    positions_mm: [T, J, 3] world millimetres, NaN where a joint is missing.
    joint_names: J joint names.
    fps: Frame rate in frames per second (> 0).

  Returns:
    `path`.

  Raises:
    ValueError: on a wrong shape, a names count that differs from J or fps <= 0.
  """
  positions, names = _check_motion(positions_mm, joint_names, fps)
  text = io.StringIO()
  writer = csv.writer(text, lineterminator="\n")
  writer.writerow(["frame", "time_s"] + [f"{name}_{axis}_mm" for name in names
                                         for axis in "xyz"])
  for t in range(positions.shape[0]):
    writer.writerow(_format_row([str(t), f"{t / fps:.6f}"], positions[t].reshape(-1),
                                _CSV_DECIMALS))
  return files.write_atomic(path, text.getvalue())


def read_csv(path) -> dict:
  """Reads a file in `write_csv`'s layout with the csv module.

  Args:
    path: A .csv file with columns frame, time_s, <joint>_{x,y,z}_mm.

  Returns:
    dict with positions_mm [T, J, 3] (NaN where empty), joint_names, frames [T] int64, times_s [T]
    and fps (frames per second from the time column; None for a single frame).

  Raises:
    ValueError: naming the file, column or line that does not follow the layout.
  """
  path = os.fspath(path)
  with open(path, "r", encoding="utf-8-sig", newline="") as stream:
    rows = list(csv.reader(stream))
  if not rows or rows[0][:2] != ["frame", "time_s"] or (len(rows[0]) - 2) % 3:
    raise ValueError(f"{path}: header {rows[:1]!r}, expected 'frame,time_s' then three "
                     f"<joint>_<axis>_mm columns per joint")
  columns = rows[0][2:]
  names = []
  for j in range(len(columns) // 3):
    triple = columns[3 * j:3 * j + 3]
    name = triple[0][:-len("_x_mm")]
    if triple != [f"{name}_{axis}_mm" for axis in "xyz"]:
      raise ValueError(f"{path}: columns {triple}, expected <joint>_x_mm, <joint>_y_mm, "
                       f"<joint>_z_mm")
    names.append(name)
  frames, times, values = [], [], []
  for number, row in enumerate(rows[1:], start=2):
    if not any(field.strip() for field in row):
      continue
    if len(row) != len(rows[0]):
      raise ValueError(f"{path}: line {number} has {len(row)} fields, expected {len(rows[0])}")
    frames.append(int(_parse_float(row[0], f"{path}: line {number} frame")))
    times.append(_parse_float(row[1], f"{path}: line {number} time_s"))
    values.append([_parse_float(f, f"{path}: line {number}") for f in row[2:]])
  times = np.asarray(times, dtype=np.float64)
  fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] \
      else None
  return {
      "positions_mm": np.asarray(values, dtype=np.float64).reshape(len(values), len(names), 3),
      "joint_names": names,
      "fps": fps,
      "frames": np.asarray(frames, dtype=np.int64),
      "times_s": times,
  }
