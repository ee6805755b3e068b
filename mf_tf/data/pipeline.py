"""tf.data input pipeline over a dataset directory written by `mf_tf.data.tfrecord`.

`make_dataset` reads the shards and decodes each record into its frame; the elements it yields are
those of `mf_tf.data.element` (frame_index, joints3d, joints2d, visibility, head_size, heatmaps,
target_heatmaps, target_weights, images; shapes and options there), the same as
`mf_tf.data.tfds_builders.to_training_dataset` gives for the same frames.
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import tensorflow as tf

from mf_tf.data import element
from mf_tf.data import tfrecord
from mf_tf.geometry.rig import Rig


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


def make_dataset(data_dir: str, batch_size: int, shuffle: bool = False,
                 with_images: bool = False, render_heatmaps: bool = True,
                 views: Sequence[int] | None = None, repeat: bool = False, seed: int = 0, *,
                 rig: Rig | None = None, joint_set=None, heatmap_size: int | None = None,
                 target_sigma: float = 2.0, shuffle_buffer: int = 1024,
                 drop_remainder: bool = False) -> tf.data.Dataset:
  """A batched, prefetched tf.data.Dataset of frames (elements: `mf_tf.data.element`).

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
    for images or heatmaps the dataset cannot provide (`element.make_recipe`), and meta.json
    describing an array other than stored (`tfrecord.check_first_frame`, naming meta.json and
    the field). Iterated inside `corrupted_records_named`, a corrupted record raises
    `tfrecord.DatasetIntegrityError` (a ValueError) naming the shard file.
  """
  meta = tfrecord.read_meta(data_dir, rig=rig, joint_set=joint_set, heatmap_size=heatmap_size)
  specs = meta["arrays"]
  recipe = element.make_recipe(
      specs, [key for key, spec in specs.items() if spec["per_view"]], meta["num_views"],
      meta["heatmap_size"], meta.get("detector"), with_images=with_images,
      render_heatmaps=render_heatmaps, views=views, target_sigma=target_sigma,
      where=f"dataset {data_dir} (rig {meta['rig_name']!r})")
  tfrecord.check_first_frame(data_dir, meta, recipe.keys)
  records = _records(meta, shuffle, seed, shuffle_buffer)
  return element.batch_elements(records, _decoder(specs, recipe.keys), recipe, batch_size,
                                repeat=repeat, drop_remainder=drop_remainder)


def _records(meta: dict, shuffle: bool, seed: int, shuffle_buffer: int) -> tf.data.Dataset:
  """The serialized records of a dataset's shards: shuffled (shard order, then frames in a
  buffer of `shuffle_buffer`) or in storage order, frame_index ascending."""
  if not shuffle:
    return tf.data.TFRecordDataset(meta["shard_paths"])
  files = tf.data.Dataset.from_tensor_slices(meta["shard_paths"])
  files = files.shuffle(len(meta["shard_paths"]), seed=seed, reshuffle_each_iteration=True)
  records = files.interleave(tf.data.TFRecordDataset, cycle_length=min(4, len(meta["shards"])),
                             num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return records.shuffle(min(shuffle_buffer, meta["num_frames"]), seed=seed,
                         reshuffle_each_iteration=True)


def num_frames(data_dir: str) -> int:
  """Frames stored in a dataset directory."""
  return int(tfrecord.read_meta(data_dir)["num_frames"])


def selected_rig(data_dir: str, views: Sequence[int] | None = None) -> Rig:
  """The stored rig, restricted to `views` (as `make_dataset(views=...)` orders them)."""
  rig = tfrecord.load_rig(data_dir)
  return rig if views is None else rig.subset(list(views))

