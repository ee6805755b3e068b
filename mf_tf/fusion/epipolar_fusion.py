"""Calibrated epipolar-line fusion (MetaFuse^0) for per-frame geometry, without HW x HW matrices.

The calibrated MetaFuse^0 (`mf_tf.fusion.calibrated`) fuses, into target pixel i of view v, every
pixel of the source view u near the epipolar line l_i = F^T x_i of that pixel:

    fused_v[i] = h_v[i] + sum_{u != v} sum_j g(d(j, l_i)) h_u[j]                       (1)

with d the signed distance (pixels) of source pixel j to the line and g the line base's
cross-section: a Gaussian of standard deviation `line_width_px` and peak `line_value` sampled on
the base's pixel rows (offsets r - (H - 1) / 2) and interpolated linearly between them, which is
what `ops.line_base` + the bilinear sampler give. Materialized, (1) is a [P, HW, HW] matrix per
rig: fine for a fixed rig, not for person crops whose geometry changes every frame
(`mf_tf.geometry.crops`: one fundamental matrix per pair, person and frame).

Here (1) is evaluated line by line, with no dense matrix:

  * Band sums. The inner sum of (1) for one line l is computed exactly: the pixels of the
    source map within `band_support` (3.5 sigma) of the line are enumerated along the line's
    major axis (columns for a line closer to horizontal, rows otherwise): at each of the
    max(H, W) major coordinates, the few pixels of the minor axis around the line (2 ceil(3.5
    sigma sqrt 2) + 2 of them), each weighted by g of its distance. This is the "equivalent 1-D
    weight" of the band: g itself, not a Gaussian blur followed by bilinear samples (that
    approximation was tried: its weights depend on the line's sub-pixel phase and moved 5 % of
    the argmaxes away from the dense fusion's).
  * Pencil sharing. All source lines l_i pass through the source epipole, so `num_lines` lines of
    that pencil are summed per pair, spread uniformly over the range of the pencil that the
    target pixels need, and each target pixel interpolates its own line's sum from the 4 nearest
    (Catmull-Rom in the pencil parameter). The pencil is parametrized by the angle of the
    line around the epipole when the epipole lies within twice the map's half-diagonal R of its
    centre, and otherwise (far or infinite epipole, nearly parallel lines) by where the line
    crosses the line through the centre perpendicular to them.

Cost per call: P K max(H, W) R J multiply-adds for the band sums (R the minor-axis pixels, 12 for
sigma = 1) and 4 P HW J for the targets, against P HW^2 J for the dense product (and P HW^2
floats of matrices to build). For 4 views at 64 x 64, 17 joints: 22 M against 3.4 G.

Conventions: heatmaps [V, H, W, J] (one person, each view in its own frame, e.g. its crop),
pixel centres at integers (x = column, y = row); fundamental matrices [P, 3, 3] between the
heatmap frames with x_target^T F x_source = 0 (undistorted), pairs in
`mf_tf.geometry.rig.ordered_pairs` order. A target pixel without an epipolar line (the epipole
itself) or whose line misses the source map (by more than the band) receives nothing from it.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from mf_tf.fusion import ops
from mf_tf.geometry.rig import ordered_pairs

DEFAULT_LINE_WIDTH_PX = 1.0  # As the calibrated MetaFuse^0 (config.fusion.line_width_px).
DEFAULT_LINE_VALUE = 0.1  # As config.fusion.line_value.
# Pencil lines per pair, per pixel of the heatmap side. Measured against the dense calibrated
# fusion on the 4-view H36M rig at 32 px (tests/fusion/test_fusion_epipolar_fusion.py): the band
# sums are piecewise linear in the line's position (g is), so the interpolation error falls as
# 1 / K: 4 x side lines: messages within 0.7 % of their peak, 99.3 % of argmaxes equal; 2 x side:
# 1.4 %, 98.6 %; 1 x side: 6 %, 94 %.
LINES_PER_PIXEL = 4.0
BAND_SUPPORT_SIGMAS = 3.5  # g beyond 3.5 sigma is below 0.3 % of its peak.
_FAR_EPIPOLE = 2.0  # Epipoles beyond 2 R from the map centre use the offset parametrization.


def default_num_lines(heatmap_size, num_lines: int | None = None) -> int:
  """Pencil lines per pair: `num_lines` when given, else LINES_PER_PIXEL x the heatmap side."""
  if num_lines is not None:
    return int(num_lines)
  return max(2, round(LINES_PER_PIXEL * max(ops.heatmap_hw(heatmap_size))))


def band_layout(heatmap_size, line_width_px: float) -> tuple[float, int, int, int]:
  """(support px, half, minor pixels R, major coordinates M) of the band enumeration.

  Pixels with |d| <= support are summed; along the minor axis a line at angle <= 45 degrees from
  the major axis needs support sqrt(2) pixels on each side, hence rows floor(q) - half ..
  floor(q) + half + 1 around its minor coordinate q.
  """
  height, width = ops.heatmap_hw(heatmap_size)
  support = BAND_SUPPORT_SIGMAS * float(line_width_px)
  half = int(math.ceil(support * math.sqrt(2.0)))
  return support, half, 2 * half + 2, max(height, width)


def _wrap_half_turn(angle):
  """Angles of unoriented lines into [-pi/2, pi/2)."""
  return angle - math.pi * tf.floor((angle + 0.5 * math.pi) / math.pi)


def line_plan(fundamental, heatmap_size, *, line_width_px: float = DEFAULT_LINE_WIDTH_PX,
              line_value: float = DEFAULT_LINE_VALUE,
              num_lines: int | None = None) -> dict[str, tf.Tensor]:
  """Pixels and weights of the band sums of every pair's pencil, and each target's lines.

  Pure TF, vectorized over pairs, lines, band pixels and target pixels (the pencil geometry in
  float64, the weights in float32).

  Args:
    fundamental: [P, 3, 3] x_target^T F x_source = 0 in heatmap pixels, P = V (V - 1) in
      `ordered_pairs` order.
    heatmap_size: (H, W) or int: every view's heatmap size.
    line_width_px: sigma, the std of the line's Gaussian cross-section in pixels (> 0).
    line_value: Peak of the cross-section (the line base's value).
    num_lines: K, pencil lines per pair (>= 2); None: `default_num_lines`.

  Returns:
    dict of
      line_index: [P * K, M * R] int32 rows of the flattened heatmaps [V * H * W, J] that each
        line's band sum reads (M, R from `band_layout`);
      line_weight: [P * K, M * R] float32 g(d) of each read (0 outside the map or the band);
      target_index: [V * H * W, 4 (V - 1)] int32 lines (rows of [P * K, J]) that each target
        pixel interpolates, its V - 1 source views in `ordered_pairs` order;
      target_weight: [V * H * W, 4 (V - 1)] float32 interpolation weights (0 where no line).
  """
  height, width = ops.heatmap_hw(heatmap_size)
  sigma = float(line_width_px)
  if not sigma > 0:
    raise ValueError(f"line_width_px={line_width_px}, expected a positive width in pixels")
  num_lines = default_num_lines((height, width), num_lines)
  if num_lines < 2:
    raise ValueError(f"num_lines={num_lines}, expected >= 2 lines per pair")
  fundamental = tf.cast(tf.convert_to_tensor(fundamental), tf.float64)
  if fundamental.shape.rank != 3 or tuple(fundamental.shape[1:]) != (3, 3):
    raise ValueError(f"fundamental has shape {fundamental.shape}, expected [P, 3, 3]")
  num_pairs = int(fundamental.shape[0])
  num_views = _views_for_pairs(num_pairs)
  support, half, num_rows, major_count = band_layout((height, width), sigma)
  # Lines reaching the band of any map pixel: they meet the map grown by the band's support.
  low = -support
  high_x, high_y = width - 1.0 + support, height - 1.0 + support
  centre = tf.constant([(width - 1) / 2.0, (height - 1) / 2.0], tf.float64)
  radius = 0.5 * math.hypot(high_x - low, high_y - low)

  # Target pixels and their source lines l = F^T x, as components [P, HW] (elementwise ops
  # fuse into one XLA loop; small einsums do not).
  rows, cols = np.mgrid[:height, :width]
  x = tf.constant(cols.ravel()[None], tf.float64)
  y = tf.constant(rows.ravel()[None], tf.float64)
  line_a, line_b, line_c = (fundamental[:, 0, i, None] * x + fundamental[:, 1, i, None] * y
                            + fundamental[:, 2, i, None] for i in range(3))
  norm = tf.sqrt(line_a * line_a + line_b * line_b)
  has_line = norm > 1e-12 * tf.maximum(tf.abs(line_c), 1.0)
  inverse = 1.0 / tf.where(has_line, norm, 1.0)
  line_a, line_b, line_c = line_a * inverse, line_b * inverse, line_c * inverse
  sides = [line_a * cx + line_b * cy + line_c
           for cx, cy in ((low, low), (high_x, low), (low, high_y), (high_x, high_y))]
  crosses_map = ((tf.reduce_min(tf.stack(sides), 0) <= 0)
                 & (tf.reduce_max(tf.stack(sides), 0) >= 0))
  valid = has_line & crosses_map

  # Source epipole (F e = 0) and the pencil's parametrization. [P]
  # The right null vector is orthogonal to every row of F: the largest cross product of two
  # rows (cheaper than an SVD under XLA, and exact for a rank-2 F).
  crosses = tf.stack([tf.linalg.cross(fundamental[:, 0], fundamental[:, 1]),
                      tf.linalg.cross(fundamental[:, 1], fundamental[:, 2]),
                      tf.linalg.cross(fundamental[:, 2], fundamental[:, 0])], 1)  # [P, 3, 3]
  best = tf.argmax(tf.norm(crosses, axis=-1), axis=1, output_type=tf.int32)
  epipole = tf.gather(crosses, best, batch_dims=1)
  epipole = epipole / tf.norm(epipole, axis=-1, keepdims=True)
  finite = tf.abs(epipole[:, 2]) > 1e-12 * tf.norm(epipole[:, :2], axis=-1)
  position = tf.where(finite[:, None], epipole[:, :2] / tf.where(finite, epipole[:, 2], 1.0)[
      :, None], 0.0)
  to_centre = centre - position
  distance = tf.where(finite, tf.norm(to_centre, axis=-1), np.inf)
  by_angle = finite & (distance < _FAR_EPIPOLE * radius)
  direction = tf.where(finite[:, None], to_centre, epipole[:, :2])  # Along the lines.
  direction_norm = tf.norm(direction, axis=-1, keepdims=True)
  direction = tf.where(direction_norm > 1e-12, direction / tf.maximum(direction_norm, 1e-300),
                       tf.constant([[1.0, 0.0]], tf.float64))
  normal = tf.stack([-direction[:, 1], direction[:, 0]], -1)  # [P, 2] the lines' mean normal.
  normal_angle = tf.atan2(normal[:, 1], normal[:, 0])

  def parameter(a, b, c):
    """Pencil parameter of lines (a, b, c), a^2 + b^2 = 1, leading dim P."""
    angle = _wrap_half_turn(tf.atan2(b, a) - normal_angle[:, None])
    across = a * normal[:, :1] + b * normal[:, 1:]
    offset = -(a * centre[0] + b * centre[1] + c) / tf.where(tf.abs(across) > 1e-9, across, 1.0)
    return tf.where(by_angle[:, None], angle, offset)

  target_parameter = parameter(line_a, line_b, line_c)  # [P, HW]
  first = tf.reduce_min(tf.where(valid, target_parameter, np.inf), axis=1)
  last = tf.reduce_max(tf.where(valid, target_parameter, -np.inf), axis=1)
  any_valid = tf.reduce_any(valid, axis=1)
  first = tf.where(any_valid, first, 0.0)
  last = tf.where(any_valid, last, 0.0)
  span = last - first
  steps = tf.cast(tf.range(num_lines), tf.float64) / (num_lines - 1)
  pencil = first[:, None] + span[:, None] * steps  # [P, K]

  # The pencil's lines in the source map. [P, K]
  angle = pencil + normal_angle[:, None]
  angle_a, angle_b = tf.cos(angle), tf.sin(angle)
  angle_c = -(angle_a * position[:, :1] + angle_b * position[:, 1:])
  through = centre + pencil[..., None] * normal[:, None]  # [P, K, 2]
  offset_line = tf.linalg.cross(
      tf.broadcast_to(epipole[:, None], [num_pairs, num_lines, 3]),
      tf.concat([through, tf.ones_like(through[..., :1])], -1))
  offset_norm = tf.maximum(tf.norm(offset_line[..., :2], axis=-1, keepdims=True), 1e-300)
  offset_line = offset_line / offset_norm
  a = tf.where(by_angle[:, None], angle_a, offset_line[..., 0])
  b = tf.where(by_angle[:, None], angle_b, offset_line[..., 1])
  c = tf.where(by_angle[:, None], angle_c, offset_line[..., 2])

  # Exact band sums of each line: sum_j g(d(j, l)) h_u[j] over the source pixels within
  # `support` of the line, enumerated along the line's major axis (x for lines closer to
  # horizontal): for each major coordinate m, the `rows` pixels of the minor axis around the
  # line, weighted by g (the linear interpolation of the base's Gaussian rows). [P, K, M, R]
  a, b, c = (tf.cast(v, tf.float32)[..., None, None] for v in (a, b, c))
  horizontal = tf.abs(b) >= tf.abs(a)
  major = tf.range(major_count, dtype=tf.float32)[:, None]  # [M, 1]
  # Minor coordinate of the line at each major coordinate, then the rows around it.
  minor_centre = -tf.where(horizontal, a * major + c, b * major + c) / tf.where(horizontal, b, a)
  minor = tf.floor(minor_centre) + tf.range(-half, half + 2, dtype=tf.float32)  # [P, K, M, R]
  major = tf.broadcast_to(major, minor.shape)
  xs = tf.where(horizontal, major, minor)
  ys = tf.where(horizontal, minor, major)
  distance = a * xs + b * ys + c  # Signed, pixels (a^2 + b^2 = 1).
  inside = ((xs >= 0) & (xs <= width - 1) & (ys >= 0) & (ys <= height - 1)
            & (tf.abs(distance) <= support))
  base_row = distance + 0.5 * (height - 1)  # The line base's row coordinate.
  row0 = tf.floor(base_row)
  frac = base_row - row0

  def base_value(row):
    offset = (row - 0.5 * (height - 1)) / sigma
    return tf.where((row >= 0) & (row <= height - 1), line_value * tf.exp(-0.5 * offset * offset),
                    0.0)

  line_weight = tf.where(inside, (1 - frac) * base_value(row0) + frac * base_value(row0 + 1),
                         0.0)
  source_view = tf.constant(ordered_pairs(num_views)[:, 0], tf.int32)[:, None, None, None]
  pixel = (tf.cast(tf.clip_by_value(ys, 0, height - 1), tf.int32) * width
           + tf.cast(tf.clip_by_value(xs, 0, width - 1), tf.int32))
  line_index = source_view * (height * width) + pixel

  # Each target pixel interpolates its line's integral from the 4 pencil lines around it
  # (Catmull-Rom: the error falls as spacing^4; linear interpolation needed 2x the lines for
  # half the accuracy). [P, HW]
  position_in_pencil = tf.where(span[:, None] > 0,
                                (target_parameter - first[:, None]) / tf.where(
                                    span > 0, span, 1.0)[:, None] * (num_lines - 1), 0.0)
  position_in_pencil = tf.where(valid, position_in_pencil, 0.0)
  position_in_pencil = tf.cast(position_in_pencil, tf.float32)
  lower = tf.clip_by_value(tf.floor(position_in_pencil), 0.0, num_lines - 2.0)
  t = tf.clip_by_value(position_in_pencil - lower, 0.0, 1.0)
  lower = tf.cast(lower, tf.int32)
  neighbours = tf.clip_by_value(lower[..., None] + tf.constant([-1, 0, 1, 2]), 0,
                                num_lines - 1)
  target_index = neighbours + (tf.range(num_pairs) * num_lines)[:, None, None]  # [P, HW, 4]
  t2, t3 = t * t, t * t * t
  mask = tf.cast(valid, tf.float32)
  target_weight = tf.stack([0.5 * (-t3 + 2 * t2 - t), 0.5 * (3 * t3 - 5 * t2 + 2),
                            0.5 * (-3 * t3 + 4 * t2 + t), 0.5 * (t3 - t2)], -1) * mask[..., None]

  def by_target(value):
    """Pairs are grouped by target: [P, HW, 4] -> [V HW, 4 (V - 1)]."""
    value = tf.reshape(value, [num_views, num_views - 1, height * width, 4])
    return tf.reshape(tf.transpose(value, [0, 2, 1, 3]),
                      [num_views * height * width, 4 * (num_views - 1)])

  return {
      "line_index": tf.reshape(line_index, [num_pairs * num_lines, major_count * num_rows]),
      "line_weight": tf.reshape(line_weight, [num_pairs * num_lines, major_count * num_rows]),
      "target_index": by_target(target_index),
      "target_weight": by_target(target_weight),
  }


def band_sums(heatmaps, line_index, line_weight) -> tf.Tensor:
  """[V, H, W, J] heatmaps -> [P * K, J] band sums (the inner sum of Eq. 1) of every line."""
  flat = tf.reshape(heatmaps, [-1, tf.shape(heatmaps)[-1]])
  return tf.einsum("nr,nrj->nj", line_weight, tf.gather(flat, line_index))


def target_messages(sums, target_index, target_weight) -> tf.Tensor:
  """[P * K, J] band sums -> [V * H * W, J] message of every target pixel, summed over sources."""
  return tf.einsum("nt,ntj->nj", target_weight, tf.gather(sums, target_index))


def apply_line_plan(heatmaps, plan: dict[str, tf.Tensor], compiled: bool = False) -> tf.Tensor:
  """Eq. (1) of the module docstring with a `line_plan`.

  Args:
    heatmaps: [V, H, W, J] float32.
    plan: `line_plan(...)` of the same number of views and heatmap size.
    compiled: Run the two stages (band sums, target messages) as XLA programs.

  Returns:
    [V, H, W, J] fused heatmaps.
  """
  heatmaps = tf.convert_to_tensor(heatmaps, tf.float32)
  sum_bands, gather = ((_band_sums_compiled, _messages_compiled) if compiled
                       else (band_sums, target_messages))
  sums = sum_bands(heatmaps, plan["line_index"], plan["line_weight"])
  messages = gather(sums, plan["target_index"], plan["target_weight"])
  return heatmaps + tf.reshape(messages, tf.shape(heatmaps))


def _plan(fundamental, height, width, line_width_px, line_value, num_lines):
  return line_plan(fundamental, (height, width), line_width_px=line_width_px,
                   line_value=line_value, num_lines=num_lines)


# Three programs rather than one: compiled together, XLA fuses the weights' computation into the
# gathers and recomputes it per joint (3x slower).
_plan_compiled = tf.function(_plan, jit_compile=True, autograph=False)
_band_sums_compiled = tf.function(band_sums, jit_compile=True, autograph=False)
_messages_compiled = tf.function(target_messages, jit_compile=True, autograph=False)


def epipolar_fuse(heatmaps, fundamental, *, line_width_px: float = DEFAULT_LINE_WIDTH_PX,
                  line_value: float = DEFAULT_LINE_VALUE, num_lines: int | None = None,
                  compiled: bool = True) -> tf.Tensor:
  """Calibrated epipolar-line fusion (Eq. 1) of one person's heatmaps under per-frame geometry.

  Builds the line plan from the fundamental matrices and applies it, each stage XLA-compiled
  (one trace per number of views, heatmap size and settings).

  Args:
    heatmaps: [V, H, W, J] heatmaps, each view in its own frame (e.g. a person crop).
    fundamental: [V (V - 1), 3, 3] between the heatmap frames, x_target^T F x_source = 0,
      `ordered_pairs` order (e.g. `mf_tf.geometry.crops.crop_fundamental_matrix`).
    line_width_px: Std of the line's Gaussian cross-section, heatmap pixels.
    line_value: Peak weight on the line.
    num_lines: Pencil lines per pair (see `line_plan`).
    compiled: Run under XLA (False: eager, for debugging).

  Returns:
    [V, H, W, J] float32 fused heatmaps (no softmax).
  """
  heatmaps = tf.convert_to_tensor(heatmaps, tf.float32)
  if heatmaps.shape.rank != 4:
    raise ValueError(f"heatmaps have shape {heatmaps.shape}, expected [V, H, W, J]")
  num_views, height, width = (int(d) for d in heatmaps.shape[:3])
  fundamental = np.asarray(fundamental, np.float64)
  expected = (num_views * (num_views - 1), 3, 3)
  if num_views < 2 or fundamental.shape != expected:
    raise ValueError(f"fundamental has shape {fundamental.shape}, expected {expected} for "
                     f"{num_views} views (V >= 2, pairs in ordered_pairs order)")
  if not np.all(np.isfinite(fundamental)):
    raise ValueError("fundamental holds NaN or Inf; expected finite matrices")
  num_lines = default_num_lines((height, width), num_lines)
  plan = (_plan_compiled if compiled else _plan)(
      tf.constant(fundamental), height, width, float(line_width_px), float(line_value),
      num_lines)
  return apply_line_plan(heatmaps, plan, compiled)


def _views_for_pairs(num_pairs: int) -> int:
  num_views = int(round(0.5 + math.sqrt(0.25 + num_pairs)))
  if num_views < 2 or num_views * (num_views - 1) != num_pairs:
    raise ValueError(f"{num_pairs} fundamental matrices is not V (V - 1) for any V >= 2")
  return num_views
