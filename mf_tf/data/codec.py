"""Heatmap keypoint codec: Gaussian targets (encode) and sub-pixel argmax (decode).

One object pairs `encode` and `decode` so that a model's targets and its read-out agree (the
keypoint-codec idea of mmpose). Coordinates are heatmap pixels: x = column, y = row, pixel centres
at integers (pixel (0, 0) covers [-0.5, 0.5) x [-0.5, 0.5)). Heatmaps are channels-last
[..., H, W, J]. Both directions are pure TF, vectorized over every leading dimension and the
joints, and XLA-compilable.
"""

from __future__ import annotations

import tensorflow as tf


class HeatmapCodec:
  """Encodes 2D joints as unnormalized Gaussian heatmaps and decodes heatmaps back to joints.

  Args:
    heatmap_size: Side of the square heatmap in pixels (H = W = heatmap_size).
    sigma: Gaussian standard deviation in heatmap pixels (SimpleBaseline uses 2 at 64x64).
  """

  def __init__(self, heatmap_size: int, sigma: float = 2.0):
    if int(heatmap_size) < 3:
      raise ValueError(f"heatmap_size must be at least 3 pixels, got {heatmap_size}")
    if not float(sigma) > 0.0:
      raise ValueError(f"sigma must be positive, got {sigma}")
    self.heatmap_size = int(heatmap_size)
    self.sigma = float(sigma)

  def encode(self, joints2d, visibility=None):
    """Gaussian target heatmaps and per-joint loss weights.

    Every joint gets its Gaussian (peak 1 at the joint, exp(-d^2 / (2 sigma^2))), visible or
    not: an occluded joint still has a true position, and the target says where it is. Whether a
    joint counts in the loss is the separate weight: 1 for a joint whose position lies inside the
    heatmap ([-0.5, size - 0.5) on both axes) and whose visibility is positive, else 0. Joints far
    outside the heatmap naturally give (near) zero maps. A joint with a non-finite coordinate (a
    missing annotation, NaN) has no position: its target is all zeros and its weight 0, so a
    weighted loss stays finite (0 x NaN would be NaN).

    Args:
      joints2d: [..., J, 2] joint positions in heatmap pixels (x = column, y = row).
      visibility: Optional [..., J] visibility / annotation flags (> 0 counts); None means all.

    Returns:
      heatmaps: [..., H, W, J] float32 with H = W = heatmap_size.
      weights: [..., J] float32 in {0, 1}.
    """
    joints2d = tf.convert_to_tensor(joints2d, tf.float32)
    size = self.heatmap_size
    grid = tf.range(size, dtype=tf.float32)
    finite = tf.reduce_all(tf.math.is_finite(joints2d), axis=-1)  # [..., J]
    # Non-finite joints are rendered at the origin, then zeroed: no NaN reaches the maps.
    placed = tf.where(finite[..., None], joints2d, 0.0)
    x = placed[..., 0][..., None, None, :]  # [..., 1, 1, J]
    y = placed[..., 1][..., None, None, :]
    scale = -0.5 / (self.sigma * self.sigma)
    # Separable Gaussian: a [1, W] row profile times an [H, 1] column profile per joint.
    gx = tf.exp(scale * tf.square(grid[None, :, None] - x))  # [..., 1, W, J]
    gy = tf.exp(scale * tf.square(grid[:, None, None] - y))  # [..., H, 1, J]
    heatmaps = gx * gy * tf.cast(finite, tf.float32)[..., None, None, :]
    inside = finite & tf.reduce_all((joints2d >= -0.5) & (joints2d < size - 0.5), axis=-1)
    weights = tf.cast(inside, tf.float32)
    if visibility is not None:
      weights *= tf.cast(tf.convert_to_tensor(visibility) > 0, tf.float32)
    return heatmaps, weights

  def decode(self, heatmaps):
    """Argmax with sub-pixel refinement.

    The integer argmax is refined per axis by the vertex of the parabola through the logarithm
    of the peak and its two neighbours, which is exact for a Gaussian peak (log-quadratic) and
    is clipped to half a pixel; at the heatmap border the offset on that axis is zero.

    Args:
      heatmaps: [..., H, W, J] heatmaps.

    Returns:
      coords: [..., J, 2] float32 (x = column, y = row) in heatmap pixels.
      scores: [..., J] float32 heatmap maximum per joint.
    """
    heatmaps = tf.convert_to_tensor(heatmaps, tf.float32)
    shape = tf.shape(heatmaps)
    height, width, num_joints = shape[-3], shape[-2], shape[-1]
    lead = shape[:-3]
    flat = tf.reshape(heatmaps, tf.concat([[-1], [height * width, num_joints]], axis=0))
    flat = tf.transpose(flat, [0, 2, 1])  # [B, J, HW]
    index = tf.argmax(flat, axis=-1, output_type=tf.int32)  # [B, J]
    row, col = index // width, index % width
    score = tf.gather(flat, index[..., None], batch_dims=2)[..., 0]

    def value(r, c):
      r = tf.clip_by_value(r, 0, height - 1)
      c = tf.clip_by_value(c, 0, width - 1)
      return tf.gather(flat, (r * width + c)[..., None], batch_dims=2)[..., 0]

    def offset(center, low, high, interior):
      tiny = 1e-10
      log_c = tf.math.log(tf.maximum(center, tiny))
      log_l = tf.math.log(tf.maximum(low, tiny))
      log_h = tf.math.log(tf.maximum(high, tiny))
      curvature = log_l + log_h - 2.0 * log_c  # <= 0 at a maximum
      safe = tf.where(curvature < -1e-6, curvature, -1.0)
      delta = tf.where(curvature < -1e-6, 0.5 * (log_l - log_h) / safe, 0.0)
      return tf.where(interior, tf.clip_by_value(delta, -0.5, 0.5), 0.0)

    dx = offset(score, value(row, col - 1), value(row, col + 1),
                (col > 0) & (col < width - 1) & (score > 0))
    dy = offset(score, value(row - 1, col), value(row + 1, col),
                (row > 0) & (row < height - 1) & (score > 0))
    coords = tf.stack([tf.cast(col, tf.float32) + dx, tf.cast(row, tf.float32) + dy], axis=-1)
    coords = tf.reshape(coords, tf.concat([lead, [num_joints, 2]], axis=0))
    scores = tf.reshape(score, tf.concat([lead, [num_joints]], axis=0))
    return coords, scores
