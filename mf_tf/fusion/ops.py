"""Pure fusion math (paper Sec. 3-4.1): fusion matrices, Eq. 1, temperature softmax, loss, top-k.

Conventions:
  * Heatmaps are [batch, views, H, W, joints]; a pixel's flat index is row * W + column.
  * Fusion matrices are [P, HW_target, HW_source], one per ordered pair (source u -> target v),
    pairs in `mf_tf.geometry.rig.ordered_pairs` order (grouped by target), shared across joints.
  * Paper Eq. 1: fused_v = h_v + sum_{u != v} W_{u->v} h_u, i.e. fused_v[i] += sum_j W[i, j] h_u[j].

Everything here is a pure function of tensors, so a MAML step can call it with fast weights:

    matrices = affine_matrices(omega_base_fast, theta_fast)
    loss = fusion_loss(fuse(heatmaps, matrices), target, weights)

`fuse_affine(heatmaps, omega_base, theta)` is the same fused heatmaps without the matrices: the
warp and the product run together over chunks of target pixels and the gradients (first and
second order) recompute the warps (`mf_tf.fusion.sampler.warp_product`). At 64x64 the 4-view
rig's matrices are 0.8 GB, and the plain path's backward keeps about a dozen tensors of that size.

Top-k fusion matrices are `mf_tf.fusion.sparse`, over the pair layout and message sum here
(`pair_layout`, `view_columns`, `add_messages`, `add_view_messages`).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from mf_tf.fusion import sampler
from mf_tf.geometry.rig import ordered_pairs

DEFAULT_TEMPERATURE = 0.2  # Paper Sec. 5.1: softmax with T = 0.2 on every fused channel.


def heatmap_hw(heatmap_size) -> tuple[int, int]:
  """(H, W) from an int (square) or an (H, W) pair."""
  if isinstance(heatmap_size, (int, np.integer)):
    height = width = int(heatmap_size)
  else:
    height, width = (int(s) for s in heatmap_size)
  if height < 2 or width < 2:
    raise ValueError(f"heatmap_size must be at least 2x2 pixels, got {heatmap_size!r}")
  return height, width


def num_pairs_for(num_views: int) -> int:
  """Number of ordered pairs V * (V - 1)."""
  if int(num_views) < 2:
    raise ValueError(f"fusion needs at least 2 views, got num_views={num_views}")
  return int(num_views) * (int(num_views) - 1)


# ----------------------------------------------------------------------------- parameters


def affine_matrices(omega_base: tf.Tensor, theta: tf.Tensor) -> tf.Tensor:
  """Fusion matrices of the MetaFuse factorization (paper Eq. 2).

  Args:
    omega_base: [H, W] base fusion map shared by all pairs and pixels ([T, H, W] per task with
      theta [T, ..., HW, 6]).
    theta: [P, H*W, 6] per target pixel affine parameters, normalized align_corners coordinates
      (see `mf_tf.fusion.sampler`).

  Returns:
    [P, HW_target, HW_source]: row i is omega_base warped by theta[p, i], sampled on the source
    view's pixel grid.
  """
  return sampler.warp_base(omega_base, theta)


def affine_product(omega_base: tf.Tensor, theta: tf.Tensor, sources: tf.Tensor, *,
                   chunk_pixels: int | None = None) -> tf.Tensor:
  """Fusion messages W h with the Eq. 2 matrices never materialized (`sampler.warp_product`).

  Equals `tf.matmul(affine_matrices(omega_base, theta), sources)`, values and gradients of every
  order; the warps exist one chunk of target pixels at a time, forward and backward.

  Args:
    omega_base: [H, W] shared base map, or [P, H, W] one per leading index (per-task fast
      weights).
    theta: [P, HW_target, 6] affine parameters.
    sources: [P, H * W, C] source maps flattened row-major, e.g. frames x joints as columns.
    chunk_pixels: Target pixels per chunk (None: `sampler.remat_chunk_pixels`).

  Returns:
    [P, HW_target, C] in omega_base's dtype.
  """
  return sampler.warp_product(omega_base, theta, sources, chunk_pixels=chunk_pixels)


def identity_theta(heatmap_size, num_pairs: int | None = None) -> np.ndarray:
  """Neutral init: every row's warped base IS the base (theta = [1, 0, 0, 0, 1, 0]).

  Args:
    heatmap_size: int or (H, W).
    num_pairs: Leading pair dimension; None gives [HW, 6].

  Returns:
    float32 [num_pairs, HW, 6] (or [HW, 6]).
  """
  height, width = heatmap_hw(heatmap_size)
  theta = np.tile(np.array([1, 0, 0, 0, 1, 0], np.float32), (height * width, 1))
  return theta if num_pairs is None else np.tile(theta[None], (int(num_pairs), 1, 1))


def translation_theta(heatmap_size, num_pairs: int | None = None) -> np.ndarray:
  """Neutral geometric init: row i's base is centred on target pixel i's position in the source.

  theta_i = [1, 0, -x_i, 0, 1, -y_i] with (x_i, y_i) target pixel i in normalized coordinates,
  so the source pixel at the same position as target pixel i samples the base's centre. With a
  line base (`line_base`) this is the epipolar geometry of a rectified horizontal stereo pair;
  with a blob base it is "same pixel" correspondence. This is the default theta init of
  `AffineFusion` (the paper learns theta and does not state its init).

  Returns:
    float32 [num_pairs, HW, 6] (or [HW, 6] when num_pairs is None).
  """
  height, width = heatmap_hw(heatmap_size)
  grid_x, grid_y = (g.numpy() for g in sampler.normalized_grid(height, width, tf.float64))
  ones, zeros = np.ones_like(grid_x), np.zeros_like(grid_x)
  theta = np.stack([ones, zeros, -grid_x, zeros, ones, -grid_y], axis=-1).astype(np.float32)
  return theta if num_pairs is None else np.tile(theta[None], (int(num_pairs), 1, 1))


def line_base(heatmap_size, width_px: float = 1.0, value: float = 1.0) -> np.ndarray:
  """A horizontal line through the centre of the base map (the epipolar-line prior).

  Args:
    heatmap_size: int or (H, W).
    width_px: Standard deviation of the line's Gaussian cross-section, in pixels.
    value: Peak value on the line's centre row position.

  Returns:
    float32 [H, W]; the line's centre is row (H - 1) / 2 (normalized y = 0).
  """
  height, width = heatmap_hw(heatmap_size)
  if width_px <= 0:
    raise ValueError(f"width_px must be positive, got {width_px}")
  rows = np.arange(height, dtype=np.float64) - 0.5 * (height - 1)
  profile = value * np.exp(-0.5 * (rows / width_px) ** 2)
  return np.tile(profile[:, None], (1, width)).astype(np.float32)


# ----------------------------------------------------------------------------- fusion


def pair_layout(num_views: int):
  pairs = ordered_pairs(num_views)
  return pairs[:, 0], num_views - 1


def view_columns(heatmaps: tf.Tensor) -> tf.Tensor:
  """[B, V, H, W, J] -> [V, HW, B * J]: each view's maps as columns, one matmul per pair."""
  num_views, height, width, num_joints = (heatmaps.shape[i] for i in range(1, 5))
  return tf.reshape(tf.transpose(heatmaps, [1, 2, 3, 0, 4]),
                    [num_views, height * width, tf.shape(heatmaps)[0] * num_joints])


def add_messages(heatmaps: tf.Tensor, messages: tf.Tensor) -> tf.Tensor:
  """Eq. 1's sum: heatmaps [B, V, H, W, J] plus per-pair messages [P, HW, B * J] (pair order)."""
  num_views, height, width, num_joints = (heatmaps.shape[i] for i in range(1, 5))
  _, per_target = pair_layout(num_views)
  batch = tf.shape(heatmaps)[0]
  messages = tf.reduce_sum(
      tf.reshape(messages, [num_views, per_target, height * width, batch * num_joints]), axis=1)
  return add_view_messages(heatmaps, messages)


def add_view_messages(heatmaps: tf.Tensor, messages: tf.Tensor) -> tf.Tensor:
  """Heatmaps [B, V, H, W, J] plus each target view's summed messages [V, HW, B * J]."""
  num_views, height, width, num_joints = (heatmaps.shape[i] for i in range(1, 5))
  batch = tf.shape(heatmaps)[0]
  messages = tf.transpose(
      tf.reshape(messages, [num_views, height, width, batch, num_joints]), [3, 0, 1, 2, 4])
  return heatmaps + messages


def check_num_pairs(num_views: int, num_pairs, what: str):
  if num_pairs is not None and num_pairs != num_pairs_for(num_views):
    raise ValueError(f"{num_views} views need {num_pairs_for(num_views)} {what}, got "
                     f"{num_pairs}")


def fuse(heatmaps: tf.Tensor, matrices: tf.Tensor) -> tf.Tensor:
  """Paper Eq. 1 for every view: fused_v = h_v + sum_{u != v} W_{u->v} h_u.

  Args:
    heatmaps: [B, V, H, W, J] initial heatmaps.
    matrices: [P, HW_target, HW_source] with P = V (V - 1), `ordered_pairs` order.

  Returns:
    [B, V, H, W, J] fused heatmaps (before the temperature softmax).
  """
  heatmaps = tf.convert_to_tensor(heatmaps)
  matrices = tf.convert_to_tensor(matrices, heatmaps.dtype)
  num_views = int(heatmaps.shape[1])
  check_num_pairs(num_views, matrices.shape[0], "fusion matrices")
  sources, _ = pair_layout(num_views)
  messages = tf.matmul(matrices, tf.gather(view_columns(heatmaps), sources))  # [P, HW, B * J]
  return add_messages(heatmaps, messages)


def fuse_affine(heatmaps: tf.Tensor, omega_base: tf.Tensor, theta: tf.Tensor, *,
                chunk_pixels: int | None = None) -> tf.Tensor:
  """Paper Eq. 1 with the Eq. 2 matrices, never materialized: fused_v = h_v + sum_u W_{u->v} h_u.

  Equals `fuse(heatmaps, affine_matrices(omega_base, theta))` (values and gradients of every
  order), computed by `affine_product`: one chunk of target pixels' warps at a time, and a
  rematerializing gradient that keeps no [P, HW, HW] tensor, at first or second order.

  Args:
    heatmaps: [B, V, H, W, J] initial heatmaps.
    omega_base: [H, W] base fusion map.
    theta: [P, HW, 6] per (ordered pair, target pixel) affine parameters, P = V (V - 1).
    chunk_pixels: Target pixels per chunk (None: `sampler.remat_chunk_pixels`).

  Returns:
    [B, V, H, W, J] fused heatmaps in the heatmaps' dtype (the parameters are cast to it).
  """
  heatmaps = tf.convert_to_tensor(heatmaps)
  omega_base = tf.cast(omega_base, heatmaps.dtype)
  theta = tf.cast(theta, heatmaps.dtype)
  num_views = int(heatmaps.shape[1])
  if tuple(omega_base.shape) != tuple(heatmaps.shape[2:4]):
    raise ValueError(f"omega_base has shape {omega_base.shape}, expected the heatmaps' "
                     f"{heatmaps.shape[2]}x{heatmaps.shape[3]} (heatmaps {heatmaps.shape})")
  check_num_pairs(num_views, theta.shape[0], "theta rows")
  sources, _ = pair_layout(num_views)
  messages = affine_product(omega_base, theta, tf.gather(view_columns(heatmaps), sources),
                            chunk_pixels=chunk_pixels)  # [P, HW, B * J]
  return add_messages(heatmaps, messages)


# ----------------------------------------------------------------------------- softmax, loss


def softmax_temperature(heatmaps: tf.Tensor, temperature: float = DEFAULT_TEMPERATURE):
  """Spatial softmax with temperature per (batch, view, joint) channel; each channel sums to 1.

  Args:
    heatmaps: [B, V, H, W, J] (any [..., H, W, J]).
    temperature: T > 0; smaller is sharper (paper: 0.2).

  Returns:
    Same shape, softmax(h / T) over the H * W pixels of each channel.
  """
  heatmaps = tf.convert_to_tensor(heatmaps)
  shape = tf.shape(heatmaps)
  rank = heatmaps.shape.rank
  flat = tf.reshape(heatmaps, tf.concat([shape[:rank - 3], [-1, shape[rank - 1]]], 0))
  return tf.reshape(tf.nn.softmax(flat / temperature, axis=-2), shape)


def peak_normalized_softmax(heatmaps: tf.Tensor, temperature: float = DEFAULT_TEMPERATURE):
  """Temperature softmax rescaled so each channel's maximum is exactly 1.

  softmax_T(h) / max(softmax_T(h)) = exp((h - max h) / T): the same argmax as h, on the scale of
  the peak-1 Gaussian targets (for display; `fusion_loss` uses the mass-matched softmax).

  Args:
    heatmaps: [..., H, W, J].
    temperature: T > 0.

  Returns:
    Same shape, values in (0, 1], 1 at each channel's argmax.
  """
  heatmaps = tf.convert_to_tensor(heatmaps)
  peak = tf.reduce_max(heatmaps, axis=[-3, -2], keepdims=True)
  return tf.exp((heatmaps - peak) / temperature)


LOSSES = ("mse", "ce")


def fusion_loss(fused: tf.Tensor, target: tf.Tensor, weights: tf.Tensor | None = None,
                temperature: float = DEFAULT_TEMPERATURE, kind: str = "mse") -> tf.Tensor:
  """Paper Eq. 3 with the temperature softmax: a per-channel loss of softmax_T(fused).

  kind="mse" (the paper's "MSE to the ground-truth heatmaps"; its normalization is not stated).
  Choice made here: the softmax (which sums to 1) is rescaled to the target channel's mass,
  prediction = softmax_T(fused) * sum(target), and compared with the peak-1 Gaussian target:
    * the prediction keeps the argmax of the fused heatmap (the 2D estimate);
    * the optimum is fused = T * log(target) + c, i.e. the softmax equals the normalized target;
    * probability mass competes across pixels: a wrong peak is pushed down, the true one up
      (rescaling to peak 1 instead, exp((f - max f) / T), sharpens a wrong argmax; rejected);
    * magnitudes are O(1): the squared error is SUMMED over pixels (about 2 * pi * sigma^2 for a
      peak in the wrong place, independent of heatmap size).
  kind="ce": cross-entropy between the normalized target q = target / sum(target) and
  softmax_T(fused), -sum_i q_i log softmax_T(fused)_i, minus the target's entropy (so a perfect
  prediction scores 0). Same optimum as "mse"; the gradient does not vanish when the softmax puts
  almost no mass near the true joint (the MSE gradient there is about the small predicted mass).

  Either way the per-channel value is averaged over all B * V * J channels, each multiplied by
  its weight (visibility; an all-zero target contributes 0).

  Args:
    fused: [B, V, H, W, J] fused heatmaps (pre-softmax).
    target: [B, V, H, W, J] Gaussian targets with peak 1.
    weights: [B, V, J] per-channel weights (0 drops a channel), or None for all ones.
    temperature: Softmax temperature T.
    kind: "mse" or "ce" (`LOSSES`).

  Returns:
    Scalar loss (float32 unless the inputs are float64).
  """
  if kind not in LOSSES:
    raise ValueError(f"fusion loss kind={kind!r}, expected one of {LOSSES}")
  fused = tf.convert_to_tensor(fused)
  target = tf.cast(target, fused.dtype)
  mass = tf.reduce_sum(target, axis=[-3, -2], keepdims=True)
  if kind == "mse":
    prediction = softmax_temperature(fused, temperature) * mass
    per_channel = tf.reduce_sum(tf.square(prediction - target), axis=[-3, -2])  # [B, V, J]
  else:
    shape = tf.shape(fused)
    rank = fused.shape.rank
    flat_shape = tf.concat([shape[:rank - 3], [-1, shape[rank - 1]]], 0)
    log_p = tf.nn.log_softmax(tf.reshape(fused, flat_shape) / temperature, axis=-2)
    q = tf.math.divide_no_nan(target, mass)
    q_flat = tf.reshape(q, flat_shape)
    entropy = -tf.reduce_sum(tf.math.multiply_no_nan(tf.math.log(q_flat), q_flat), axis=-2)
    per_channel = -tf.reduce_sum(q_flat * log_p, axis=-2) - entropy
  if weights is not None:
    per_channel = per_channel * tf.cast(weights, fused.dtype)
  return tf.reduce_mean(per_channel)


def theta_field_basis(heatmap_size, grid_size: int) -> np.ndarray:
  """Bilinear interpolation from a coarse g x g grid of thetas to every target pixel.

  A smooth theta field (`AffineFusion(theta_grid=g)`): theta at target pixel i is
  sum_k B[i, k] theta_grid[k], with the g x g grid nodes spanning the map corner to corner
  (align_corners). The true epipolar theta varies smoothly with the target pixel, so a few
  labelled frames, which touch only the pixels near joints, move the whole field.

  Args:
    heatmap_size: int or (H, W).
    grid_size: g >= 2 nodes per side.

  Returns:
    float32 [H * W, g * g]; rows sum to 1.
  """
  height, width = heatmap_hw(heatmap_size)
  grid_size = int(grid_size)
  if grid_size < 2:
    raise ValueError(f"theta grid_size={grid_size}, expected >= 2")

  def axis_weights(count):  # [count, g] 1-D linear interpolation weights.
    position = np.linspace(0.0, grid_size - 1.0, count) if count > 1 else np.zeros(1)
    low = np.clip(np.floor(position).astype(int), 0, grid_size - 2)
    frac = position - low
    weights = np.zeros((count, grid_size))
    weights[np.arange(count), low] = 1.0 - frac
    weights[np.arange(count), low + 1] += frac
    return weights

  rows, cols = axis_weights(height), axis_weights(width)
  return np.einsum("ra,cb->rcab", rows, cols).reshape(height * width,
                                                      grid_size * grid_size).astype(np.float32)


# ----------------------------------------------------------------------------- validation


def check_heatmaps(heatmaps: tf.Tensor, num_views: int, heatmap_size, *,
                   check_values: bool = True) -> tf.Tensor:
  """Validates a heatmap batch; raises one clear error or returns the tensor.

  Static shapes are checked in Python (ValueError, at trace time); values are checked with
  `tf.debugging.assert_all_finite` (InvalidArgumentError at run time, graph mode included; XLA
  drops the check, so jit-compiled training should validate its inputs once at the data boundary).

  Args:
    heatmaps: [B, V, H, W, J].
    num_views: Expected V.
    heatmap_size: Expected int or (H, W).
    check_values: Also assert every value is finite.

  Returns:
    The heatmaps (with the finiteness check attached in graph mode).
  """
  height, width = heatmap_hw(heatmap_size)
  shape = heatmaps.shape
  if shape.rank != 5:
    raise ValueError(f"heatmaps must be [batch, views, H, W, joints], got shape {shape}")
  if shape[1] is not None and shape[1] != num_views:
    raise ValueError(f"heatmaps have {shape[1]} views (shape {shape}), expected num_views="
                     f"{num_views}")
  if (shape[2] is not None and shape[2] != height) or (shape[3] is not None and shape[3] != width):
    raise ValueError(f"heatmaps are {shape[2]}x{shape[3]} (shape {shape}), expected heatmap_size "
                     f"{height}x{width}")
  if check_values:
    heatmaps = tf.debugging.assert_all_finite(
        heatmaps, f"heatmaps hold NaN or Inf (expected finite values, shape {shape})")
  return heatmaps


def check_finite(value: tf.Tensor, name: str) -> tf.Tensor:
  """Asserts a parameter tensor is finite; the message names it."""
  return tf.debugging.assert_all_finite(value, f"fusion parameter {name!r} holds NaN or Inf")
