"""Calibrated epipolar-line fusion (MetaFuse^0) for per-frame geometry, without HW x HW matrices.

The calibrated MetaFuse^0 (`mf_tf.fusion.calibrated`) fuses, into target pixel i of view v, every
pixel of the source view u near the epipolar line l_i = F^T x_i of that pixel:

    fused_v[i] = h_v[i] + sum_{u != v} B_u(l_i),   B_u(l) = sum_j g(d(j, l)) h_u[j]          (1)

with d the signed distance (pixels) of source pixel j to the line and g the line's cross-section.
Materialized, (1) is a [P, HW, HW] matrix per rig: fine for a fixed rig, not for person crops
whose geometry changes every frame (`mf_tf.geometry.crops`: one fundamental matrix per pair,
person and frame). Here (1) is evaluated per frame from the fundamental matrices alone:

  * The cross-section. The dense path's g is a Gaussian of std `line_width_px` and peak
    `line_value` sampled on the line base's rows (offsets r - (H - 1) / 2) and interpolated
    linearly between them (`ops.line_base` + the bilinear sampler): flat between the two
    central rows for an even H, with a kink at every row. Here g is the Gaussian with the same
    integral and variance (`band_profile`: the samples' variance plus 1/6, the linear
    interpolation's). Pointwise they differ by up to 6 % of the peak; in the messages, summed
    over the heatmaps' peaks, by 1-3 % of the largest message (1.1 % on the 4-view H36M case
    at 32 px, up to 3 % on 16 px maps with peaks of std 1.2 px; the tests in
    tests/fusion/test_fusion_epipolar_fusion.py). The kinks are what the Gaussian removes:
    through them a band sum is a kinked function of the line's position, which lines sampled
    1 px apart interpolate only to 1 %, and the profile along a pixel column depends on the
    line's angle, so no single prefiltered map serves every line.
  * Band sums as line integrals. With a Gaussian g, B_u(l) is the integral along l of the source
    map blurred by the isotropic 2-D Gaussian of the same std, times the integral of g (across
    the line the blur integrates to g(d), along it to 1). One separable blur per view serves
    every line, whatever its direction. The integral runs along the line's major axis (x for
    lines closer to horizontal, "family 0"; y otherwise, "family 1") at every `major_step`-th
    pixel, the blurred map interpolated across by a cubic B-spline on the pixel lattice (its
    prefilter folded into the blur; a quadratic one, 3 rows instead of 4, raised the sampling
    error for sharp peaks on small maps from 0.86 % to 1.2 %).
  * Pencils. All source lines l_i of a pair pass through the source epipole e. Per pair and
    family, lines through e are sampled uniformly in t, the minor coordinate where they cross
    a reference major coordinate outside the map (uniform in slope for a finite e, in offset
    for an infinite one), over the range the target pixels need, at most `spacing` pixels
    apart anywhere in the map, plus `LANCZOS_LOBES` lines beyond each end.
  * Targets. Each family's band sums are resampled `UPSAMPLE` times finer in t (Lanczos kernel),
    and each target pixel interpolates its own line's sum linearly from those.

Sampling. The steps assume heatmap peaks no sharper than a Gaussian of std `HEATMAP_SIGMA_PX`:
blurred, they are smooth at s = sqrt(std(g)^2 + HEATMAP_SIGMA_PX^2) (1.47 px for the default
line), which sets the line spacing (`LINE_SPACING` s) and the step along the lines
(`MAJOR_STEP` s, whole pixels). Against Eq. (1) with the Gaussian g evaluated densely, the
messages differ by 0.2 % of their largest value for Gaussian heatmap peaks of std 1.5 px (4
views, 32 and 64 px) and by 0.5-0.9 % for std 1-1.2 px.

Cost per call, for L lines of M samples: a separable blur of each view per family (small matrix
products), L M rows of 4 J floats gathered for the band sums and P HW rows of 2 J for the
targets. For 4 views at 64 x 64 and 17 joints about 1500 lines of 37 samples (5.3 M floats read
in all), against P HW^2 J multiply-adds (3.4 G) for the dense product and P HW^2 floats of
matrices to build.

Two array backends run the same code: `epipolar_fuse` (eager use, e.g. `mf_tf.modes.video`) runs
it in NumPy, the faster on a CPU; `line_plan` and `apply_line_plan` run it in TensorFlow ops,
which a SavedModel holds (`mf_tf.serving.export`'s fuse_crops signature). The sampling settings
named above, the cross-section, the layout and the per-frame plan (pencils, lines, samples,
targets) are in `mf_tf.fusion.epipolar_plan`; this module holds the backends, the blur and the
application of a plan.

Conventions: heatmaps [V, H, W, J] (one person, each view in its own frame, e.g. its crop),
pixel centres at integers (x = column, y = row); fundamental matrices [P, 3, 3] between the
heatmap frames with x_target^T F x_source = 0 (undistorted), pairs in
`mf_tf.geometry.rig.ordered_pairs` order (grouped by target). A target pixel without an epipolar
line (the epipole itself) or whose line misses the source map by more than `BAND_SUPPORT_SIGMAS`
stds of g receives nothing from it.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from mf_tf.fusion import epipolar_plan
from mf_tf.fusion import ops
from mf_tf.fusion.epipolar_plan import (DEFAULT_LINE_VALUE, DEFAULT_LINE_WIDTH_PX, band_profile,
                                         default_num_lines)

__all__ = ["DEFAULT_LINE_VALUE", "DEFAULT_LINE_WIDTH_PX", "apply_line_plan", "band_profile",
           "default_num_lines", "epipolar_fuse", "line_plan"]


# ----------------------------------------------------------------------------- array backends


class _NumpyOps:
  """The array operations of `epipolar_plan.build_plan` and `_apply`, in NumPy."""
  f32, f64, int_ = np.float32, np.float64, np.int64
  asarray = staticmethod(np.asarray)
  take = staticmethod(lambda a, index: np.take(a, index, axis=0))
  matmul = staticmethod(np.matmul)
  einsum = staticmethod(np.einsum)
  where = staticmethod(np.where)
  floor = staticmethod(np.floor)
  sqrt = staticmethod(np.sqrt)
  abs = staticmethod(np.abs)
  maximum = staticmethod(np.maximum)
  isfinite = staticmethod(np.isfinite)
  stack = staticmethod(np.stack)
  concat = staticmethod(np.concatenate)
  reshape = staticmethod(np.reshape)
  transpose = staticmethod(np.transpose)
  cumsum = staticmethod(np.cumsum)
  repeat = staticmethod(np.repeat)
  # np.clip took 3 times as long on [L, M] arrays.
  clip = staticmethod(lambda x, low, high: np.minimum(np.maximum(x, low), high))
  argmax = staticmethod(np.argmax)
  min = staticmethod(np.min)
  max = staticmethod(np.max)
  sum = staticmethod(np.sum)
  arange = staticmethod(lambda n, dtype: np.arange(n, dtype=dtype))
  zeros = staticmethod(np.zeros)

  @staticmethod
  def cast(x, dtype):
    return np.asarray(x).astype(dtype, copy=False)

  @staticmethod
  def window_sums(table, start, weights):
    """sum_{m, k} weights[l, m, k] table[start[l, m] + k]: [R, J], [L, M], [L, M, K] -> [L, J].

    Blocks of 256 lines keep the gathered rows (M K J floats a line) in cache for the product:
    at 64 px, 2.8 ms against 3.7 ms in one go.
    """
    length, num_joints = weights.shape[2], table.shape[1]
    table = np.ascontiguousarray(table)
    windows = np.lib.stride_tricks.as_strided(
        table, (table.shape[0] - length + 1, length * num_joints), table.strides)
    flat_weights = weights.reshape(len(weights), 1, start.shape[1] * length)
    sums = np.empty((len(weights), num_joints), np.float32)
    for first in range(0, len(weights), 256):
      block = slice(first, first + 256)
      sums[block] = np.matmul(flat_weights[block], windows[start[block]].reshape(
          -1, start.shape[1] * length, num_joints))[:, 0]
    return sums

  @staticmethod
  def target_sums(fine, rows, weights):
    """sum_{s, k} weights[p, s, k] fine[rows[p, s, k]]: [R, J], [..., S, 2], [..., S, 2] -> [P, J].

    Every target reads two neighbouring rows (rows[..., 1] = rows[..., 0] + 1, `build_plan`): one
    gather from a table of row pairs moves both (at 64 px, 4 views: 0.2 ms against 0.5 ms for
    the rows one by one). One [1, 2 S] x [2 S, J] product per target (0.9 ms against 1.1 ms for
    einsum and 1.3 ms for the weighted rows summed slice by slice). In one go rather than in
    blocks that stay in cache: the gathered rows (6.7 MiB there) are the call's largest array,
    and glibc's malloc then keeps that much freed memory for the next call; with blocks of 2048
    targets it handed the call's arrays back to the system and the next call faulted them in
    again (4 views: 11.2 ms against 6.9 ms a call in a process that does nothing else).
    """
    num_joints, num_reads = fine.shape[1], 2 * rows.shape[-2]
    pairs = np.concatenate([fine[:-1], fine[1:]], 1)  # [R - 1, 2 J]
    gathered = np.take(pairs, rows[..., 0], axis=0)  # [..., S, 2 J]
    flat_weights = weights.reshape(-1, 1, num_reads)
    return np.matmul(flat_weights, gathered.reshape(len(flat_weights), num_reads,
                                                    num_joints))[:, 0]


class _TensorflowOps:
  """The array operations of `epipolar_plan.build_plan` and `_apply`, in TensorFlow (traceable)."""
  f32, f64, int_ = tf.float32, tf.float64, tf.int64
  asarray = staticmethod(tf.convert_to_tensor)
  cast = staticmethod(tf.cast)
  take = staticmethod(tf.gather)
  matmul = staticmethod(tf.matmul)
  einsum = staticmethod(tf.einsum)
  where = staticmethod(tf.where)
  floor = staticmethod(tf.floor)
  sqrt = staticmethod(tf.sqrt)
  abs = staticmethod(tf.abs)
  maximum = staticmethod(tf.maximum)
  isfinite = staticmethod(tf.math.is_finite)
  stack = staticmethod(tf.stack)
  concat = staticmethod(tf.concat)
  reshape = staticmethod(tf.reshape)
  transpose = staticmethod(tf.transpose)
  cumsum = staticmethod(tf.cumsum)
  repeat = staticmethod(tf.repeat)
  clip = staticmethod(tf.clip_by_value)
  argmax = staticmethod(lambda x, axis: tf.argmax(x, axis, output_type=tf.int64))
  min = staticmethod(tf.reduce_min)
  max = staticmethod(tf.reduce_max)
  sum = staticmethod(tf.reduce_sum)
  arange = staticmethod(lambda n, dtype: tf.range(n, dtype=dtype))
  zeros = staticmethod(tf.zeros)

  @staticmethod
  def window_sums(table, start, weights):
    """sum_{m, k} weights[l, m, k] table[start[l, m] + k]: [R, J], [L, M], [L, M, K] -> [L, J]."""
    length, num_joints = int(weights.shape[2]), int(table.shape[1])
    windows = tf.reshape(tf.signal.frame(table, length, 1, axis=0), [-1, length * num_joints])
    samples = tf.reshape(tf.gather(windows, start),
                         [-1, int(start.shape[1]) * length, num_joints])
    sums = tf.matmul(tf.reshape(weights, [-1, 1, int(start.shape[1]) * length]), samples)
    return tf.reshape(sums, [-1, num_joints])

  @staticmethod
  def target_sums(fine, rows, weights):
    """sum_{s, k} weights[p, s, k] fine[rows[p, s, k]]: [R, J], [..., S, 2] twice -> [P, J]."""
    num_joints, num_reads = int(fine.shape[1]), 2 * int(rows.shape[-2])
    gathered = tf.reshape(tf.gather(fine, rows), [-1, num_reads, num_joints])
    return tf.reshape(tf.matmul(tf.reshape(weights, [-1, 1, num_reads]), gathered),
                      [-1, num_joints])


# ----------------------------------------------------------------------------- apply


def _blurred(xp, heatmaps, family: epipolar_plan.Family, major_axis: int):
  """[V, H, W, J] -> [V M N, J]: the blurred maps at a family's samples and lattice rows.

  Row (v, m, n) holds view v at major coordinate samples[m] and minor coordinate
  minor_origin + n, as B-spline coefficients across. Both products run as batches of small
  matrices (at most 2^18 multiply-adds each): OpenBLAS keeps those on one thread, whose
  latency does not depend on other processes' load (two threads waited up to 60 ms for a core
  on a shared 2-core machine, against 1 ms for the whole blur on one).
  """
  num_joints = int(heatmaps.shape[3])
  # [V, minor, major, J]; the transposes are strided views for NumPy's batched products.
  rows = heatmaps if major_axis == 2 else xp.transpose(heatmaps, [0, 2, 1, 3])
  along = xp.matmul(xp.asarray(family.blur_major, xp.f32), rows)  # [V, minor, M, J]
  across = xp.matmul(xp.asarray(family.blur_minor, xp.f32), xp.transpose(along, [0, 2, 1, 3]))
  return xp.reshape(across, [-1, num_joints])  # [V M N, J]


def _band_sums(xp, heatmaps, plan: dict, layout: epipolar_plan.Layout):
  """[V, H, W, J] -> [L, J]: every line's band sum B_u(l) (Eq. 1)."""
  table = xp.concat([_blurred(xp, heatmaps, layout.families[0], 2),
                     _blurred(xp, heatmaps, layout.families[1], 1)], 0)
  return xp.window_sums(table, plan["band_rows"], plan["band_weights"])


def _apply(xp, heatmaps, plan: dict, layout: epipolar_plan.Layout):
  """Eq. (1) with a plan (`epipolar_plan.build_plan`): [V, H, W, J] float32 -> fused heatmaps."""
  num_views, height, width, num_joints = (int(d) for d in heatmaps.shape)
  windows = xp.take(_band_sums(xp, heatmaps, plan, layout), plan["window_rows"])
  fine = xp.reshape(xp.matmul(xp.asarray(layout.lanczos, xp.f32)[None], windows),
                    [-1, num_joints])
  fine = xp.concat([fine, xp.zeros([2, num_joints], xp.f32)], 0)
  messages = xp.target_sums(fine, plan["target_rows"], plan["target_weights"])
  return heatmaps + xp.reshape(messages, [num_views, height, width, num_joints])


# ----------------------------------------------------------------------------- public API


def line_plan(fundamental, heatmap_size, *, line_width_px: float = DEFAULT_LINE_WIDTH_PX,
              line_value: float = DEFAULT_LINE_VALUE,
              num_lines: int | None = None) -> dict[str, tf.Tensor]:
  """Lines, band-sum samples and target interpolation of one frame, in TensorFlow ops.

  Traceable (a SavedModel signature builds it per frame); `apply_line_plan` applies it.

  Args:
    fundamental: [P, 3, 3] x_target^T F x_source = 0 in heatmap pixels, P = V (V - 1) in
      `ordered_pairs` order.
    heatmap_size: (H, W) or int: every view's heatmap size.
    line_width_px: Std of the dense line base's cross-section, pixels (> 0).
    line_value: Peak of the cross-section (the line base's value).
    num_lines: Most core pencil lines per pair (>= 4); None: `default_num_lines`.

  Returns:
    dict of tensors (L lines of M samples, C line intervals, V views, HW pixels): band_rows
      [L, M] int64, band_weights [L, M, 4] float32, window_rows [C, 2 LANCZOS_LOBES] int64,
      target_rows [V, HW, V - 1, 2] int64, target_weights [V, HW, V - 1, 2] float32 (`build_plan`),
      and settings [4] float64 (H, W, line_width_px, line_value) for `apply_line_plan`.
  """
  height, width = ops.heatmap_hw(heatmap_size)
  num_lines = default_num_lines((height, width), num_lines, line_width_px)
  if num_lines < 4:
    raise ValueError(f"num_lines={num_lines}, expected >= 4 lines per pair")
  layout = epipolar_plan.sampling_layout(height, width, float(line_width_px),
                                         float(line_value))
  fundamental = tf.cast(tf.convert_to_tensor(fundamental), tf.float64)
  if fundamental.shape.rank != 3 or tuple(fundamental.shape[1:]) != (3, 3):
    raise ValueError(f"fundamental has shape {fundamental.shape}, expected [P, 3, 3]")
  plan = epipolar_plan.build_plan(_TensorflowOps, fundamental, layout, num_lines)
  plan["settings"] = tf.constant([height, width, line_width_px, line_value], tf.float64)
  return plan


def apply_line_plan(heatmaps, plan: dict[str, tf.Tensor]) -> tf.Tensor:
  """Eq. (1) of the module docstring with a `line_plan`, in TensorFlow ops.

  Args:
    heatmaps: [V, H, W, J] float32 with static shape.
    plan: `line_plan(...)` of the same number of views and heatmap size.

  Returns:
    [V, H, W, J] fused heatmaps.
  """
  heatmaps = tf.convert_to_tensor(heatmaps, tf.float32)
  height, width, line_width_px, line_value = (
      float(v) for v in tf.get_static_value(plan["settings"]))
  if tuple(heatmaps.shape[1:3]) != (int(height), int(width)):
    raise ValueError(f"heatmaps have shape {heatmaps.shape}, the plan is for "
                     f"{int(height)}x{int(width)} maps")
  layout = epipolar_plan.sampling_layout(int(height), int(width), line_width_px, line_value)
  return _apply(_TensorflowOps, heatmaps, plan, layout)


def epipolar_fuse(heatmaps, fundamental, *, line_width_px: float = DEFAULT_LINE_WIDTH_PX,
                  line_value: float = DEFAULT_LINE_VALUE,
                  num_lines: int | None = None) -> tf.Tensor:
  """Calibrated epipolar-line fusion (Eq. 1) of one person's heatmaps under per-frame geometry.

  Builds the line plan from the fundamental matrices and applies it, in NumPy.

  Args:
    heatmaps: [V, H, W, J] heatmaps, each view in its own frame (e.g. a person crop).
    fundamental: [V (V - 1), 3, 3] between the heatmap frames, x_target^T F x_source = 0,
      `ordered_pairs` order (e.g. `mf_tf.geometry.crops.crop_fundamental_matrix`).
    line_width_px: Std of the dense line base's cross-section, heatmap pixels.
    line_value: Peak weight on the line.
    num_lines: Most core pencil lines per pair (see `line_plan`).

  Returns:
    [V, H, W, J] float32 fused heatmaps (no softmax).
  """
  heatmaps = np.asarray(heatmaps, np.float32)
  if heatmaps.ndim != 4:
    raise ValueError(f"heatmaps have shape {heatmaps.shape}, expected [V, H, W, J]")
  num_views, height, width = heatmaps.shape[:3]
  fundamental = np.asarray(fundamental, np.float64)
  expected = (num_views * (num_views - 1), 3, 3)
  if num_views < 2 or fundamental.shape != expected:
    raise ValueError(f"fundamental has shape {fundamental.shape}, expected {expected} for "
                     f"{num_views} views (V >= 2, pairs in ordered_pairs order)")
  if not np.all(np.isfinite(fundamental)):
    raise ValueError("fundamental holds NaN or Inf; expected finite matrices")
  num_lines = default_num_lines((height, width), num_lines, line_width_px)
  if num_lines < 4:
    raise ValueError(f"num_lines={num_lines}, expected >= 4 lines per pair")
  layout = epipolar_plan.sampling_layout(int(height), int(width), float(line_width_px),
                                         float(line_value))
  plan = epipolar_plan.build_plan(_NumpyOps, fundamental, layout, num_lines)
  return tf.constant(_apply(_NumpyOps, heatmaps, plan, layout))
