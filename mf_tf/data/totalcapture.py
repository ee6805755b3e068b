"""Total Capture: Vicon ground-truth joint positions and the camera rig.

Files of one subject / action (Trumble et al., BMVC 2017, as distributed):

    calibration.cal          all cameras; read by `mf_tf.geometry.calibration.read_totalcapture`
    gt_skel_gbl_pos.txt      line 1: the joint names, whitespace separated (21 Vicon skeleton
                             joints: Hips, Spine, Spine1, ..., LeftFoot); then one line per frame
                             with 3 floats (x y z, INCHES, world frame) per joint in header order
                             (joints separated by tabs, coordinates by spaces)

The reader converts inches to millimetres and maps the Vicon skeleton to the "totalcapture16"
joint set with `VICON_TO_TOTALCAPTURE16`, a documented choice where the skeletons differ:
  spine <- Spine1 (the h36m-style spine marker lies about half way between pelvis and neck; the
  Vicon chain is Hips, Spine, Spine1, Spine2, Spine3, Neck); shoulders <- *Arm (the shoulder
  joint proper; *Shoulder is the clavicle); wrists <- *Hand; head <- Head.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from mf_tf.data import joints as joints_lib
from mf_tf.geometry import calibration

INCH_TO_MM = 25.4

# totalcapture16 joint -> Vicon skeleton joint name in gt_skel_gbl_pos.txt.
VICON_TO_TOTALCAPTURE16 = {
    "pelvis": "Hips",
    "rhip": "RightUpLeg",
    "rknee": "RightLeg",
    "rankle": "RightFoot",
    "lhip": "LeftUpLeg",
    "lknee": "LeftLeg",
    "lankle": "LeftFoot",
    "spine": "Spine1",
    "neck": "Neck",
    "head": "Head",
    "lshoulder": "LeftArm",
    "lelbow": "LeftForeArm",
    "lwrist": "LeftHand",
    "rshoulder": "RightArm",
    "relbow": "RightForeArm",
    "rwrist": "RightHand",
}


def read_positions(path: str) -> tuple[tuple[str, ...], np.ndarray]:
  """Reads gt_skel_gbl_pos.txt.

  Args:
    path: The positions file.

  Returns:
    names: joint names from the header, in file order.
    positions: [N, K, 3] float64 world millimetres (converted from inches).

  Raises:
    FileNotFoundError: the file is missing.
    ValueError: empty file, or a line without exactly 3 finite floats per header joint (the
      message names the file, the line number and what was expected).
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"Total Capture positions file {path} not found "
                            "(expected gt_skel_gbl_pos.txt)")
  with open(path) as f:
    header = f.readline().split()
    if not header:
      raise ValueError(f"{path}: empty header, expected the joint names on line 1")
    expected = 3 * len(header)
    rows = []
    for line_number, line in enumerate(f, start=2):
      if not line.strip():
        continue
      try:
        values = [float(v) for v in line.split()]
      except ValueError:
        raise ValueError(
            f"{path} line {line_number}: non-numeric value; expected {expected} floats "
            f"(x y z in inches for each of the {len(header)} joints {header})") from None
      if len(values) != expected or not np.all(np.isfinite(values)):
        raise ValueError(
            f"{path} line {line_number}: {len(values)} values, expected {expected} finite "
            f"floats (x y z in inches for each of the {len(header)} joints)")
      rows.append(values)
  if not rows:
    raise ValueError(f"{path}: no frames after the header line")
  return tuple(header), np.asarray(rows, np.float64).reshape(len(rows), len(header), 3) * INCH_TO_MM


def to_totalcapture16(names: Sequence[str], positions: np.ndarray, path: str = "") -> np.ndarray:
  """[N, K, 3] Vicon positions (header order `names`) -> [N, 16, 3] totalcapture16 order."""
  joint_set = joints_lib.get_joint_set("totalcapture16")
  missing = sorted(set(VICON_TO_TOTALCAPTURE16.values()) - set(names))
  if missing:
    raise ValueError(
        f"{path or 'positions'}: header lacks Vicon joints {missing} needed for totalcapture16; "
        f"header has {list(names)}")
  order = [list(names).index(VICON_TO_TOTALCAPTURE16[joint]) for joint in joint_set.names]
  return positions[:, order, :]


def read_totalcapture_sequence(calibration_path: str, positions_path: str,
                               camera_names: Sequence[str] | None = None) -> dict:
  """Reads a Total Capture sequence: rig and 3D joints.

  Args:
    calibration_path: calibration.cal.
    positions_path: gt_skel_gbl_pos.txt of the subject / action.
    camera_names: Camera names in rig order (as named by the calibration reader); None: all.

  Returns:
    dict with
      rig: mf_tf.geometry.rig.Rig (millimetres).
      joints3d: [N, 16, 3] float64 world millimetres, totalcapture16 order.
      frame_ids: [N] int64 frame numbers (0-based line index after the header).
      vicon_names: tuple of the file's joint names; vicon_joints3d: [N, K, 3] all of them, mm.
      joint_set: "totalcapture16".
  """
  if not os.path.isfile(calibration_path):
    raise FileNotFoundError(f"Total Capture calibration {calibration_path} not found "
                            "(expected calibration.cal)")
  rig = calibration.read_totalcapture(calibration_path)
  if camera_names is not None:
    by_name = {camera.name: i for i, camera in enumerate(rig.cameras)}
    unknown = [name for name in camera_names if name not in by_name]
    if unknown:
      raise ValueError(f"{calibration_path}: cameras {unknown} not found; it has "
                       f"{list(by_name)}")
    rig = rig.subset([by_name[name] for name in camera_names], name=rig.name)
  names, positions = read_positions(positions_path)
  return {
      "rig": rig,
      "joints3d": to_totalcapture16(names, positions, positions_path),
      "frame_ids": np.arange(len(positions), dtype=np.int64),
      "vicon_names": names,
      "vicon_joints3d": positions,
      "joint_set": "totalcapture16",
  }
