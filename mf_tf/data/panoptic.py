"""CMU Panoptic Studio sequences: 3D body poses (coco19), the rig and image paths.

Sequence layout (as distributed by the Panoptic toolbox):

    <seq>/calibration_<seq>.json                        all cameras of the dome (centimetres)
    <seq>/hdPose3d_stage1_coco19/body3DScene_<frame:08d>.json
    <seq>/hdImgs/<cam>/<cam>_<frame:08d>.jpg             HD frames, camera names "00_03"
    <seq>/vgaImgs/<cam>/<cam>_<frame:08d>.jpg            VGA frames, camera names "01_01"

A body3DScene file holds {"bodies": [{"id": int, "joints19": [x, y, z, c] * 19}, ...]} in
centimetres, coco19 joint order, confidence c = -1 where the joint was not reconstructed. The
reader returns one row per (frame, body), converts to millimetres and marks missing joints NaN.
Cameras are read by `mf_tf.geometry.calibration.read_panoptic`.
"""

from __future__ import annotations

import glob
import json
import os
import re
from typing import Sequence

import numpy as np

from mf_tf.data import joints as joints_lib
from mf_tf.geometry import calibration

POSE_DIR = "hdPose3d_stage1_coco19"
CM_TO_MM = 10.0
_SCENE_PATTERN = re.compile(r"body3DScene_(\d+)\.json$")
_IMAGE_DIRS = {"hd": "hdImgs", "vga": "vgaImgs", "kinect-color": "kinectImgs"}


def read_body_scene(path: str, num_joints: int = 19) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Reads one body3DScene JSON file.

  Args:
    path: body3DScene_<frame>.json.
    num_joints: Joints per body (19 for coco19).

  Returns:
    joints3d: [M, J, 3] float64 millimetres, NaN where confidence < 0 (M bodies, may be 0).
    confidence: [M, J] float64, -1 where missing.
    body_ids: [M] int64.
  """
  try:
    with open(path) as f:
      scene = json.load(f)
  except FileNotFoundError:
    raise FileNotFoundError(f"Panoptic pose file {path} not found") from None
  except json.JSONDecodeError as error:
    raise ValueError(f"Panoptic pose file {path} is not valid JSON: {error}") from None
  bodies = scene.get("bodies") if isinstance(scene, dict) else None
  if not isinstance(bodies, list):
    raise ValueError(f"Panoptic pose file {path}: expected a top-level 'bodies' list")
  key = f"joints{num_joints}"
  points, ids = [], []
  for index, body in enumerate(bodies):
    values = np.asarray(body.get(key, []), np.float64)
    if values.size != 4 * num_joints:
      raise ValueError(
          f"Panoptic pose file {path}: body {index} field {key!r} has {values.size} values, "
          f"expected {4 * num_joints} ({num_joints} joints x [x, y, z, confidence])")
    points.append(values.reshape(num_joints, 4))
    ids.append(int(body.get("id", index)))
  if not points:
    return np.zeros((0, num_joints, 3)), np.zeros((0, num_joints)), np.zeros((0,), np.int64)
  points = np.stack(points)
  confidence = points[..., 3]
  joints3d = points[..., :3] * CM_TO_MM
  joints3d[confidence < 0] = np.nan
  return joints3d, confidence, np.asarray(ids, np.int64)


def image_path(image_root: str, camera_name: str, frame_id: int) -> str:
  """<image_root>/<cam>/<cam>_<frame:08d>.jpg."""
  return os.path.join(image_root, camera_name, f"{camera_name}_{frame_id:08d}.jpg")


def read_panoptic_sequence(seq_dir: str, camera_type: str = "hd",
                           camera_names: Sequence[str] | None = None, *,
                           calibration_path: str | None = None, image_root: str | None = None,
                           frame_ids: Sequence[int] | None = None) -> dict:
  """Reads a Panoptic sequence's 3D bodies, cameras and per-view image paths.

  Args:
    seq_dir: Sequence directory (holds hdPose3d_stage1_coco19/).
    camera_type: "hd", "vga" or "kinect-color": which cameras of the calibration to use.
    camera_names: Camera names in rig order (e.g. ["00_03", "00_06"]); None: all of that type.
    calibration_path: Calibration JSON; default <seq_dir>/calibration_<basename(seq_dir)>.json
      (sequences recorded on the same day share one calibration).
    image_root: Folder holding <cam>/<cam>_<frame:08d>.jpg; default <seq_dir>/hdImgs (or
      vgaImgs / kinectImgs for the other camera types).
    frame_ids: Frames to read; None reads every body3DScene file.

  Returns:
    dict with
      rig: mf_tf.geometry.rig.Rig of the selected cameras (millimetres).
      joints3d: [N, 19, 3] float64 world millimetres, coco19 order, NaN where missing.
      confidence: [N, 19] float64 reconstruction confidence, -1 where missing.
      frame_ids: [N] int64 frame number of each row.
      body_ids: [N] int64 body id within its frame (one row per body and frame).
      image_paths: [N, V] str, the frame's image of each camera (not checked for existence).
      joint_set: "coco19".
  """
  if camera_type not in _IMAGE_DIRS:
    raise ValueError(f"camera_type {camera_type!r}, expected one of {sorted(_IMAGE_DIRS)}")
  seq_dir = os.path.abspath(seq_dir)
  if calibration_path is None:
    calibration_path = os.path.join(seq_dir, f"calibration_{os.path.basename(seq_dir)}.json")
  if not os.path.isfile(calibration_path):
    raise FileNotFoundError(
        f"Panoptic calibration {calibration_path} not found (pass calibration_path= for sequences "
        "sharing another sequence's calibration)")
  rig = calibration.read_panoptic(calibration_path, camera_type=camera_type, names=camera_names)
  pose_dir = os.path.join(seq_dir, POSE_DIR)
  if frame_ids is None:
    if not os.path.isdir(pose_dir):
      raise FileNotFoundError(f"Panoptic pose folder {pose_dir} not found: expected "
                              f"<seq>/{POSE_DIR}/body3DScene_<frame>.json files")
    paths = {}
    for path in glob.glob(os.path.join(pose_dir, "body3DScene_*.json")):
      match = _SCENE_PATTERN.search(os.path.basename(path))
      if match:
        paths[int(match.group(1))] = path
    if not paths:
      raise FileNotFoundError(f"Panoptic pose folder {pose_dir} holds no body3DScene_*.json")
  else:
    paths = {int(f): os.path.join(pose_dir, f"body3DScene_{int(f):08d}.json") for f in frame_ids}
  num_joints = joints_lib.get_joint_set("coco19").num_joints
  rows_joints, rows_confidence, rows_frames, rows_bodies = [], [], [], []
  for frame in sorted(paths):
    joints3d, confidence, body_ids = read_body_scene(paths[frame], num_joints)
    rows_joints.append(joints3d)
    rows_confidence.append(confidence)
    rows_frames.append(np.full(len(body_ids), frame, np.int64))
    rows_bodies.append(body_ids)
  frames = np.concatenate(rows_frames)
  if image_root is None:
    image_root = os.path.join(seq_dir, _IMAGE_DIRS[camera_type])
  names = [camera.name for camera in rig.cameras]
  image_paths = np.asarray([[image_path(image_root, name, int(f)) for name in names]
                            for f in frames], dtype=str).reshape(len(frames), len(names))
  return {
      "rig": rig,
      "joints3d": np.concatenate(rows_joints).reshape(-1, num_joints, 3),
      "confidence": np.concatenate(rows_confidence).reshape(-1, num_joints),
      "frame_ids": frames,
      "body_ids": np.concatenate(rows_bodies),
      "image_paths": image_paths,
      "joint_set": "coco19",
  }
