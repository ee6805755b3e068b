"""In-graph checks of the inputs of a rig's served signatures (`mf_tf.serving.export`).

Every check is a `tf.debugging.Assert` inside the serving graph, so that a bad request fails with
InvalidArgument and a message that names the bad value, the expected shape and the rig (the
in-process server passes it on: `mf_tf.serving.server.error_summary`). Each function returns its
inputs with the checks attached and their static shapes set.
"""

from __future__ import annotations

import tensorflow as tf


def check_shape(tensor, name: str, expected_tail, layout: str, rig_name: str):
  """An Assert that `tensor` is [batch >= 1, *expected_tail].

  Args:
    tensor: The input.
    name: Its name, in the message and the op name.
    expected_tail: Its sizes after the batch axis (views first).
    layout: The axes in words, e.g. "[batch, views, S, S, 3]".
    rig_name: Named in the message.

  Returns:
    The Assert op.
  """
  shape = tf.shape(tensor, out_type=tf.int64)
  ok = tf.logical_and(shape[0] >= 1, tf.reduce_all(tf.equal(shape[1:], expected_tail)))
  return tf.debugging.Assert(
      ok, [f"{name} must be {layout} = [batch >= 1, {', '.join(map(str, expected_tail))}] "
           f"for rig {rig_name!r} ({expected_tail[0]} views in rig order); got shape",
           shape], summarize=8, name=f"check_{name}_shape")


def check_images(images, rig_name: str, num_views: int, image_size: int):
  """images [B, V, S, S, 3], uint8, or float32 finite in [0, 255] -> the same, checked."""
  v, s = num_views, image_size
  checks = [check_shape(images, "images", [v, s, s, 3], "[batch, views, S, S, 3]", rig_name)]
  if images.dtype.is_floating:
    finite = tf.reduce_all(tf.math.is_finite(images))
    checks.append(tf.debugging.Assert(
        finite, ["images hold NaN or Inf; expected finite pixel values in [0, 255]"],
        name="check_images_finite"))
    with tf.control_dependencies(checks):  # Range after finiteness: min/max of NaN mislead.
      low, high = tf.reduce_min(images), tf.reduce_max(images)
      checks.append(tf.debugging.Assert(
          tf.logical_and(low >= 0.0, high <= 255.0),
          ["images must be float32 pixel values in [0, 255]; got min", low, "max", high],
          name="check_images_range"))
  with tf.control_dependencies(checks):
    images = tf.identity(images)
  return tf.ensure_shape(images, [None, v, s, s, 3])


def check_heatmaps(heatmaps, rig_name: str, num_views: int, heatmap_size: int, num_joints: int):
  """heatmaps [B, V, H, H, J], finite -> the same, checked."""
  v, h, j = num_views, heatmap_size, num_joints
  checks = [check_shape(heatmaps, "heatmaps", [v, h, h, j], "[batch, views, H, W, J]",
                        rig_name)]
  checks.append(tf.debugging.Assert(
      tf.reduce_all(tf.math.is_finite(heatmaps)),
      ["heatmaps hold NaN or Inf; expected finite values"], name="check_heatmaps_finite"))
  with tf.control_dependencies(checks):
    heatmaps = tf.identity(heatmaps)
  return tf.ensure_shape(heatmaps, [None, v, h, h, j])


def check_crops(crop_heatmaps, crop_affines, rig_name: str, num_views: int, crop_size: int,
                num_joints: int):
  """The fuse_crops inputs, checked together.

  Args:
    crop_heatmaps: [B, V, C, C, J], finite.
    crop_affines: [B, V, 3, 3], finite invertible affine maps (last row [0, 0, 1]), as many
      frames as `crop_heatmaps`.
    rig_name: Named in the messages.
    num_views: V.
    crop_size: C.
    num_joints: J.

  Returns:
    (crop_heatmaps, crop_affines), checked.
  """
  v, c, j = num_views, crop_size, num_joints
  checks = [
      check_shape(crop_heatmaps, "crop_heatmaps", [v, c, c, j], "[batch, views, C, C, J]",
                  rig_name),
      check_shape(crop_affines, "crop_affines", [v, 3, 3], "[batch, views, 3, 3]", rig_name),
  ]
  batches = tf.stack([tf.shape(crop_heatmaps, out_type=tf.int64)[0],
                      tf.shape(crop_affines, out_type=tf.int64)[0]])
  checks.append(tf.debugging.Assert(
      tf.equal(batches[0], batches[1]),
      ["crop_heatmaps and crop_affines must hold the same number of frames; got", batches],
      name="check_crops_batch"))
  for tensor, name in ((crop_heatmaps, "crop_heatmaps"), (crop_affines, "crop_affines")):
    checks.append(tf.debugging.Assert(
        tf.reduce_all(tf.math.is_finite(tensor)),
        [f"{name} hold NaN or Inf; expected finite values"], name=f"check_{name}_finite"))
  with tf.control_dependencies(checks):  # Shapes first: the slices below need [..., 3, 3].
    affines = tf.cast(crop_affines, tf.float64)
    bottom = tf.reshape(affines[..., 2, :] - tf.constant([0.0, 0.0, 1.0], tf.float64), [-1])
    det = tf.reshape(tf.linalg.det(affines[..., :2, :2]), [-1])
    checks.append(tf.debugging.Assert(
        tf.logical_and(tf.reduce_all(tf.abs(bottom) <= 1e-6),
                       tf.reduce_all(tf.abs(det) > 1e-12)),
        ["crop_affines must be invertible affine maps (last row [0, 0, 1], non-zero 2x2 "
         "determinant), image px -> crop heatmap px; got last rows - [0, 0, 1] and "
         "determinants", bottom, det], summarize=16, name="check_crop_affines_affine"))
  with tf.control_dependencies(checks):
    crop_heatmaps = tf.identity(crop_heatmaps)
    crop_affines = tf.identity(crop_affines)
  return (tf.ensure_shape(crop_heatmaps, [None, v, c, c, j]),
          tf.ensure_shape(crop_affines, [None, v, 3, 3]))
