"""tf.data input pipeline over a dataset directory written by `mf_tf.data.tfrecord`.

Each element is a dict (batched along a leading B axis):

    frame_index       [B]                int64
    joints3d          [B, J, 3]          float32, world millimetres
    joints2d          [B, V, J, 2]       float32, heatmap pixels (x = column, y = row)
    visibility        [B, V, J]          float32, 1 visible / 0 occluded or outside
    head_size         [B, V]             float32, heatmap pixels
    heatmaps          [B, V, H, W, J]    float32 initial (detector) heatmaps: stored densely or
                                         rendered in the map from the compact detector state
                                         (only with render_heatmaps=True and when the dataset
                                         holds either)
    target_heatmaps   [B, V, H, W, J]    float32 Gaussian ground truth (HeatmapCodec.encode)
    target_weights    [B, V, J]          float32 loss weights (inside the heatmap and visible)
    images            [B, V, S, S, 3]    uint8 (only with with_images=True)

V is the number of selected views (`views=`), in the order given. Any other stored array is passed
through (per-view ones gathered too), cast to float32 when it is floating point.

Rendering from the compact state is deterministic per frame (the frame's noise seed). With a view
subset, the peaks are those of the selected views, but the background noise is drawn for the
subset's shape, so its values differ from a full-rig rendering (same distribution).
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import tensorflow as tf

from mf_tf.data import detector
from mf_tf.data import tfrecord
from mf_tf.data.codec import HeatmapCodec
from mf_tf.geometry.rig import Rig

_DETECTOR_KEYS = ("peaks", "amplitudes", "noise_seed")


def _feature_spec(keys: Sequence[str]) -> dict:
  # Every array is a bytes list: one raw buffer, one PNG per view, or one UTF-8 string per entry.
  spec = {"frame_index": tf.io.FixedLenFeature([], tf.int64)}
  for key in keys:
    spec[key] = tf.io.VarLenFeature(tf.string)
  return spec


def _decoder(specs: dict, keys: Sequence[str]):
  """Returns parse(serialized) -> dict of tensors in the stored per-frame shapes."""
  feature_spec = _feature_spec(keys)

  def parse(serialized):
    parsed = tf.io.parse_single_example(serialized, feature_spec)
    out = {"frame_index": parsed["frame_index"]}
    for key in keys:
      spec = specs[key]
      values = tf.sparse.to_dense(parsed[key], default_value=b"")
      shape = spec["shape"]
      if spec["dtype"] == "string":
        out[key] = tf.reshape(values, shape)
      elif key == "images" and spec.get("encoding") == "png":
        images = tf.map_fn(lambda v: tf.io.decode_png(v, channels=3), values,
                           fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))
        out[key] = tf.ensure_shape(images, shape)
      else:
        out[key] = tf.reshape(tf.io.decode_raw(values[0], tf.dtypes.as_dtype(spec["dtype"])),
                              shape)
    return out

  return parse


@contextlib.contextmanager
def corrupted_records_named(data_dir: str):
  """Iterate a `make_dataset` dataset inside this: a corrupted record (TF's DataLossError,
  which names no file) becomes one `tfrecord.DatasetIntegrityError` (a ValueError) naming the
  shard file and the record's offset.

    with pipeline.corrupted_records_named(data_dir):
      for batch in pipeline.make_dataset(data_dir, ...): ...
  """
  try:
    yield
  except tf.errors.DataLossError as error:
    # The error does not say which shard: read them again, only now that one is corrupted.
    shard_paths = tfrecord.read_meta(data_dir)["shard_paths"]
    found = tfrecord.find_corrupted_shard(shard_paths)
    path, error = found if found is not None else (", ".join(shard_paths), error)
    raise tfrecord.corrupted_record_error(path, error) from None


def check_request(stored, num_views: int, views, with_images: bool, render_heatmaps: bool,
                  where: str) -> list[int] | None:
  """Checks what a training input asks of a dataset against what the dataset stores.

  Args:
    stored: Names of the stored per-frame arrays (or features).
    num_views: Views of the dataset's rig.
    views: Requested view indices, or None for all.
    with_images: Images are requested.
    render_heatmaps: Initial heatmaps are requested (dense, or rendered from the compact
      detector state `_DETECTOR_KEYS`).
    where: The dataset, for messages.

  Returns:
    The views as a list of ints (None stays None).

  Raises:
    ValueError: Repeated or out-of-range views, or images / heatmaps the dataset cannot provide.
  """
  if views is not None:
    views = [int(v) for v in views]
    if not views or any(not 0 <= v < num_views for v in views) or len(set(views)) != len(views):
      raise ValueError(f"views={views}: expected distinct view indices in [0, {num_views}) for "
                       f"the {num_views}-view {where}")
  if with_images and "images" not in stored:
    raise ValueError(f"with_images=True but {where} stores no images (arrays: {sorted(stored)})")
  if render_heatmaps and "heatmaps" not in stored and not all(
      key in stored for key in _DETECTOR_KEYS):
    raise ValueError(f"render_heatmaps=True but {where} holds neither dense heatmaps nor the "
                     f"compact detector state {_DETECTOR_KEYS}")
  return views


def make_dataset(data_dir: str, batch_size: int, shuffle: bool = False,
                 with_images: bool = False, render_heatmaps: bool = True,
                 views: Sequence[int] | None = None, repeat: bool = False, seed: int = 0, *,
                 rig: Rig | None = None, joint_set=None, heatmap_size: int | None = None,
                 target_sigma: float = 2.0, shuffle_buffer: int = 1024,
                 drop_remainder: bool = False) -> tf.data.Dataset:
  """A batched, prefetched tf.data.Dataset of frames (see the module docstring for elements).

  Args:
    data_dir: Dataset directory (meta.json, rig.json, shards).
    batch_size: Frames per batch.
    shuffle: Shuffle shard order and frames (buffer `shuffle_buffer`), seeded by `seed`.
    with_images: Decode and return the stored images (error if the dataset has none).
    render_heatmaps: Return initial "heatmaps": the stored dense ones, else rendered from the
      compact detector state with `mf_tf.data.detector.render_heatmaps`.
    views: Indices of the views to keep, in order (e.g. a pair [u, v]); None keeps all.
    repeat: Repeat indefinitely (each epoch reshuffled when shuffle=True).
    seed: Shuffle seed.
    rig: Expected rig; the stored rig.json must match it (cameras, in order).
    joint_set: Expected joint set (name or JointSet).
    heatmap_size: Expected heatmap side.
    target_sigma: Gaussian sigma of the target heatmaps, heatmap pixels.
    shuffle_buffer: Frames in the shuffle buffer.
    drop_remainder: Drop the last partial batch.

  Raises:
    FileNotFoundError / ValueError: see `tfrecord.read_meta`; also a bad `views` or a request
    for images or heatmaps the dataset cannot provide, and meta.json describing an array other
    than stored (`tfrecord.check_first_frame`, naming meta.json and the field). Iterated inside
    `corrupted_records_named`, a corrupted record raises `tfrecord.DatasetIntegrityError` (a
    ValueError) naming the shard file.
  """
  meta = tfrecord.read_meta(data_dir, rig=rig, joint_set=joint_set, heatmap_size=heatmap_size)
  specs = meta["arrays"]
  num_views = meta["num_views"]
  size = meta["heatmap_size"]
  views = check_request(specs, num_views, views, with_images, render_heatmaps,
                        f"dataset {data_dir} (rig {meta['rig_name']!r})")
  if render_heatmaps and "heatmaps" not in specs:
    detector_params = meta.get("detector") or {}
    missing = [k for k in ("sigma", "noise_level") if k not in detector_params]
    if missing:
      raise ValueError(f"dataset {data_dir}: meta.json 'detector' lacks {missing}, needed to "
                       "render heatmaps from the compact detector state")
  keys = [k for k in specs
          if (with_images or k != "images") and (render_heatmaps or k != "heatmaps")
          and (render_heatmaps or k not in _DETECTOR_KEYS)]
  tfrecord.check_first_frame(data_dir, meta, keys)
  parse = _decoder(specs, keys)
  codec = HeatmapCodec(size, target_sigma)
  view_index = None if views is None else tf.constant(views, tf.int32)

  def to_element(serialized):
    frame = parse(serialized)
    if view_index is not None:
      for key in keys:
        if specs[key]["per_view"]:
          frame[key] = tf.gather(frame[key], view_index, axis=0)
    if render_heatmaps and "heatmaps" not in specs:
      params = meta["detector"]
      frame["heatmaps"] = detector.render_heatmaps(
          frame["peaks"], frame["amplitudes"], size, params["sigma"], params["noise_level"],
          frame["noise_seed"])
    for key, value in list(frame.items()):
      if value.dtype.is_floating or key == "visibility":
        frame[key] = tf.cast(value, tf.float32)
    if "joints2d" in frame:
      visibility = frame.get("visibility")
      frame["target_heatmaps"], frame["target_weights"] = codec.encode(frame["joints2d"],
                                                                       visibility)
    return frame

  if shuffle:
    files = tf.data.Dataset.from_tensor_slices(meta["shard_paths"])
    files = files.shuffle(len(meta["shard_paths"]), seed=seed, reshuffle_each_iteration=True)
    dataset = files.interleave(tf.data.TFRecordDataset, cycle_length=min(4, len(meta["shards"])),
                               num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.shuffle(min(shuffle_buffer, meta["num_frames"]), seed=seed,
                              reshuffle_each_iteration=True)
  else:  # Storage order, frame_index ascending.
    dataset = tf.data.TFRecordDataset(meta["shard_paths"])
  if repeat:
    dataset = dataset.repeat()
  dataset = dataset.map(to_element, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
  return dataset.prefetch(tf.data.AUTOTUNE)


def num_frames(data_dir: str) -> int:
  """Frames stored in a dataset directory."""
  return int(tfrecord.read_meta(data_dir)["num_frames"])


def selected_rig(data_dir: str, views: Sequence[int] | None = None) -> Rig:
  """The stored rig, restricted to `views` (as `make_dataset(views=...)` orders them)."""
  rig = tfrecord.load_rig(data_dir)
  return rig if views is None else rig.subset(list(views))

