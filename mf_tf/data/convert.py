r"""One-time conversion of dataset annotation files into the safe formats mf_tf reads.

WARNING: the h36m_pickle input is a Python pickle. Unpickling executes arbitrary code contained in
the file. Convert ONLY annotation files you trust (e.g. ones you generated yourself with
H36M-Toolbox); this command is the only place mf_tf unpickles anything, and the readers never do.
It unpickles only when asked to explicitly (`trust_pickle=True`,
--config.convert.trust_pickle=True), so a mistyped path never runs a stranger's code.

  python -m mf_tf.main --mode=convert --config.convert.input=h36m_train.pkl \
      --config.convert.trust_pickle=True [--config.convert.output=DIR] --workdir=/tmp/mf_tf

The output folder is written as a whole and swapped in by one rename (`mf_tf.files.replace_folder`);
an existing output folder is replaced only when mf_tf wrote it (its marker file), and an existing
non-empty folder of anything else is refused before the input is read.

Formats:
  h36m_pickle  CrossView / H36M-Toolbox annotation list (see mf_tf/data/h36m.py) -> DIR with
               manifest.json, annotations.npz (no object arrays) and cameras.json, read by
               `mf_tf.data.h36m.read_h36m_annotations`. Default DIR: <workdir>/converted/h36m.
"""

from __future__ import annotations

import json
import os
import pickle  # Only for the explicit, user-run conversion of trusted files; see the docstring.
import re
import shutil
import tempfile

import numpy as np
from absl import logging

from mf_tf import files
from mf_tf.data import h36m

FORMATS = ("h36m_pickle",)
OUTPUT_WHAT = "convert output folder"  # How messages name the output (--config.convert.output).
_IMAGE_ID = re.compile(r"(\d+)\.\w+$")
_REQUIRED = ("image", "joints_2d", "joints_3d", "joints_vis", "subject", "action", "subaction",
             "camera_id", "camera")


def _camera_block(camera: dict, where: str) -> dict:
  block = {}
  for key in ("R", "T", "fx", "fy", "cx", "cy", "k", "p"):
    if key not in camera:
      raise ValueError(f"{where}: camera lacks {key!r}; expected R, T, fx, fy, cx, cy, k, p")
    block[key] = np.asarray(camera[key], np.float64).tolist()
  for key in ("w", "h", "name"):
    if key in camera:
      block[key] = camera[key] if key == "name" else int(camera[key])
  return block


def _item_row(item, where: str) -> dict:
  """One item's values of the `h36m.ANNOTATION_ARRAYS` columns, checked."""
  if not isinstance(item, dict):
    raise ValueError(f"{where}: expected a dict, got {type(item).__name__}")
  missing = [key for key in _REQUIRED if key not in item]
  if missing:
    raise ValueError(f"{where}: keys {missing} missing; expected at least {list(_REQUIRED)}")
  num_joints = h36m.NUM_JOINTS
  joints_2d = np.asarray(item["joints_2d"], np.float64)
  joints_3d = np.asarray(item["joints_3d"], np.float64)
  joints_vis = np.asarray(item["joints_vis"], np.float64)
  if (joints_2d.shape[0] != num_joints or joints_3d.shape != (num_joints, 3)
      or joints_vis.shape[0] != num_joints):
    raise ValueError(f"{where}: joints_2d {joints_2d.shape}, joints_3d {joints_3d.shape}, "
                     f"joints_vis {joints_vis.shape}; expected {num_joints} joints "
                     f"([{num_joints}, 2], [{num_joints}, 3], [{num_joints}] or "
                     f"[{num_joints}, 3])")
  image = str(item["image"])
  row = {"image": image, "joints_2d": joints_2d[:, :2], "joints_3d": joints_3d,
         "joints_vis": joints_vis.reshape(num_joints, -1)[:, 0]}
  for key in ("center", "scale"):
    row[key] = np.broadcast_to(np.asarray(item.get(key, (np.nan, np.nan)), np.float64), (2,))
  for key in ("subject", "action", "subaction", "camera_id"):
    row[key] = int(item[key])
  if "image_id" in item:
    row["image_id"] = int(item["image_id"])
  else:
    match = _IMAGE_ID.search(image)
    if match is None:
      raise ValueError(f"{where}: no image_id and none in the image name {image!r}")
    row["image_id"] = int(match.group(1))
  return row


def _add_camera(cameras: dict, item: dict, where: str) -> None:
  """Adds the item's camera to `cameras` ({"S<subject>/<camera_id>": block}), or checks it
  against the one an earlier item of the same subject and camera_id gave."""
  key = h36m.camera_key(item["subject"], item["camera_id"])
  block = _camera_block(item["camera"], where)
  if key in cameras:
    if not all(np.allclose(cameras[key][k], block[k]) for k in ("R", "T", "fx", "fy", "cx",
                                                                "cy", "k", "p")):
      raise ValueError(f"{where}: camera {key} differs from an earlier item of the same "
                       "subject and camera_id")
  else:
    cameras[key] = block


def _read_items(items, source: str) -> tuple[dict, dict]:
  """(arrays, cameras) of the items: the annotations.npz arrays over the M items (an optional
  array only when every item has it) and the cameras.json blocks."""
  columns = {name: [] for name in h36m.ANNOTATION_ARRAYS}
  optional = {name: [] for name in h36m.OPTIONAL_ARRAYS}
  cameras: dict[str, dict] = {}
  for index, item in enumerate(items):
    where = f"{source or 'input'} item {index}"
    for name, value in _item_row(item, where).items():
      columns[name].append(value)
    for key in optional:
      if optional[key] is not None and key in item:
        optional[key].append(item[key])
      else:
        optional[key] = None
    _add_camera(cameras, item, where)
  arrays = {
      "image": np.asarray(columns["image"], dtype=str),
      **{k: np.asarray(columns[k], np.float64)
         for k in ("joints_2d", "joints_3d", "joints_vis", "center", "scale")},
      **{k: np.asarray(columns[k], np.int64)
         for k in ("subject", "action", "subaction", "camera_id", "image_id")},
  }
  for key, values in optional.items():
    if values is not None and len(values) == len(items):
      kind = h36m.OPTIONAL_ARRAYS[key][0]
      arrays[key] = np.asarray(values, np.float64 if kind == "f" else np.int64)
  return arrays, cameras


def _write_folder(output_dir: str, arrays: dict, cameras: dict, manifest: dict) -> str:
  """Writes the layout into a temporary sibling of `output_dir`, then swaps it in by one
  rename (`files.replace_folder`); returns the absolute output_dir."""
  output_dir = os.path.abspath(output_dir)
  parent = os.path.dirname(output_dir)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(output_dir)}.tmp-", dir=parent)
  try:
    np.savez(os.path.join(tmp, "annotations.npz"), **arrays)
    with open(os.path.join(tmp, "cameras.json"), "w") as f:
      json.dump(cameras, f, indent=1)
    with open(os.path.join(tmp, "manifest.json"), "w") as f:
      json.dump(manifest, f, indent=1)
    os.chmod(tmp, 0o755)
    files.replace_folder(tmp, output_dir, OUTPUT_WHAT)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return output_dir


def convert_h36m_items(items, output_dir: str, source: str = "") -> str:
  """Writes annotation items (the unpickled list of dicts) in the safe layout, atomically.

  Args:
    items: Sequence of per-image dicts in the CrossView / H36M-Toolbox layout.
    output_dir: Directory to create; an existing one is replaced, once the new one is
      complete, only if mf_tf wrote it (`files.replace_folder`).
    source: Name of the source file, recorded in manifest.json.

  Returns:
    output_dir.

  Raises:
    ValueError: malformed items.
    files.UnsafePathError: `output_dir` is a non-empty folder (or a file) mf_tf did not write.
  """
  files.check_replaceable(os.path.abspath(output_dir), OUTPUT_WHAT)
  if not isinstance(items, (list, tuple)) or not items:
    raise ValueError(f"{source or 'input'}: expected a non-empty list of per-image dicts, got "
                     f"{type(items).__name__}")
  arrays, cameras = _read_items(items, source)
  manifest = {"format": h36m.FORMAT_NAME, "version": h36m.FORMAT_VERSION,
              "num_items": len(items), "joint_set": "h36m17", "source": os.path.basename(source),
              "units": {"joints_3d": "mm (world)", "joints_2d": "image pixels",
                        "camera.T": "camera centre, mm"}}
  return _write_folder(output_dir, arrays, cameras, manifest)


def convert(format_name: str, input_path: str, output_dir: str, *,
            trust_pickle: bool = False) -> str:
  """Converts `input_path` of `format_name` into `output_dir`; returns output_dir.

  WARNING: for "h36m_pickle" this unpickles `input_path`, which executes any code it contains;
  it does so only with `trust_pickle=True`. Use it only on files you trust.

  Args:
    format_name: One of FORMATS.
    input_path: The annotation file.
    output_dir: The folder to write (`convert_h36m_items`).
    trust_pickle: The caller vouches for the file: unpickle it (required for "h36m_pickle").

  Raises:
    ValueError: unknown format, no output, `trust_pickle` not given, malformed items.
    FileNotFoundError: no input file.
    files.UnsafePathError: `output_dir` is a non-empty folder (or a file) mf_tf did not write.
  """
  if format_name not in FORMATS:
    raise ValueError(f"format {format_name!r}, expected one of {FORMATS}")
  if not input_path or not os.path.isfile(input_path):
    raise FileNotFoundError(f"input file {input_path!r} not found")
  if not output_dir:
    raise ValueError("an output directory is required")
  if trust_pickle is not True:
    raise ValueError(
        f"refusing to unpickle {input_path!r}: unpickling runs any code the file holds; "
        "expected --config.convert.trust_pickle=True (trust_pickle=True) to convert a file you "
        "trust (e.g. one you generated yourself with H36M-Toolbox)")
  files.check_replaceable(os.path.abspath(output_dir), OUTPUT_WHAT)  # Before running its code.
  logging.warning("Unpickling %s: this executes any code in the file; convert only trusted "
                  "files.", input_path)
  with open(input_path, "rb") as f:
    items = pickle.load(f)  # noqa: S301 -- explicit one-time conversion of a trusted file.
  out = convert_h36m_items(items, output_dir, source=input_path)
  logging.info("wrote %d items to %s", len(items), out)
  return out
