"""Human3.6M in the CrossView / H36M-Toolbox annotation layout, read from a safe format.

The original annotation files (h36m_train.pkl, h36m_validation.pkl of H36M-Toolbox, used by
CrossView, Qiu et al. 2019) are pickled lists with one dict per image:

    image        "s_01_act_02_subact_01_ca_01/s_01_act_02_subact_01_ca_01_000001.jpg"
    joints_2d    [17, 2] image pixels            joints_3d   [17, 3] world millimetres
    joints_vis   [17, 3] (1 = labelled)          joints_3d_camera [17, 3] (optional)
    center (2,), scale (2,) or scalar, box [4] (optional)
    subject, action, subaction, camera_id (0..3), image_id, video_id (ints)
    camera       {R [3,3], T [3,1] camera centre in mm, fx, fy, cx, cy, k [3,1], p [2,1]}

with x_cam = R (X - T) and Brown distortion (k1, k2, k3 radial; p1, p2 tangential, the OpenCV
order). Unpickling runs arbitrary code, so mf_tf never loads a pickle at read time: the one-time
command `python -m mf_tf.main --mode=convert --config.convert.input=FILE.pkl
--config.convert.output=DIR --config.convert.trust_pickle=True` (mf_tf/data/convert.py; the
explicit trust is required) writes the safe layout read here:

    DIR/manifest.json      {"format": "mf_tf.h36m_annotations", "version": 1, "num_items": M, ...}
    DIR/annotations.npz    arrays over the M items (numbers and fixed-width strings only; read
                           with allow_pickle=False)
    DIR/cameras.json       {"S<subject>/<camera_id>": {R, T, fx, fy, cx, cy, k, p}}

Also reads the mmpose "body3d" preprocessed layout (npz with imgname, S [camera-frame metres],
part [image px], center, scale) together with a cameras.json of the H36M camera parameters.
"""

from __future__ import annotations

import json
import os
import re
from typing import Sequence

import numpy as np

from mf_tf.geometry import calibration
from mf_tf.geometry.camera import Camera
from mf_tf.geometry.rig import Rig

FORMAT_NAME = "mf_tf.h36m_annotations"
FORMAT_VERSION = 1
NUM_JOINTS = 17
# Human3.6M camera serials in camera_id order 0..3 (the dataset's metadata order).
CAMERA_IDS = ("54138969", "55011271", "58860488", "60457274")
# (width, height) of each camera's images (the annotation camera blocks do not carry it).
IMAGE_SIZES = {"54138969": (1000, 1002), "55011271": (1000, 1000), "58860488": (1000, 1000),
               "60457274": (1000, 1002)}
# Per-item arrays in annotations.npz: name -> (dtype kind, per-item shape or None for scalar).
ANNOTATION_ARRAYS = {
    "image": ("U", None),
    "joints_2d": ("f", (NUM_JOINTS, 2)),
    "joints_3d": ("f", (NUM_JOINTS, 3)),
    "joints_vis": ("f", (NUM_JOINTS,)),
    "center": ("f", (2,)),
    "scale": ("f", (2,)),
    "subject": ("i", None),
    "action": ("i", None),
    "subaction": ("i", None),
    "camera_id": ("i", None),
    "image_id": ("i", None),
}
OPTIONAL_ARRAYS = {"joints_3d_camera": ("f", (NUM_JOINTS, 3)), "box": ("f", (4,)),
                   "video_id": ("i", None)}


def camera_key(subject: int, camera_id: int) -> str:
  return f"S{int(subject)}/{int(camera_id)}"


def camera_from_annotation(camera: dict, name: str) -> Camera:
  """Camera from an annotation's camera block (T = centre in mm, x_cam = R (X - T)).

  Args:
    camera: {R [3,3], T [3] or [3,1], fx, fy, cx, cy, k [3] (k1, k2, k3), p [2] (p1, p2)}.
    name: Camera name (a Human3.6M serial selects the image size when the block has no w, h).
  """
  try:
    R = np.asarray(camera["R"], np.float64).reshape(3, 3)
    T = np.asarray(camera["T"], np.float64).reshape(3)
    fx, fy, cx, cy = (float(np.ravel(camera[k])[0]) for k in ("fx", "fy", "cx", "cy"))
    k = np.asarray(camera["k"], np.float64).ravel()
    p = np.asarray(camera["p"], np.float64).ravel()
  except KeyError as error:
    raise ValueError(f"camera {name!r}: missing field {error}; expected R, T, fx, fy, cx, cy, "
                     "k, p") from None
  if k.size != 3 or p.size != 2:
    raise ValueError(f"camera {name!r}: k has {k.size} and p has {p.size} values, expected 3 "
                     "and 2")
  K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
  # The blocks carry no image size: optional "w", "h" fields, else the camera serial's size.
  default_width, default_height = IMAGE_SIZES.get(name, (1000, 1000))
  width = int(camera.get("w", default_width))
  height = int(camera.get("h", default_height))
  return Camera(name, K, R, -R @ T, [k[0], k[1], p[0], p[1], k[2]], width, height)


def _check(path, arrays, name, kind, shape, count):
  value = arrays[name]
  expected_shape = (count,) if shape is None else (count,) + tuple(shape)
  if value.shape != expected_shape or (kind == "f" and value.dtype.kind not in "fi") or (
      kind == "i" and value.dtype.kind not in "iu") or (kind == "U" and value.dtype.kind != "U"):
    raise ValueError(f"{path}: array {name!r} has shape {value.shape} dtype {value.dtype}, "
                     f"expected shape {expected_shape} of kind {kind!r}")


def read_h36m_annotations(data_dir: str) -> dict:
  """Reads a converted annotation directory (see the module docstring).

  Returns:
    dict of numpy arrays over the M items (ANNOTATION_ARRAYS and any OPTIONAL_ARRAYS present)
    plus "cameras": {"S<subject>/<camera_id>": Camera}.

  Raises:
    FileNotFoundError: a file of the layout is missing (the message names it).
    ValueError: wrong format marker, array shapes, or a camera missing for an item.
  """
  paths = {name: os.path.join(data_dir, name)
           for name in ("manifest.json", "annotations.npz", "cameras.json")}
  for name, path in paths.items():
    if not os.path.isfile(path):
      raise FileNotFoundError(
          f"{path} not found: expected a directory written by `python -m mf_tf.main "
          "--mode=convert --config.convert.input=FILE.pkl --config.convert.trust_pickle=True` "
          "(manifest.json, annotations.npz, "
          "cameras.json)")
  with open(paths["manifest.json"]) as f:
    manifest = json.load(f)
  if manifest.get("format") != FORMAT_NAME or manifest.get("version") != FORMAT_VERSION:
    raise ValueError(f"{paths['manifest.json']}: format {manifest.get('format')!r} version "
                     f"{manifest.get('version')!r}, expected {FORMAT_NAME!r} {FORMAT_VERSION}")
  with np.load(paths["annotations.npz"], allow_pickle=False) as npz:
    arrays = {name: npz[name] for name in npz.files}
  count = int(manifest["num_items"])
  for name, (kind, shape) in ANNOTATION_ARRAYS.items():
    if name not in arrays:
      raise ValueError(f"{paths['annotations.npz']}: array {name!r} missing; expected "
                       f"{sorted(ANNOTATION_ARRAYS)}")
    _check(paths["annotations.npz"], arrays, name, kind, shape, count)
  for name, (kind, shape) in OPTIONAL_ARRAYS.items():
    if name in arrays:
      _check(paths["annotations.npz"], arrays, name, kind, shape, count)
  with open(paths["cameras.json"]) as f:
    camera_blocks = json.load(f)
  cameras = {key: camera_from_annotation(block, CAMERA_IDS[int(key.split("/")[1])]
                                         if int(key.split("/")[1]) < len(CAMERA_IDS) else key)
             for key, block in camera_blocks.items()}
  keys = {camera_key(s, c) for s, c in zip(arrays["subject"], arrays["camera_id"])}
  missing = sorted(keys - set(cameras))
  if missing:
    raise ValueError(f"{paths['cameras.json']}: no camera for {missing}")
  arrays["cameras"] = cameras
  return arrays


def read_h36m_multiview(data_dir: str, subject: int, actions: Sequence[int] | None = None,
                        image_root: str = "") -> dict:
  """Groups a subject's annotated images into synchronized 4-view frames.

  A frame is (action, subaction, image_id) seen by every camera_id 0..3; incomplete groups are
  dropped (as CrossView does).

  Args:
    data_dir: Converted annotation directory.
    subject: Subject number (e.g. 9).
    actions: Action numbers to keep (2..16); None keeps all.
    image_root: Prefix joined to the stored relative image paths.

  Returns:
    dict with
      rig: Rig "h36m_S<subject>" of the subject's 4 cameras (named by serial, camera_id order).
      joints3d: [N, 17, 3] float64 world millimetres (h36m17 order).
      joints2d: [N, 4, 17, 2] float64 image pixels.
      visibility: [N, 4, 17] float64 annotation flags.
      image_paths: [N, 4] str.
      action, subaction, image_id: [N] int64.
      joint_set: "h36m17".
  """
  data = read_h36m_annotations(data_dir)
  keep = data["subject"] == int(subject)
  if actions is not None:
    keep &= np.isin(data["action"], np.asarray(list(actions)))
  if not np.any(keep):
    raise ValueError(f"{data_dir}: no items for subject {subject} and actions {actions}; "
                     f"subjects present: {sorted(set(data['subject'].tolist()))}")
  num_cameras = len(CAMERA_IDS)
  groups: dict[tuple[int, int, int], list[int]] = {}
  for item in np.flatnonzero(keep):
    key = (int(data["action"][item]), int(data["subaction"][item]), int(data["image_id"][item]))
    slots = groups.setdefault(key, [-1] * num_cameras)
    camera_id = int(data["camera_id"][item])
    if not 0 <= camera_id < num_cameras:
      raise ValueError(f"{data_dir}: item {item} has camera_id {camera_id}, expected 0..3")
    slots[camera_id] = item
  frames = sorted(key for key, slots in groups.items() if min(slots) >= 0)
  if not frames:
    raise ValueError(f"{data_dir}: subject {subject} has no frame seen by all {num_cameras} "
                     "cameras")
  index = np.asarray([groups[key] for key in frames], np.int64)  # [N, 4]
  rig = Rig(f"h36m_S{int(subject)}",
            tuple(data["cameras"][camera_key(subject, c)] for c in range(num_cameras)))
  return {
      "rig": rig,
      "joints3d": data["joints_3d"][index[:, 0]].astype(np.float64),
      "joints2d": data["joints_2d"][index].astype(np.float64),
      "visibility": data["joints_vis"][index].astype(np.float64),
      "image_paths": np.vectorize(lambda p: os.path.join(image_root, p) if image_root else p,
                                  otypes=[str])(data["image"][index]),
      "action": np.asarray([k[0] for k in frames], np.int64),
      "subaction": np.asarray([k[1] for k in frames], np.int64),
      "image_id": np.asarray([k[2] for k in frames], np.int64),
      "joint_set": "h36m17",
  }


_BODY3D_NAME = re.compile(r"^(S\d+)/[^/.]+\.(\d+)/")


def read_h36m_body3d(npz_path: str, cameras_path: str) -> dict:
  """Reads the mmpose "body3d" H36M layout (camera-frame 3D in metres) into world millimetres.

  Args:
    npz_path: npz with imgname [M] ("S1/S1_Directions_1.54138969/..._000001.jpg"), S [M, 17, 4]
      (x, y, z in the camera frame, metres; visibility), part [M, 17, 3] (u, v image pixels;
      visibility), center [M, 2], scale [M].
    cameras_path: H36M cameras JSON ({"S1/54138969": {R, T (centre, metres), f, c, k, p, w,
      h}}), read with `mf_tf.geometry.calibration.read_h36m`.

  Returns:
    dict with cameras (list of M Camera), joints3d [M, 17, 3] world mm, joints3d_camera
    [M, 17, 3] camera-frame mm, joints2d [M, 17, 2] image px, visibility [M, 17], image_names.
  """
  if not os.path.isfile(npz_path):
    raise FileNotFoundError(f"H36M body3d file {npz_path} not found")
  with np.load(npz_path, allow_pickle=False) as npz:
    missing = sorted({"imgname", "S", "part"} - set(npz.files))
    if missing:
      raise ValueError(f"{npz_path}: arrays {missing} missing; expected imgname, S, part")
    names, points, parts = npz["imgname"], npz["S"], npz["part"]
  if points.shape[1:] != (NUM_JOINTS, 4) or parts.shape[1:] != (NUM_JOINTS, 3):
    raise ValueError(f"{npz_path}: S {points.shape} and part {parts.shape}, expected "
                     f"[M, {NUM_JOINTS}, 4] and [M, {NUM_JOINTS}, 3]")
  cameras, subject_rigs = [], {}
  for name in names:
    match = _BODY3D_NAME.match(str(name))
    if match is None:
      raise ValueError(f"{npz_path}: image name {name!r}, expected 'S<k>/<action>.<camera>/...'")
    subject, serial = match.groups()
    if subject not in subject_rigs:
      subject_rigs[subject] = calibration.read_h36m(cameras_path, subject=subject)
    by_name = {c.name: c for c in subject_rigs[subject].cameras}
    camera = by_name.get(serial) or by_name.get(f"{subject}/{serial}")
    if camera is None:
      raise ValueError(f"{cameras_path}: no camera {serial!r} for {subject}; has {list(by_name)}")
    cameras.append(camera)
  joints_camera = points[..., :3] * 1000.0
  joints_world = np.stack([(x - c.t) @ c.R for x, c in zip(joints_camera, cameras)])
  return {
      "cameras": cameras,
      "joints3d": joints_world,
      "joints3d_camera": joints_camera,
      "joints2d": parts[..., :2].astype(np.float64),
      "visibility": parts[..., 2].astype(np.float64),
      "image_names": names.astype(str),
  }
