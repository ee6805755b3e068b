"""Multi-view dataset storage: TFRecord shards plus `meta.json` and `rig.json`.

Layout of a dataset directory:

    <data_dir>/meta.json                          format, joint set, heatmap size, array specs
    <data_dir>/rig.json                           the canonical rig file (mm, x_cam = R X + t)
    <data_dir>/shard-00000-of-00004.tfrecord      one tf.train.Example per frame

Each example holds one frame: `frame_index` (int64) and, per stored array, its raw bytes in the
array's own dtype (so a write/read round trip is exact), with the per-frame shape and dtype kept
in meta.json. Images are stored per view as PNG (lossless, small) or as raw uint8 bytes. String
arrays (e.g. per-view image paths of a real dataset) are stored as UTF-8 byte lists.

Typical frame arrays (leading dimension N frames; V views, J joints, P detector peaks):

    joints3d    [N, J, 3]        world millimetres
    joints2d    [N, V, J, 2]     heatmap pixels (x = column, y = row)
    visibility  [N, V, J]        1 visible, 0 occluded / outside
    head_size   [N, V]           heatmap pixels (JDR threshold is half of it)
    peaks       [N, V, J, P, 2]  compact simulated-detector state: peak positions, heatmap px
    amplitudes  [N, V, J, P]     peak heights
    noise_seed  [N]              background-noise seed of the frame
    heatmaps    [N, V, H, W, J]  dense initial heatmaps (optional, large)
    images      [N, V, S, S, 3]  uint8 (optional)

A directory is written to a temporary sibling and renamed into place when complete, so readers
never see half a dataset; it holds mf_tf's marker (`mf_tf.files.MARKER`), and an existing
directory is replaced only when it holds one (`mf_tf.files.replace_folder`), never a folder
mf_tf did not write. `read_meta` validates a directory against what the caller expects
(rig, joint set) and raises one error naming every mismatch. It also counts the records of every
shard (from the TFRecord framing: 12-byte headers, no payload read) against meta.json's
"shard_frames", so a shard truncated on a record boundary, which TFRecordDataset reads without
complaint, raises `DatasetIntegrityError` instead of silently dropping frames.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import tempfile
from typing import Iterable, Mapping

import numpy as np
import tensorflow as tf

from mf_tf import files
from mf_tf.data import joints as joints_lib
from mf_tf.data import world
from mf_tf.geometry import calibration
from mf_tf.geometry.rig import Rig

FORMAT_NAME = "mf_tf.multiview_tfrecord"
FORMAT_VERSION = 1
META_FILE = "meta.json"
RIG_FILE = "rig.json"

# Arrays whose second axis (after frames) is the view axis; `views=` selects along it.
PER_VIEW_KEYS = frozenset(
    {"joints2d", "visibility", "head_size", "peaks", "amplitudes", "heatmaps", "images",
     "image_paths", "confidence2d"})
IMAGE_ENCODINGS = ("png", "raw")


class DatasetMismatchError(ValueError):
  """A stored dataset does not match what the caller expects (rig, joint set, heatmap size)."""


class DatasetIntegrityError(ValueError):
  """A stored dataset's shards do not hold what its meta.json lists (truncated or replaced)."""


# TFRecord framing: uint64 length, uint32 masked CRC of the length, data, uint32 CRC of the data.
_RECORD_HEADER_BYTES = 12
_RECORD_FOOTER_BYTES = 4


def count_records(path: str) -> int:
  """Number of records in a TFRecord file, from its framing alone (payloads are skipped).

  Args:
    path: An uncompressed TFRecord file.

  Returns:
    The number of complete records.

  Raises:
    DatasetIntegrityError: the file ends inside a record (truncated mid-record).
  """
  size = os.path.getsize(path)
  count, offset = 0, 0
  with open(path, "rb") as stream:
    while offset < size:
      header = stream.read(_RECORD_HEADER_BYTES)
      if len(header) < _RECORD_HEADER_BYTES:
        break
      (length,) = struct.unpack("<Q", header[:8])
      offset += _RECORD_HEADER_BYTES + length + _RECORD_FOOTER_BYTES
      if offset > size:
        break
      stream.seek(offset)
      count += 1
  if offset != size:
    raise DatasetIntegrityError(
        f"TFRecord file {path} ends inside record {count} ({size} bytes, the record needs "
        f"{offset}): expected complete records; the file is truncated")
  return count


def expected_shard_frames(num_frames: int, shard_size: int) -> list[int]:
  """Frames per shard written by `ShardWriter`: full shards, then the remainder."""
  num_shards = -(-int(num_frames) // int(shard_size))
  return [min(int(shard_size), int(num_frames) - i * int(shard_size)) for i in range(num_shards)]


def shard_name(index: int, count: int) -> str:
  return f"shard-{index:05d}-of-{count:05d}.tfrecord"


def _write_rig(rig: Rig, path: str) -> None:
  calibration.save_rig_file(rig, path)


def load_rig(data_dir: str) -> Rig:
  """The rig stored beside a dataset's shards."""
  path = os.path.join(data_dir, RIG_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"dataset {data_dir!r} has no {RIG_FILE}: expected the canonical rig file at {path}")
  return calibration.load_rig_file(path)


class ShardWriter:
  """Streams frames into TFRecord shards of a dataset directory, written atomically.

  Frames are added in chunks (any number of frames per `add`); a shard is closed every
  `shard_size` frames. `close()` writes meta.json and rig.json and renames the temporary
  directory onto `out_dir`. Use as a context manager: on an exception the temporary directory is
  removed and `out_dir` is left untouched.

  Args:
    out_dir: Dataset directory to create.
    rig: The cameras of every frame (V = rig.num_views).
    joint_set: JointSet or name (J = its number of joints).
    heatmap_size: Heatmap side in pixels (joints2d / peaks are in these pixels).
    shard_size: Frames per shard.
    num_frames: Total frames that will be added (names shards `-of-COUNT`); checked on close.
    image_encoding: "png" (lossless, default) or "raw".
    detector_params: JSON-serializable parameters of the simulated detector needed to render
      heatmaps from the compact state (`sigma`, `noise_level`); stored in meta.json.
    overwrite: Replace an existing `out_dir` (the swap happens only once the new one is
      complete), and only when mf_tf wrote it (`mf_tf.files.check_replaceable`).
    extra_meta: JSON-serializable values added to meta.json under "extra".

  Raises:
    FileExistsError: `out_dir` exists and `overwrite` is False.
    UnsafePathError: `out_dir` exists and is not a dataset folder mf_tf wrote (a ValueError;
      checked before any frame is written and again before the swap).
  """

  def __init__(self, out_dir: str, rig: Rig, joint_set, heatmap_size: int, shard_size: int,
               num_frames: int, image_encoding: str = "png",
               detector_params: Mapping | None = None, overwrite: bool = False,
               extra_meta: Mapping | None = None):
    if int(shard_size) < 1:
      raise ValueError(f"shard_size must be at least 1, got {shard_size}")
    if int(num_frames) < 1:
      raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    if image_encoding not in IMAGE_ENCODINGS:
      raise ValueError(f"image_encoding {image_encoding!r}, expected one of {IMAGE_ENCODINGS}")
    self.out_dir = os.path.abspath(out_dir)
    if os.path.exists(self.out_dir) and not overwrite:
      raise FileExistsError(
          f"dataset directory {self.out_dir} already exists; pass overwrite=True to replace it")
    files.check_replaceable(self.out_dir, "dataset folder")
    self.rig = rig
    self.joint_set = joints_lib.get_joint_set(joint_set)
    self.heatmap_size = int(heatmap_size)
    self.shard_size = int(shard_size)
    self.num_frames = int(num_frames)
    self.image_encoding = image_encoding
    self.detector_params = dict(detector_params or {})
    self.overwrite = overwrite
    self.extra_meta = dict(extra_meta or {})
    self.num_shards = -(-self.num_frames // self.shard_size)
    parent = os.path.dirname(self.out_dir)
    os.makedirs(parent, exist_ok=True)
    self._tmp_dir = tempfile.mkdtemp(prefix=f".{os.path.basename(self.out_dir)}.tmp-", dir=parent)
    self._specs: dict[str, dict] | None = None
    self._written = 0
    self._writer = None
    self._shard_index = -1
    self._closed = False

  # Context manager: commit on success, discard on error.
  def __enter__(self):
    return self

  def __exit__(self, exc_type, exc, tb):
    if exc_type is None:
      self.close()
    else:
      self.abort()
    return False

  @property
  def frames_written(self) -> int:
    return self._written

  def _check_and_spec(self, frames: Mapping[str, np.ndarray]) -> tuple[int, dict]:
    num_views, num_joints = self.rig.num_views, self.joint_set.num_joints
    arrays = {key: np.asarray(value) for key, value in frames.items()}
    counts = {key: value.shape[0] if value.ndim else None for key, value in arrays.items()}
    if not arrays or len(set(counts.values())) != 1 or None in counts.values():
      raise ValueError(f"frames must share one leading frame axis, got leading sizes {counts}")
    count = next(iter(counts.values()))
    specs = {}
    for key, value in arrays.items():
      shape = list(value.shape[1:])
      if key in PER_VIEW_KEYS and (not shape or shape[0] != num_views):
        raise ValueError(
            f"frames[{key!r}] has shape {value.shape}, expected [N, {num_views}, ...] for rig "
            f"{self.rig.name!r} with {num_views} views")
      if key in ("joints3d", "joints2d", "visibility", "peaks", "amplitudes"):
        joint_axis = 0 if key == "joints3d" else 1
        if len(shape) <= joint_axis or shape[joint_axis] != num_joints:
          raise ValueError(
              f"frames[{key!r}] has shape {value.shape}, expected {num_joints} joints "
              f"(joint set {self.joint_set.name!r}) on axis {joint_axis + 1}")
      if key == "images":
        if value.dtype != np.uint8 or len(shape) != 4 or shape[3] != 3:
          raise ValueError(
              f"frames['images'] has shape {value.shape} dtype {value.dtype}, expected uint8 "
              f"[N, {num_views}, S, S, 3]")
      if value.dtype.kind == "U":
        dtype = "string"
      elif value.dtype.kind in "biuf":
        dtype = value.dtype.name
      else:
        raise ValueError(f"frames[{key!r}] has unsupported dtype {value.dtype}")
      specs[key] = {"dtype": dtype, "shape": shape, "per_view": key in PER_VIEW_KEYS}
      if key == "images":
        specs[key]["encoding"] = self.image_encoding
    if "peaks" in specs and not {"amplitudes", "noise_seed"} <= set(specs):
      raise ValueError("frames with 'peaks' also need 'amplitudes' and 'noise_seed' "
                       "(the compact detector state)")
    return count, specs

  def add(self, frames: Mapping[str, np.ndarray]) -> None:
    """Appends frames; every array has the same leading frame axis N and the same keys each call.

    Args:
      frames: name -> [N, ...] numpy array (see the module docstring for the usual keys).
    """
    if self._closed:
      raise RuntimeError(f"ShardWriter for {self.out_dir} is already closed")
    count, specs = self._check_and_spec(frames)
    if self._specs is None:
      self._specs = specs
    elif specs != self._specs:
      raise ValueError(
          f"frames added to {self.out_dir} changed keys/shapes/dtypes: first chunk {self._specs}, "
          f"now {specs}")
    if self._written + count > self.num_frames:
      raise ValueError(
          f"adding {count} frames exceeds num_frames={self.num_frames} "
          f"({self._written} already written)")
    arrays = {key: np.asarray(value) for key, value in frames.items()}
    for i in range(count):
      frame_index = self._written
      shard = frame_index // self.shard_size
      if shard != self._shard_index:
        if self._writer is not None:
          self._writer.close()
        self._shard_index = shard
        self._writer = tf.io.TFRecordWriter(
            os.path.join(self._tmp_dir, shard_name(shard, self.num_shards)))
      self._writer.write(self._example(frame_index, {k: v[i] for k, v in arrays.items()}))
      self._written += 1

  def _example(self, frame_index: int, frame: Mapping[str, np.ndarray]) -> bytes:
    feature = {"frame_index": tf.train.Feature(int64_list=tf.train.Int64List(value=[frame_index]))}
    for key, value in frame.items():
      spec = self._specs[key]
      if spec["dtype"] == "string":
        data = [s.encode("utf-8") for s in np.ravel(value).tolist()]
      elif key == "images" and self.image_encoding == "png":
        data = [tf.io.encode_png(view).numpy() for view in value]
      else:
        data = [np.ascontiguousarray(value).tobytes()]
      feature[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=data))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()

  def close(self) -> str:
    """Writes meta.json and rig.json and moves the dataset into place; returns out_dir."""
    if self._closed:
      return self.out_dir
    if self._writer is not None:
      self._writer.close()
      self._writer = None
    if self._written != self.num_frames:
      self.abort()
      raise ValueError(
          f"ShardWriter for {self.out_dir} expected {self.num_frames} frames, got {self._written}")
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "rig_name": self.rig.name,
        "num_views": self.rig.num_views,
        "camera_names": [camera.name for camera in self.rig.cameras],
        "joint_set": self.joint_set.name,
        "num_joints": self.joint_set.num_joints,
        "heatmap_size": self.heatmap_size,
        "num_frames": self.num_frames,
        "shard_size": self.shard_size,
        "shards": [shard_name(i, self.num_shards) for i in range(self.num_shards)],
        "shard_frames": expected_shard_frames(self.num_frames, self.shard_size),
        "arrays": self._specs,
        "detector": self.detector_params,
        "extra": self.extra_meta,
    }
    try:  # Any failure discards the staging folder; an old dataset stays as it was.
      with open(os.path.join(self._tmp_dir, META_FILE), "w") as f:
        json.dump(meta, f, indent=1)
      _write_rig(self.rig, os.path.join(self._tmp_dir, RIG_FILE))
      os.chmod(self._tmp_dir, 0o755)
      # One rename; an old dataset goes only when mf_tf wrote it (it holds the marker).
      files.replace_folder(self._tmp_dir, self.out_dir, "dataset folder")
    except BaseException:
      self.abort()
      raise
    self._closed = True
    return self.out_dir

  def abort(self) -> None:
    """Discards everything written so far."""
    if self._writer is not None:
      self._writer.close()
      self._writer = None
    shutil.rmtree(self._tmp_dir, ignore_errors=True)
    self._closed = True


def write_shards(frames: Mapping[str, np.ndarray], out_dir: str, shard_size: int, rig: Rig,
                 joint_set, heatmap_size: int, *, image_encoding: str = "png",
                 detector_params: Mapping | None = None, overwrite: bool = False,
                 extra_meta: Mapping | None = None) -> str:
  """Writes in-memory frames as a dataset directory (atomically); returns its path.

  Args:
    frames: name -> [N, ...] numpy arrays (see the module docstring).
    out_dir: Dataset directory to create.
    shard_size: Frames per TFRecord shard.
    rig: Rig of the frames.
    joint_set: JointSet or name.
    heatmap_size: Heatmap side in pixels.
    image_encoding: "png" or "raw" for `frames["images"]`.
    detector_params: Simulated-detector parameters (`sigma`, `noise_level`) needed to render
      heatmaps from `peaks`/`amplitudes`/`noise_seed`.
    overwrite: Replace an existing directory.
    extra_meta: Extra JSON values for meta.json.
  """
  count = len(next(iter(frames.values()))) if frames else 0
  if count == 0:
    raise ValueError(f"no frames to write to {out_dir}: expected arrays with N >= 1 frames")
  with ShardWriter(out_dir, rig, joint_set, heatmap_size, shard_size, count,
                   image_encoding=image_encoding, detector_params=detector_params,
                   overwrite=overwrite, extra_meta=extra_meta) as writer:
    writer.add(frames)
  return writer.out_dir


def _rig_differences(stored: Rig, expected: Rig, atol: float = 1e-6) -> list[str]:
  if stored.num_views != expected.num_views:
    return [f"{stored.num_views} views {[c.name for c in stored.cameras]}, expected "
            f"{expected.num_views} views {[c.name for c in expected.cameras]}"]
  problems = []
  for index, (a, b) in enumerate(zip(stored.cameras, expected.cameras)):
    if a.name != b.name:
      problems.append(f"view {index} is camera {a.name!r}, expected {b.name!r}")
      continue
    for field in ("K", "R", "t", "dist"):
      va, vb = getattr(a, field), getattr(b, field)
      if not np.allclose(va, vb, rtol=1e-9, atol=atol):
        problems.append(f"camera {a.name!r} field {field} differs (max |diff| "
                        f"{np.max(np.abs(va - vb)):.3g})")
    if (a.width, a.height) != (b.width, b.height):
      problems.append(f"camera {a.name!r} image size {a.width}x{a.height}, expected "
                      f"{b.width}x{b.height}")
  return problems


def _check_shard_counts(data_dir: str, meta: dict, shard_paths: list[str]) -> None:
  """Raises DatasetIntegrityError unless every shard holds the records meta.json lists."""
  meta_path = os.path.join(data_dir, META_FILE)
  expected = meta.get("shard_frames")
  if expected is None:  # Written before per-shard counts were stored: ShardWriter's layout.
    expected = expected_shard_frames(meta["num_frames"], meta["shard_size"])
  if len(expected) != len(shard_paths) or sum(expected) != meta["num_frames"]:
    raise DatasetIntegrityError(
        f"{meta_path}: {len(shard_paths)} shards with frame counts {expected} (sum "
        f"{sum(expected)}), expected one count per shard summing to num_frames="
        f"{meta['num_frames']}")
  for path, count in zip(shard_paths, expected):
    found = count_records(path)
    if found != count:
      raise DatasetIntegrityError(
          f"dataset {data_dir}: shard {os.path.basename(path)} holds {found} records, expected "
          f"{count} (meta.json: {meta['num_frames']} frames in {len(shard_paths)} shards); the "
          "shard is truncated or was replaced: write the dataset again")


def read_meta(data_dir: str, rig: Rig | None = None, joint_set=None,
              heatmap_size: int | None = None, *, check_shards: bool = True) -> dict:
  """Reads and validates a dataset directory's meta.json.

  Args:
    data_dir: Dataset directory.
    rig: Expected rig (None: accept any). Cameras must match in order, names and parameters.
    joint_set: Expected JointSet or name (None: accept any).
    heatmap_size: Expected heatmap side (None: accept any).
    check_shards: Count every shard's records against meta.json (reads only the 12-byte record
      headers).

  Returns:
    The meta dict, with "shard_paths" (absolute paths) added.

  Raises:
    FileNotFoundError: meta.json, rig.json or a listed shard is missing.
    DatasetIntegrityError: a shard holds fewer or more records than meta.json lists, or ends
      inside a record; a "shards" entry that is not a file name inside `data_dir`; an "arrays"
      entry without a known dtype and a shape of non-negative integers.
    DatasetMismatchError: the dataset does not match the expectations (one message listing every
      mismatch).
  """
  meta_path = os.path.join(data_dir, META_FILE)
  if not os.path.isfile(meta_path):
    raise FileNotFoundError(
        f"{meta_path} not found: expected a dataset directory written by "
        "mf_tf.data.tfrecord.write_shards (meta.json, rig.json, shard-*.tfrecord)")
  with open(meta_path) as f:
    try:
      meta = json.load(f)
    except json.JSONDecodeError as error:
      raise ValueError(f"{meta_path} is not valid JSON: {error}") from None
  if meta.get("format") != FORMAT_NAME or meta.get("format_version") != FORMAT_VERSION:
    raise ValueError(
        f"{meta_path}: format {meta.get('format')!r} version {meta.get('format_version')!r}, "
        f"expected {FORMAT_NAME!r} version {FORMAT_VERSION}")
  _check_meta_fields(meta, meta_path)
  shard_paths = [os.path.join(data_dir, name) for name in meta["shards"]]
  missing = [path for path in shard_paths if not os.path.isfile(path)]
  if missing:
    raise FileNotFoundError(
        f"dataset {data_dir}: shards listed in meta.json are missing: {missing}")
  if check_shards:
    _check_shard_counts(data_dir, meta, shard_paths)
  problems = expectation_problems(meta, joint_set, heatmap_size)
  if rig is not None:
    problems += [f"rig: {p}" for p in _rig_differences(load_rig(data_dir), rig)]
  if problems:
    raise DatasetMismatchError(
        f"dataset {data_dir} does not match what was expected: " + "; ".join(problems))
  meta["shard_paths"] = shard_paths
  return meta


def _check_meta_fields(meta, meta_path: str) -> None:
  """Raises DatasetIntegrityError naming meta.json and the field unless "shards" lists plain file
  names (inside the dataset folder) and "arrays" a known dtype and a shape per array."""
  if not isinstance(meta, dict):
    raise DatasetIntegrityError(f"{meta_path}: expected a JSON object, got {type(meta).__name__}")
  shards = meta.get("shards")
  if not isinstance(shards, list) or not all(isinstance(name, str) for name in shards):
    raise DatasetIntegrityError(f"{meta_path}: field 'shards' is {shards!r}, expected a list of "
                                "shard file names")
  for name in shards:
    if os.path.basename(name) != name or name in ("", ".", "..") or "\\" in name:
      raise DatasetIntegrityError(
          f"{meta_path}: field 'shards' entry {name!r} points outside the dataset folder; "
          "expected a shard file name inside it (e.g. 'shard-00000-of-00001.tfrecord')")
  arrays = meta.get("arrays")
  if not isinstance(arrays, dict):
    raise DatasetIntegrityError(f"{meta_path}: field 'arrays' is {arrays!r}, expected an object "
                                "{name: {dtype, shape, per_view}}")
  for key, spec in arrays.items():
    field = f"arrays.{key}"
    if not isinstance(spec, dict):
      raise DatasetIntegrityError(f"{meta_path}: field {field!r} is {spec!r}, expected an object "
                                  "with dtype and shape")
    dtype = spec.get("dtype")
    known = dtype == "string" or (isinstance(dtype, str) and dtype in _STORED_DTYPES)
    if not known:
      raise DatasetIntegrityError(f"{meta_path}: field '{field}.dtype' is {dtype!r}, expected one "
                                  f"of {['string', *_STORED_DTYPES]}")
    shape = spec.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(size, int) and not isinstance(size, bool) and size >= 0 for size in shape):
      raise DatasetIntegrityError(f"{meta_path}: field '{field}.shape' is {shape!r}, expected a "
                                  "list of non-negative integers (the per-frame shape)")


def expectation_problems(meta, joint_set=None, heatmap_size: int | None = None) -> list[str]:
  """How a dataset's stored joint set and heatmap size differ from the expected ones.

  Args:
    meta: The dataset's description with "joint_set", "num_joints" and "heatmap_size" (meta.json,
      or a TFDS builder's metadata).
    joint_set: Expected JointSet or name; None: not checked.
    heatmap_size: Expected heatmap side; None: not checked.

  Returns:
    One line per difference (empty when everything matches).
  """
  problems = []
  if joint_set is not None:
    expected = joints_lib.get_joint_set(joint_set)
    if meta["joint_set"] != expected.name or meta["num_joints"] != expected.num_joints:
      problems.append(f"joint set {meta['joint_set']!r} ({meta['num_joints']} joints), expected "
                      f"{expected.name!r} ({expected.num_joints} joints)")
  if heatmap_size is not None and int(meta["heatmap_size"]) != int(heatmap_size):
    problems.append(f"heatmap size {meta['heatmap_size']}, expected {heatmap_size}")
  return problems


# dtypes `ShardWriter` stores (numpy names; "string" aside).
_STORED_DTYPES = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                  "uint64", "float16", "float32", "float64")


def decode_array(data_dir: str, key: str, spec: dict, values: list[bytes]) -> np.ndarray:
  """One stored array of one frame, decoded as meta.json's `spec` describes it.

  Raises:
    DatasetIntegrityError: the stored bytes do not hold `spec`'s shape and dtype (meta.json and
      the shards disagree), naming meta.json and the field.
  """
  try:
    return _decode_value(key, spec, values)
  except (ValueError, IndexError, tf.errors.InvalidArgumentError) as error:
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    raise DatasetIntegrityError(
        f"{os.path.join(data_dir, META_FILE)}: field 'arrays.{key}' (shape {spec['shape']}, dtype "
        f"{spec['dtype']!r}) does not match the stored values ({message}); expected the shape "
        "and dtype the dataset was written with: write the dataset again") from None


def check_first_frame(data_dir: str, meta: dict, keys: Iterable[str] | None = None) -> None:
  """Decodes the first stored frame as meta.json describes it (`decode_array`), so that a
  meta.json lying about a shape or dtype fails before a pipeline starts.

  Raises:
    DatasetIntegrityError: naming meta.json and the field, or the shard holding a corrupted
      first record.
  """
  specs = meta["arrays"]
  keys = list(specs) if keys is None else list(keys)
  for record in read_records(meta["shard_paths"][:1]):
    feature = tf.train.Example.FromString(record).features.feature
    for key in keys:
      decode_array(data_dir, key, specs[key], list(feature[key].bytes_list.value))
    return


def corrupted_record_error(path: str, error: Exception) -> DatasetIntegrityError:
  """The one error of a shard whose record fails its checksum (TF's DataLossError)."""
  detail = str(error).split("}")[-1].split("[Op:")[0].strip() or type(error).__name__
  offset = re.fullmatch(r"corrupted record at (\d+)", detail)
  if offset:
    detail = f"the record at byte {offset.group(1)} fails its checksum"
  return DatasetIntegrityError(
      f"TFRecord file {path}: {detail}; expected records whose checksums match: the shard is "
      "corrupted, write the dataset again")


def read_records(shard_paths: Iterable[str]):
  """Yields the serialized records of the shards in order.

  Raises:
    DatasetIntegrityError: a record fails its checksum, naming the shard file.
  """
  for path in shard_paths:
    records = tf.data.TFRecordDataset(path).as_numpy_iterator()
    while True:
      try:
        record = next(records)
      except StopIteration:
        break
      except tf.errors.DataLossError as error:
        raise corrupted_record_error(path, error) from None
      yield record


def find_corrupted_shard(shard_paths: Iterable[str]) -> tuple[str, Exception] | None:
  """(path, error) of the first shard with a record failing its checksum, or None."""
  for path in shard_paths:
    try:
      tf.data.TFRecordDataset(path).reduce(np.int64(0), lambda count, _: count + 1)
    except tf.errors.DataLossError as error:
      return path, error
  return None


def _decode_value(key: str, spec: dict, values: list[bytes]) -> np.ndarray:
  shape = spec["shape"]
  if spec["dtype"] == "string":
    return np.asarray([v.decode("utf-8") for v in values]).reshape(shape)
  if key == "images" and spec.get("encoding") == "png":
    return np.stack([tf.io.decode_png(v, channels=3).numpy() for v in values]).reshape(shape)
  return np.frombuffer(values[0], dtype=np.dtype(spec["dtype"])).reshape(shape)


def iterate_frames(data_dir: str, keys: Iterable[str] | None = None):
  """Yields (frame_index, {key: numpy array}) per stored frame, in storage order.

  Raises:
    DatasetIntegrityError: a corrupted record (naming the shard file) or meta.json describing
      an array other than stored (naming meta.json and the field); see also `read_meta`.
  """
  meta = read_meta(data_dir)
  specs = meta["arrays"]
  keys = list(specs) if keys is None else list(keys)
  unknown = [k for k in keys if k not in specs]
  if unknown:
    raise KeyError(f"dataset {data_dir} has no arrays {unknown}; it holds {sorted(specs)}")
  for record in read_records(meta["shard_paths"]):
    example = tf.train.Example.FromString(record)
    feature = example.features.feature
    yield (int(feature["frame_index"].int64_list.value[0]),
           {k: decode_array(data_dir, k, specs[k], list(feature[k].bytes_list.value))
            for k in keys})


def load_arrays(data_dir: str, keys: Iterable[str] | None = None) -> dict:
  """Reads a whole dataset into numpy arrays (small datasets and tests).

  Returns:
    name -> [N, ...] array in the stored dtype, frames in order, plus "frame_index" [N] int64.
  """
  indices, frames = [], []
  for index, frame in iterate_frames(data_dir, keys):
    indices.append(index)
    frames.append(frame)
  if not frames:
    raise ValueError(f"dataset {data_dir} holds no frames")
  out = {key: np.stack([frame[key] for frame in frames]) for key in frames[0]}
  out["frame_index"] = np.asarray(indices, np.int64)
  return out


# joints2d of a joint with no known position: far outside any heatmap, so its Gaussian target is
# zero and its loss weight 0 (finite, unlike NaN, which would poison the target heatmaps).
UNKNOWN_JOINT_PX = -1.0e4
# Joint whose 3D position anchors the head size of real poses, per joint set.
_HEAD_JOINT = {"h36m17": "head", "totalcapture16": "head", "coco19": "nose"}


def frames_from_poses(rig: Rig, joints3d: np.ndarray, joint_set, heatmap_size: int,
                      confidence: np.ndarray | None = None,
                      image_paths: np.ndarray | None = None) -> dict:
  """Storable frames from real 3D poses (output of the Panoptic / H36M / Total Capture readers).

  joints2d are the distorted projections of joints3d into each camera, in heatmap pixels
  (UNKNOWN_JOINT_PX for unknown joints); visibility is 1 where the joint is known (finite,
  confidence >= 0 when given), in front of the camera and inside its image (body self-occlusion
  is not known for real poses); head_size is the synthetic world's definition
  (`mf_tf.data.world.head_sizes`: a 230 mm segment at the head joint, "nose" for coco19,
  perpendicular to the viewing ray), in heatmap pixels.

  Args:
    rig: The cameras (V).
    joints3d: [N, J, 3] world millimetres, NaN where unknown.
    joint_set: JointSet or name of the poses.
    heatmap_size: Heatmap side.
    confidence: Optional [N, J]; joints with confidence < 0 are not visible.
    image_paths: Optional [N, V] str, stored alongside.

  Returns:
    dict with joints3d [N, J, 3] float32, joints2d [N, V, J, 2] float32, visibility [N, V, J]
    float32, head_size [N, V] float32 (and image_paths) for `write_shards`.
  """
  joint_set = joints_lib.get_joint_set(joint_set)
  joints3d = np.asarray(joints3d, np.float64)
  if joints3d.ndim != 3 or joints3d.shape[1:] != (joint_set.num_joints, 3):
    raise ValueError(f"joints3d has shape {joints3d.shape}, expected [N, {joint_set.num_joints}, "
                     f"3] for joint set {joint_set.name!r}")
  known = np.all(np.isfinite(joints3d), axis=-1)
  if confidence is not None:
    known &= np.asarray(confidence) >= 0
  filled = np.where(known[..., None], joints3d, 0.0)
  joints2d = world.project_to_heatmap(rig, filled, heatmap_size)
  depth = np.stack([camera.world_to_camera(filled)[..., 2] for camera in rig.cameras], axis=1)
  inside = np.all((joints2d >= -0.5) & (joints2d < heatmap_size - 0.5), axis=-1)
  visibility = known[:, None, :] & (depth > 0) & inside
  head = filled[:, joint_set.index(_HEAD_JOINT.get(joint_set.name, "head"))]
  frames = {
      "joints3d": np.where(known[..., None], joints3d, np.nan).astype(np.float32),
      "joints2d": np.where(known[:, None, :, None], joints2d, UNKNOWN_JOINT_PX).astype(
          np.float32),
      "visibility": visibility.astype(np.float32),
      "head_size": world.head_sizes(rig, head, heatmap_size),
  }
  if image_paths is not None:
    frames["image_paths"] = np.asarray(image_paths, dtype=str)
  return frames
