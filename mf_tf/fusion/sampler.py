"""Differentiable bilinear spatial-transformer sampler (Jaderberg et al. 2015) for fusion matrices.

MetaFuse (paper Eq. 2) builds row i of the fusion matrix W_{u->v} by warping one shared base map
omega_base [H, W] with a per-pixel affine theta_i. The warp is the spatial transformer's affine grid
plus bilinear sampling:

    for every output pixel j at normalized coordinates (x_j, y_j) (the SOURCE view's pixel grid),
      (x_s, y_s) = [[t0, t1, t2], [t3, t4, t5]] @ [x_j, y_j, 1]      (normalized base coordinates)
      W[i, j]    = bilinear(omega_base, x_s, y_s)                   (zero outside the base map)

Coordinate convention (align_corners=True, as in PyTorch `affine_grid(..., align_corners=True)`):
normalized coordinate -1 is the CENTRE of pixel 0 and +1 the centre of pixel W-1, so

    x_pixel = (x_normalized + 1) * (W - 1) / 2,      x_normalized = 2 * x_pixel / (W - 1) - 1,

with x the column and y the row, pixel centres at integers (mf_tf's heatmap convention). Theta
[1, 0, 0, 0, 1, 0] reproduces the base map exactly. Outside the base map the sampler reads zeros
(bilinear with zero padding), so a point half a pixel outside the border reads half the border value.

Implementation: one `tf.gather` per output pixel from a table of 2x2 patches of the zero-padded base
(floor indices carry no gradient; the fractional weights carry the gradient in theta), then the
bilinear blend. This is piecewise polynomial in theta and linear in omega_base, so first- and
second-order gradients (MAML) are exact almost everywhere and XLA-compilable. `tf.recompute_grad`
is deliberately not used: it breaks second-order gradients.
"""

from __future__ import annotations

import tensorflow as tf

# Padding of the base map on each side: indices -2..W+1 exist, so a floor index clamped into
# [-2, W] always addresses either the true 2x2 neighbourhood or an all-zero patch.
_PAD = 2


def normalized_grid(height: int, width: int, dtype=tf.float32) -> tuple[tf.Tensor, tf.Tensor]:
  """Normalized (align_corners) coordinates of every pixel centre, row-major.

  Args:
    height: Map height H in pixels.
    width: Map width W in pixels.
    dtype: Float dtype of the result.

  Returns:
    x, y: [H * W] each, in [-1, 1]; pixel (row r, column c) is entry r * W + c.
  """
  xs = tf.linspace(tf.constant(-1.0, tf.float64), 1.0, width) if width > 1 else tf.zeros(
      [1], tf.float64)
  ys = tf.linspace(tf.constant(-1.0, tf.float64), 1.0, height) if height > 1 else tf.zeros(
      [1], tf.float64)
  y, x = tf.meshgrid(ys, xs, indexing="ij")
  return tf.cast(tf.reshape(x, [-1]), dtype), tf.cast(tf.reshape(y, [-1]), dtype)


def _patch_table(omega_base: tf.Tensor) -> tf.Tensor:
  """[..., (H + 3) * (W + 3), 4] 2x2 patches (top-left, top-right, bottom-left, bottom-right).

  Entry (a, b) holds the padded base at rows a, a+1 and columns b, b+1, i.e. the neighbourhood of
  the base pixel (a - 2, b - 2).
  """
  height, width = omega_base.shape[-2], omega_base.shape[-1]
  rank = omega_base.shape.rank
  paddings = [[0, 0]] * (rank - 2) + [[_PAD, _PAD], [_PAD, _PAD]]
  padded = tf.pad(omega_base, paddings)
  rows, cols = height + 2 * _PAD - 1, width + 2 * _PAD - 1
  patches = tf.stack([
      padded[..., :rows, :cols], padded[..., :rows, 1:],
      padded[..., 1:, :cols], padded[..., 1:, 1:]], axis=-1)
  return tf.reshape(patches, tf.concat([tf.shape(omega_base)[:-2], [rows * cols, 4]], 0))


def warp_base(omega_base: tf.Tensor, theta: tf.Tensor) -> tf.Tensor:
  """Warps a base map by many affine transforms, sampling on the base's own pixel grid.

  Args:
    omega_base: [H, W] base map shared by every transform, or [T, H, W] one base per leading
      index of `theta` (e.g. per-task fast weights in a vectorized MAML step).
    theta: [..., 6] affine parameters (t0..t5, row-major 2x3), normalized coordinates; with a
      batched base, theta is [T, ..., 6].

  Returns:
    [..., H * W]: for each transform, the warped map flattened row-major (output pixel j is
    (row j // W, column j % W)). With theta [P, H*W, 6] this is the fusion matrices
    [P, HW_target, HW_source].
  """
  omega_base = tf.convert_to_tensor(omega_base)
  theta = tf.convert_to_tensor(theta, dtype=omega_base.dtype)
  if omega_base.shape.rank not in (2, 3):
    raise ValueError(f"omega_base must be [H, W] or [T, H, W], got shape {omega_base.shape}")
  if theta.shape[-1] != 6:
    raise ValueError(f"theta must end in 6 affine parameters, got shape {theta.shape}")
  height, width = int(omega_base.shape[-2]), int(omega_base.shape[-1])
  dtype = omega_base.dtype
  grid_x, grid_y = normalized_grid(height, width, dtype)

  # Affine grid in normalized base coordinates, then base pixel coordinates. [..., HW]
  # Written as contractions with the [3, HW] grid so that the theta gradient is one matrix
  # product per row of theta (XLA otherwise re-emits the whole sampler inside six reductions:
  # about 2x slower forward + backward at 64x64).
  grid = tf.stack([grid_x, grid_y, tf.ones_like(grid_x)])
  sx = tf.einsum("...k,kj->...j", theta[..., 0:3], grid)
  sy = tf.einsum("...k,kj->...j", theta[..., 3:6], grid)
  sx = (sx + 1.0) * (0.5 * (width - 1))
  sy = (sy + 1.0) * (0.5 * (height - 1))

  # Floors carry no gradient; the fractional parts carry d/dtheta (and its derivatives).
  x0 = tf.stop_gradient(tf.floor(sx))
  y0 = tf.stop_gradient(tf.floor(sy))
  fx = sx - x0
  fy = sy - y0
  # Cast first, clamp in integers: robust to huge or non-finite coordinates.
  col = tf.clip_by_value(tf.cast(x0, tf.int32), -_PAD, width) + _PAD
  row = tf.clip_by_value(tf.cast(y0, tf.int32), -_PAD, height) + _PAD
  table = _patch_table(omega_base)
  index = row * (width + 2 * _PAD - 1) + col
  if omega_base.shape.rank == 3:
    patches = tf.gather(table, index, batch_dims=1)
  else:
    patches = tf.gather(table, index)
  p00, p01, p10, p11 = tf.unstack(patches, axis=-1)
  top = p00 + fx * (p01 - p00)
  bottom = p10 + fx * (p11 - p10)
  return top + fy * (bottom - top)


def warp_maps(omega_base: tf.Tensor, theta: tf.Tensor) -> tf.Tensor:
  """`warp_base` with the spatial layout kept: [..., 6] -> [..., H, W]."""
  warped = warp_base(omega_base, theta)
  height, width = omega_base.shape[-2], omega_base.shape[-1]
  return tf.reshape(warped, tf.concat([tf.shape(warped)[:-1], [height, width]], 0))


def normalized_to_pixel_projective(theta, height: int, width: int):
  """Pixel-space 3x3 matrix of a normalized affine: [x_s, y_s, 1]_px = M @ [x_o, y_o, 1]_px.

  Maps OUTPUT pixel coordinates to the pixel coordinates where the base is sampled (the direction
  `tf.raw_ops.ImageProjectiveTransformV3` expects), using the align_corners convention above.

  Args:
    theta: [..., 6] normalized affine parameters (numpy or tensor, float64 advised).
    height: Map height H.
    width: Map width W.

  Returns:
    [..., 3, 3] float64 numpy matrices.
  """
  import numpy as np  # Local: a test/export utility, not on the training path.

  theta = np.asarray(theta, np.float64)
  affine = np.zeros(theta.shape[:-1] + (3, 3))
  affine[..., :2, :] = theta.reshape(theta.shape[:-1] + (2, 3))
  affine[..., 2, 2] = 1.0
  sx, sy = 0.5 * (width - 1), 0.5 * (height - 1)
  to_pixel = np.array([[sx, 0.0, sx], [0.0, sy, sy], [0.0, 0.0, 1.0]])
  to_normalized = np.linalg.inv(to_pixel)
  return to_pixel @ affine @ to_normalized
