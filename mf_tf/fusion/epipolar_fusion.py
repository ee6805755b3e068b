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
which a SavedModel holds (`mf_tf.serving.export`'s fuse_crops signature).

Conventions: heatmaps [V, H, W, J] (one person, each view in its own frame, e.g. its crop),
pixel centres at integers (x = column, y = row); fundamental matrices [P, 3, 3] between the
heatmap frames with x_target^T F x_source = 0 (undistorted), pairs in
`mf_tf.geometry.rig.ordered_pairs` order (grouped by target). A target pixel without an epipolar
line (the epipole itself) or whose line misses the source map by more than `BAND_SUPPORT_SIGMAS`
stds of g receives nothing from it.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
import tensorflow as tf

from mf_tf.fusion import ops
from mf_tf.geometry.rig import ordered_pairs

DEFAULT_LINE_WIDTH_PX = 1.0  # As the calibrated MetaFuse^0 (config.fusion.line_width_px).
DEFAULT_LINE_VALUE = 0.1  # As config.fusion.line_value.
HEATMAP_SIGMA_PX = 1.0  # Least std of a heatmap peak the sampling is set for (pose nets: 1-2).
# Sampling. Each setting notes what changing it did to the messages against the dense Gaussian
# Eq. (1), as a share of their largest value, on the H36M rig at 32 px, at 64 px and at 64 px with
# heatmap peaks of std 1 px (the defaults: 0.22, 0.18 and 0.46 %; 1456 lines of 37 samples at
# 64 px).
# Largest distance between neighbouring pencil lines, in units of s (module docstring); 1.2:
# 0.29, 0.32, 1.01 % (1246 lines); 1.35: 0.46, 0.43, 1.70 % (1128 lines).
LINE_SPACING = 1.0
# Step along the lines, in units of s, rounded down to whole pixels: 2 px for the default line,
# as close as 1 px; 3 px: 1.93, 1.32, 6.33 %.
MAJOR_STEP = 1.45
LANCZOS_LOBES = 4  # Resampling of the band sums in t; 3 lobes: 0.30, 0.30, 0.52 %.
UPSAMPLE = 8  # Fine band sums per line interval, for the targets; 4: 0.31, 0.28, 0.63 %.
BAND_SUPPORT_SIGMAS = 4.0  # g beyond 4 stds is below 0.04 % of its peak.


def band_profile(heatmap_size, line_width_px: float = DEFAULT_LINE_WIDTH_PX,
                 line_value: float = DEFAULT_LINE_VALUE) -> tuple[float, float]:
  """(integral, std) of the dense line base's cross-section g (module docstring).

  g interpolates linearly the samples line_value exp(-r^2 / (2 sigma^2)) at the base's rows
  r = k - (H - 1) / 2; its integral is the samples' sum and its variance theirs plus 1/6 (the
  unit triangle's). The band here is integral * N(d; 0, std^2).

  Args:
    heatmap_size: int or (H, W); H is the line base's number of rows.
    line_width_px: sigma, pixels (> 0).
    line_value: The base's peak value.
  """
  height, _ = ops.heatmap_hw(heatmap_size)
  sigma = float(line_width_px)
  if not sigma > 0:
    raise ValueError(f"line_width_px={line_width_px}, expected a positive width in pixels")
  rows = np.arange(height, dtype=np.float64) - 0.5 * (height - 1)
  weights = np.exp(-0.5 * (rows / sigma) ** 2)
  variance = float(np.sum(weights * rows * rows) / np.sum(weights)) + 1.0 / 6.0
  return float(line_value) * float(np.sum(weights)), math.sqrt(variance)


def default_num_lines(heatmap_size, num_lines: int | None = None,
                      line_width_px: float = DEFAULT_LINE_WIDTH_PX) -> int:
  """Most pencil lines per pair: `num_lines` when given, else a bound that never binds.

  A pencil needs at most about 3 side / spacing lines (an epipole at the middle of an edge: one
  family spreads over twice the side at the far end, the other over the side); 4 leaves room.
  """
  if num_lines is not None:
    return int(num_lines)
  height, width = ops.heatmap_hw(heatmap_size)
  spacing = _layout(height, width, float(line_width_px), 1.0).spacing
  return int(math.ceil(4 * max(height, width) / spacing)) + 4


# ----------------------------------------------------------------------------- layout


@dataclasses.dataclass(frozen=True)
class _Family:
  """Sampling of one line family: major axis along the lines, minor axis across them."""
  major_size: int  # Pixels along the major axis (W for family 0, H for family 1).
  minor_size: int
  samples: np.ndarray  # [M] float64 major coordinates of the samples along a line.
  minor_origin: float  # Minor coordinate of lattice row 0.
  minor_rows: int  # N: the map's minor pixels and a margin where the blurred map is ~0.
  blur_major: np.ndarray  # [M, major_size] float32 Gaussian density at the samples.
  blur_minor: np.ndarray  # [N, minor_size] float32 integral * density, B-spline prefiltered.


@dataclasses.dataclass(frozen=True)
class _Layout:
  height: int
  width: int
  support: float  # Lines farther than this from the map get nothing, pixels.
  spacing: float  # Largest distance between neighbouring pencil lines in the map, pixels.
  major_step: int  # Pixels between samples along a line.
  families: tuple[_Family, _Family]
  lanczos: np.ndarray  # [UPSAMPLE, 2 LANCZOS_LOBES] float32 resampling weights per phase.

  @property
  def samples(self) -> int:
    return max(len(family.samples) for family in self.families)


def _gaussian(offsets, sigma):
  return np.exp(-0.5 * (offsets / sigma) ** 2) / (math.sqrt(2 * math.pi) * sigma)


def _bspline_prefilter(rows: int) -> np.ndarray:
  """[rows, rows] inverse of the cubic B-spline's sampling (1, 4, 1) / 6 on a finite lattice."""
  sampling = (np.diag(np.full(rows, 4.0)) + np.diag(np.ones(rows - 1), 1)
              + np.diag(np.ones(rows - 1), -1)) / 6.0
  return np.linalg.inv(sampling)


def _family(major_size, minor_size, sigma, integral, major_step) -> _Family:
  margin = int(math.ceil(BAND_SUPPORT_SIGMAS * sigma))
  samples = np.arange(-margin, major_size + margin, major_step, dtype=np.float64)
  # 3 more rows keep the prefilter's boundary (it decays 0.27x per row) off the map's blur.
  minor_margin = margin + 3
  lattice = np.arange(-minor_margin, minor_size + minor_margin, dtype=np.float64)
  major_pixels = np.arange(major_size, dtype=np.float64)
  minor_pixels = np.arange(minor_size, dtype=np.float64)
  blur_major = _gaussian(samples[:, None] - major_pixels[None], sigma)
  blur_minor = _bspline_prefilter(len(lattice)) @ (
      integral * _gaussian(lattice[:, None] - minor_pixels[None], sigma))
  return _Family(major_size, minor_size, samples, float(lattice[0]), len(lattice),
                 blur_major.astype(np.float32), blur_minor.astype(np.float32))


def _lanczos_table() -> np.ndarray:
  offsets = (np.arange(UPSAMPLE)[:, None] / UPSAMPLE
             - np.arange(1 - LANCZOS_LOBES, LANCZOS_LOBES + 1)[None])
  weights = np.sinc(offsets) * np.sinc(offsets / LANCZOS_LOBES)
  return (weights / weights.sum(1, keepdims=True)).astype(np.float32)


@functools.lru_cache(maxsize=16)
def _layout(height: int, width: int, line_width_px: float, line_value: float) -> _Layout:
  integral, sigma = band_profile((height, width), line_width_px, line_value)
  smooth = math.hypot(sigma, HEATMAP_SIGMA_PX)
  major_step = max(1, int(MAJOR_STEP * smooth))
  families = (_family(width, height, sigma, integral, major_step),
              _family(height, width, sigma, integral, major_step))
  return _Layout(height, width, BAND_SUPPORT_SIGMAS * sigma, LINE_SPACING * smooth, major_step,
                 families, _lanczos_table())


# ----------------------------------------------------------------------------- array backends


class _NumpyOps:
  """The array operations of `_plan` and `_apply`, in NumPy."""
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

    Every target reads two neighbouring rows (rows[..., 1] = rows[..., 0] + 1, `_plan`): one
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
  """The array operations of `_plan` and `_apply`, in TensorFlow (traceable)."""
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


# ----------------------------------------------------------------------------- plan and apply


def _cross(u, v, xp):
  return xp.stack([u[..., 1] * v[..., 2] - u[..., 2] * v[..., 1],
                   u[..., 2] * v[..., 0] - u[..., 0] * v[..., 2],
                   u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]], -1)


def _plan(xp, fundamental, layout: _Layout, num_lines: int) -> dict:
  """Lines, band-sum samples and target interpolation of one frame (module docstring).

  Args:
    xp: `_NumpyOps` or `_TensorflowOps`.
    fundamental: [P, 3, 3] float64 (xp array), pairs in `ordered_pairs` order.
    layout: `_layout(...)` of the heatmap size and line.
    num_lines: Most core lines per pair; the spacing widens where a pencil needs more.

  Returns:
    dict of xp arrays (L lines, M samples per line, C line intervals, V views):
      band_rows: [L, M] int first of the 4 rows of the blurred maps (`_blurred`) under each
        sample's B-spline;
      band_weights: [L, M, 4] float32 B-spline weights times the integration step;
      window_rows: [C, 2 LANCZOS_LOBES] int lines that resample each line interval;
      target_rows: [V, HW, V - 1, 2] int neighbouring fine rows per target pixel and source
        (`ordered_pairs` order), zero rows without a line;
      target_weights: [V, HW, V - 1, 2] float32 linear interpolation weights.
  """
  height, width = layout.height, layout.width
  num_pairs = int(fundamental.shape[0])
  num_views = _views_for_pairs(num_pairs)
  lobes = LANCZOS_LOBES
  f = fundamental
  fam = layout.families
  f32 = lambda x: xp.cast(x, xp.f32)  # noqa: E731

  # Source epipole (F e = 0): the largest cross product of two rows (exact for a rank-2 F).
  crosses = xp.stack([_cross(f[:, 0], f[:, 1], xp), _cross(f[:, 1], f[:, 2], xp),
                      _cross(f[:, 2], f[:, 0], xp)], 1)  # [P, 3, 3]
  best = xp.argmax(xp.sum(crosses * crosses, 2), 1)
  pick = xp.cast(xp.arange(3, xp.int_)[None] == best[:, None], xp.f64)
  epipole = xp.sum(crosses * pick[..., None], 1)
  epipole = epipole / xp.maximum(xp.sqrt(xp.sum(epipole * epipole, 1)), 1e-300)[:, None]

  # Per pair and family (index g = 2 p + family): the epipole E in (major, minor, 1)
  # coordinates, the reference major coordinate r (outside the map, on the far side from E) and
  # the lines y(X) = (E1 (r - X) + t (E2 X - E0)) / D, D = E2 r - E0, through E and (r, t).
  e0, e1, e2 = epipole[:, 0], epipole[:, 1], epipole[:, 2]
  major_e = xp.stack([e0, e1], 1)  # [P, 2]
  minor_e = xp.stack([e1, e0], 1)
  sizes = np.array([fam[0].major_size, fam[1].major_size], np.float64)
  centres = 0.5 * (sizes - 1)
  reference = xp.where(major_e * e2[:, None] <= centres * (e2 * e2)[:, None],
                       centres + sizes, centres - sizes)
  denominator = e2[:, None] * reference - major_e
  denominator = xp.where(xp.abs(denominator) > 1e-300, denominator, 1e-300)

  # Target pixels' source lines l = F^T x = (a, b, c), [P, H, W] each, unnormalized (only ratios
  # and signs matter). Everything per pixel is affine in (x, y) or a ratio of two: float32
  # (t within 1e-5 px).
  xs = np.arange(width, dtype=np.float64)[None, None, :]
  ys = np.arange(height, dtype=np.float64)[None, :, None]
  affine = lambda k: (f32(k[:, 0, None, None] * xs)  # noqa: E731
                      + f32(k[:, 1, None, None] * ys + k[:, 2, None, None]))
  a, b = affine(f[:, :, 0]), affine(f[:, :, 1])
  abs_a, abs_b = xp.abs(a), xp.abs(b)
  vertical = abs_a > abs_b  # Family 1: the line is closer to the y axis.
  per_family = lambda x: xp.where(vertical, x[:, 1, None, None], x[:, 0, None, None])  # noqa: E731
  # The line meets the map grown by the support iff its value at the map's centre is within
  # its reach over the half extents (the rectangle's support function); a zero reach: no line.
  centre = np.array([[0.5 * (width - 1)], [0.5 * (height - 1)], [1.0]])
  # Python floats keep the product float32 in both backends (a NumPy float64 scalar would
  # promote NumPy's to float64).
  reach = (abs_a * float(centre[0, 0] + layout.support)
           + abs_b * float(centre[1, 0] + layout.support))
  valid = (xp.abs(affine(xp.matmul(f, xp.asarray(centre, xp.f64))[..., 0])) <= reach) & (reach > 0)
  # The line's parameter t: its minor coordinate at X = r, -(a r + c) / b in family 0 and
  # -(b r + c) / a in family 1.
  t = (xp.where(vertical, affine(-f[:, :, 1] * reference[:, 1, None] - f[:, :, 2]),
                affine(-f[:, :, 0] * reference[:, 0, None] - f[:, :, 2]))
       / xp.where(valid, xp.where(vertical, a, b), 1.0))

  # Each family's range of t and line spacing.
  in_1 = valid & vertical
  in_0 = valid & ~vertical
  per_pair = lambda x: xp.reshape(x, [num_pairs, -1])  # noqa: E731
  first = xp.stack([xp.min(per_pair(xp.where(in_0, t, np.inf)), 1),
                    xp.min(per_pair(xp.where(in_1, t, np.inf)), 1)], 1)
  last = xp.stack([xp.max(per_pair(xp.where(in_0, t, -np.inf)), 1),
                   xp.max(per_pair(xp.where(in_1, t, -np.inf)), 1)], 1)
  present = xp.isfinite(first)
  first = xp.cast(xp.where(present, first, 0.0), xp.f64)
  last = xp.cast(xp.where(present, last, 0.0), xp.f64)
  # Lines through E spread by |E2 X - E0| / |D| per unit of t at major coordinate X: at most
  # `spacing` apart at the map's far end.
  spread = xp.maximum(xp.abs(major_e), xp.abs(e2[:, None] * (sizes - 1) - major_e))
  step = layout.spacing * xp.abs(denominator) / xp.maximum(spread, 1e-300)
  need = (last - first) / step
  step = step * xp.maximum(xp.sum(need, 1) / max(num_lines - 4, 1), 1.0)[:, None]
  core = xp.where(present, xp.cast(xp.floor((last - first) / step), xp.int_) + 2, 0)  # [P, 2]
  counts = xp.reshape(xp.where(present, core + 2 * lobes, 0), [-1])  # [2P] lines per group

  # Lines: group g, index k, parameter t_k = first + (k - lobes) step.
  groups = xp.arange(2 * num_pairs, xp.int_)
  line_group = xp.repeat(groups, counts)
  line_start = xp.cumsum(counts) - counts
  k = xp.cast(xp.arange(xp.sum(counts), xp.int_) - xp.take(line_start, line_group), xp.f64)
  by_line = lambda x: xp.take(xp.reshape(x, [-1]), line_group)  # noqa: E731
  t_k = by_line(first) + (k - lobes) * by_line(step)
  offset = (by_line(minor_e) * by_line(reference) - t_k * by_line(major_e)) / by_line(denominator)
  slope = (t_k * xp.take(e2, line_group // 2) - by_line(minor_e)) / by_line(denominator)

  # Samples along each line at major coordinates X_m on the family's minor lattice: the cubic
  # B-spline's 4 rows around y(X_m) and their weights.
  family = line_group % 2
  num_samples = layout.samples
  padded = lambda values: np.concatenate(  # noqa: E731
      [values, np.zeros(num_samples - len(values))])
  sample_x = np.stack([padded(fm.samples) for fm in fam]).astype(np.float32)  # [2, M]
  origin = np.array([fm.minor_origin for fm in fam])
  position = (f32(offset - xp.take(xp.asarray(origin, xp.f64), family))[:, None]
              + f32(slope)[:, None] * xp.take(xp.asarray(sample_x, xp.f32), family))
  below = xp.floor(position)
  u = position - below
  v = 1.0 - u
  scale = f32(layout.major_step / 6.0 * xp.sqrt(1.0 + slope * slope))[:, None]
  # The step scales the [L, M] weights before the stack: NumPy broadcast a [L, 1, 1] factor over
  # [L, M, 4] in loops of 4 (0.4 ms at 64 px, 4 views).
  u_2 = u * u
  w_3 = u_2 * u
  w_1 = (3.0 * w_3 - 6.0 * u_2 + 4.0) * scale
  w_0, w_3 = v * v * v * scale, w_3 * scale
  band_weights = xp.stack([w_0, w_1, 6.0 * scale - w_0 - w_1 - w_3, w_3], -1)  # Sum to 6 scale.
  # Rows of the blurred maps (`_blurred`: family 0 then family 1, each [V, M_f, N_f]); lines
  # beyond the lattice read its edge rows, which hold ~0.
  # Whole numbers below 2^24 (the table's rows), exact in float32: computed there, half the
  # bytes of int64, and cast once.
  rows = f32(xp.take(xp.asarray(np.array([fm.minor_rows for fm in fam]), xp.int_),
                     family))[:, None]
  per_view = np.array([len(fm.samples) * fm.minor_rows for fm in fam])
  table_start = np.array([0, num_views * per_view[0]])
  if num_views * per_view.sum() >= 2 ** 24:
    raise ValueError(f"{num_views} views of {height}x{width} maps: the blurred maps' "
                     f"{num_views * per_view.sum()} rows exceed float32's whole numbers (2^24)")
  source = xp.asarray(ordered_pairs(num_views)[:, 0], xp.int_)
  band_rows = xp.cast(
      f32(xp.take(xp.asarray(table_start, xp.int_), family)
          + xp.take(source, line_group // 2) * xp.take(xp.asarray(per_view, xp.int_),
                                                       family))[:, None]
      + xp.arange(num_samples, xp.f32)[None] * rows
      + xp.clip(below - 1.0, 0.0, rows - 4.0), xp.int_)
  if len(fam[0].samples) != len(fam[1].samples):  # Non-square maps: drop the padded samples.
    in_row = xp.take(xp.asarray(np.stack([padded(np.ones(len(fm.samples))) for fm in fam]),
                                xp.f32), family)
    band_weights = band_weights * in_row[..., None]
    band_rows = band_rows * xp.cast(in_row, xp.int_)

  # Line intervals [k, k + 1] of the core lines, each resampled from lines k - lobes + 1 ..
  # k + lobes; interval i of group g is fine row (interval_start_g + i) UPSAMPLE + phase.
  core = xp.reshape(core, [-1])
  interval_group = xp.repeat(groups, core)
  interval_start = xp.cumsum(core) - core
  interval = xp.arange(xp.sum(core), xp.int_) - xp.take(interval_start, interval_group)
  window_rows = ((xp.take(line_start, interval_group) + interval + 1)[:, None]
                 + xp.arange(2 * lobes, xp.int_)[None])

  # Targets: the fine rows (u, u + 1) around their line's t, grouped by target view; targets
  # without a line read two zero rows after the last fine row. Rounding can put a target a hair
  # outside its family's range: its row is clipped and its weight with it.
  per_step = UPSAMPLE / step
  fine = t * per_family(f32(per_step)) - per_family(f32(first * per_step))
  last_row = f32(xp.maximum(xp.reshape(core, [num_pairs, 2]) * UPSAMPLE - 2, 0))
  below = xp.clip(xp.floor(fine), 0.0, per_family(last_row))
  fraction = xp.clip(fine - below, 0.0, 1.0)
  target_rows = xp.cast(xp.where(
      valid, per_family(f32(xp.reshape(interval_start, [num_pairs, 2]) * UPSAMPLE)) + below,
      f32(xp.sum(core) * UPSAMPLE)), xp.int_)  # Exact in float32, as band_rows.
  # Transposed before the stack, which then writes [V, HW, V - 1, 2] in order (NumPy: the
  # transposed stack cost a copy with loops of 2 in `_apply`).
  by_target = lambda x: xp.transpose(  # noqa: E731
      xp.reshape(x, [num_views, num_views - 1, height * width]), [0, 2, 1])
  target_rows, fraction = by_target(target_rows), by_target(fraction)
  return {"band_rows": band_rows, "band_weights": band_weights, "window_rows": window_rows,
          "target_rows": xp.stack([target_rows, target_rows + 1], -1),
          "target_weights": xp.stack([1.0 - fraction, fraction], -1)}


def _blurred(xp, heatmaps, family: _Family, major_axis: int):
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


def _band_sums(xp, heatmaps, plan: dict, layout: _Layout):
  """[V, H, W, J] -> [L, J]: every line's band sum B_u(l) (Eq. 1)."""
  table = xp.concat([_blurred(xp, heatmaps, layout.families[0], 2),
                     _blurred(xp, heatmaps, layout.families[1], 1)], 0)
  return xp.window_sums(table, plan["band_rows"], plan["band_weights"])


def _apply(xp, heatmaps, plan: dict, layout: _Layout):
  """Eq. (1) with a `_plan`: [V, H, W, J] float32 -> fused [V, H, W, J]."""
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
      target_rows [V, HW, V - 1, 2] int64, target_weights [V, HW, V - 1, 2] float32 (`_plan`),
      and settings [4] float64 (H, W, line_width_px, line_value) for `apply_line_plan`.
  """
  height, width = ops.heatmap_hw(heatmap_size)
  num_lines = default_num_lines((height, width), num_lines, line_width_px)
  if num_lines < 4:
    raise ValueError(f"num_lines={num_lines}, expected >= 4 lines per pair")
  layout = _layout(height, width, float(line_width_px), float(line_value))
  fundamental = tf.cast(tf.convert_to_tensor(fundamental), tf.float64)
  if fundamental.shape.rank != 3 or tuple(fundamental.shape[1:]) != (3, 3):
    raise ValueError(f"fundamental has shape {fundamental.shape}, expected [P, 3, 3]")
  plan = _plan(_TensorflowOps, fundamental, layout, num_lines)
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
  layout = _layout(int(height), int(width), line_width_px, line_value)
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
  layout = _layout(int(height), int(width), float(line_width_px), float(line_value))
  plan = _plan(_NumpyOps, fundamental, layout, num_lines)
  return tf.constant(_apply(_NumpyOps, heatmaps, plan, layout))


def _views_for_pairs(num_pairs: int) -> int:
  num_views = int(round(0.5 + math.sqrt(0.25 + num_pairs)))
  if num_views < 2 or num_views * (num_views - 1) != num_pairs:
    raise ValueError(f"{num_pairs} fundamental matrices is not V (V - 1) for any V >= 2")
  return num_views
