"""Sampling layout and per-frame line plan of the epipolar-line fusion (`epipolar_fusion`).

The layout depends on the heatmap size and the line only (cached, `sampling_layout`): the
Gaussian cross-section g (`band_profile`), the samples along each family's lines and the blur
matrices that put the blurred maps on the cubic B-spline lattice. The plan depends on one
frame's fundamental matrices (`build_plan`), in steps:

  1. `_pencils`: each pair's source epipole and, per family, the pencil of lines through it;
  2. `_target_lines`: every target pixel's source line, its family and its parameter t;
  3. `_spacing`: each pencil's range of t and line spacing;
  4. `_lines`: the pencils' lines as offset and slope;
  5. `_band_samples`: each line's samples as rows and B-spline weights in the blurred maps;
  6. `_windows`: the lines that resample each line interval (Lanczos);
  7. `_target_interpolation`: each target pixel's two fine rows and their weights.

Every step runs on either array backend `xp` of `epipolar_fusion` (NumPy or TensorFlow ops).
The method, the settings below and their measured effect are described in `epipolar_fusion`'s
module docstring, whose conventions hold here: heatmaps [V, H, W, J], pixel centres at integers
(x = column, y = row), fundamental matrices [P, 3, 3] with x_target^T F x_source = 0, pairs in
`mf_tf.geometry.rig.ordered_pairs` order.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import numpy as np

from mf_tf.fusion import ops
from mf_tf.geometry.rig import ordered_pairs

DEFAULT_LINE_WIDTH_PX = 1.0  # As the calibrated MetaFuse^0 (config.fusion.line_width_px).
DEFAULT_LINE_VALUE = 0.1  # As config.fusion.line_value.
HEATMAP_SIGMA_PX = 1.0  # Least std of a heatmap peak the sampling is set for (pose nets: 1-2).
# Sampling. Each setting notes what changing it did to the messages against the dense Gaussian
# Eq. (1), as a share of their largest value, on the H36M rig at 32 px, at 64 px and at 64 px with
# heatmap peaks of std 1 px (the defaults: 0.22, 0.18 and 0.46 %; 1456 lines of 37 samples at
# 64 px).
# Largest distance between neighbouring pencil lines, in units of s (`epipolar_fusion` module
# docstring); 1.2: 0.29, 0.32, 1.01 % (1246 lines); 1.35: 0.46, 0.43, 1.70 % (1128 lines).
LINE_SPACING = 1.0
# Step along the lines, in units of s, rounded down to whole pixels: 2 px for the default line,
# as close as 1 px; 3 px: 1.93, 1.32, 6.33 %.
MAJOR_STEP = 1.45
LANCZOS_LOBES = 4  # Resampling of the band sums in t; 3 lobes: 0.30, 0.30, 0.52 %.
UPSAMPLE = 8  # Fine band sums per line interval, for the targets; 4: 0.31, 0.28, 0.63 %.
BAND_SUPPORT_SIGMAS = 4.0  # g beyond 4 stds is below 0.04 % of its peak.


def band_profile(heatmap_size, line_width_px: float = DEFAULT_LINE_WIDTH_PX,
                 line_value: float = DEFAULT_LINE_VALUE) -> tuple[float, float]:
  """(integral, std) of the dense line base's cross-section g (`epipolar_fusion` docstring).

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
  spacing = sampling_layout(height, width, float(line_width_px), 1.0).spacing
  return int(math.ceil(4 * max(height, width) / spacing)) + 4


# ----------------------------------------------------------------------------- layout


@dataclasses.dataclass(frozen=True)
class Family:
  """Sampling of one line family: major axis along the lines, minor axis across them."""
  major_size: int  # Pixels along the major axis (W for family 0, H for family 1).
  minor_size: int
  samples: np.ndarray  # [M] float64 major coordinates of the samples along a line.
  minor_origin: float  # Minor coordinate of lattice row 0.
  minor_rows: int  # N: the map's minor pixels and a margin where the blurred map is ~0.
  blur_major: np.ndarray  # [M, major_size] float32 Gaussian density at the samples.
  blur_minor: np.ndarray  # [N, minor_size] float32 integral * density, B-spline prefiltered.


@dataclasses.dataclass(frozen=True)
class Layout:
  """Sampling of one heatmap size and line: family 0 (lines nearer the x axis), family 1."""
  height: int
  width: int
  support: float  # Lines farther than this from the map get nothing, pixels.
  spacing: float  # Largest distance between neighbouring pencil lines in the map, pixels.
  major_step: int  # Pixels between samples along a line.
  families: tuple[Family, Family]
  lanczos: np.ndarray  # [UPSAMPLE, 2 LANCZOS_LOBES] float32 resampling weights per phase.

  @property
  def samples(self) -> int:
    return max(len(family.samples) for family in self.families)

  @property
  def major_sizes(self) -> np.ndarray:
    """[2] float64 pixels along each family's major axis (W, H)."""
    return np.array([family.major_size for family in self.families], np.float64)


def _gaussian(offsets, sigma):
  return np.exp(-0.5 * (offsets / sigma) ** 2) / (math.sqrt(2 * math.pi) * sigma)


def _bspline_prefilter(rows: int) -> np.ndarray:
  """[rows, rows] inverse of the cubic B-spline's sampling (1, 4, 1) / 6 on a finite lattice."""
  sampling = (np.diag(np.full(rows, 4.0)) + np.diag(np.ones(rows - 1), 1)
              + np.diag(np.ones(rows - 1), -1)) / 6.0
  return np.linalg.inv(sampling)


def _family(major_size, minor_size, sigma, integral, major_step) -> Family:
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
  return Family(major_size, minor_size, samples, float(lattice[0]), len(lattice),
                blur_major.astype(np.float32), blur_minor.astype(np.float32))


def _lanczos_table() -> np.ndarray:
  offsets = (np.arange(UPSAMPLE)[:, None] / UPSAMPLE
             - np.arange(1 - LANCZOS_LOBES, LANCZOS_LOBES + 1)[None])
  weights = np.sinc(offsets) * np.sinc(offsets / LANCZOS_LOBES)
  return (weights / weights.sum(1, keepdims=True)).astype(np.float32)


@functools.lru_cache(maxsize=16)
def sampling_layout(height: int, width: int, line_width_px: float, line_value: float) -> Layout:
  """The `Layout` of H x W heatmaps and a line of std `line_width_px` and peak `line_value`."""
  integral, sigma = band_profile((height, width), line_width_px, line_value)
  smooth = math.hypot(sigma, HEATMAP_SIGMA_PX)
  major_step = max(1, int(MAJOR_STEP * smooth))
  families = (_family(width, height, sigma, integral, major_step),
              _family(height, width, sigma, integral, major_step))
  return Layout(height, width, BAND_SUPPORT_SIGMAS * sigma, LINE_SPACING * smooth, major_step,
                families, _lanczos_table())


# ----------------------------------------------------------------------------- plan


@dataclasses.dataclass(frozen=True)
class _Pencils:
  """Each pair's pencil of source lines, per family (index g = 2 p + family).

  The epipole E in (major, minor, 1) coordinates, the reference major coordinate r (outside the
  map, on the far side from E) and the lines y(X) = (E1 (r - X) + t (E2 X - E0)) / D,
  D = E2 r - E0, through E and (r, t).
  """
  major_e: Any  # [P, 2] E0 per family.
  minor_e: Any  # [P, 2] E1 per family.
  e2: Any  # [P] E2.
  reference: Any  # [P, 2] r.
  denominator: Any  # [P, 2] D, at least 1e-300 in magnitude.

  @property
  def num_pairs(self) -> int:
    return int(self.e2.shape[0])


@dataclasses.dataclass(frozen=True)
class _Targets:
  """Every target pixel's source line l = F^T x, per pair: [P, H, W] each."""
  vertical: Any  # bool: family 1 (the line is closer to the y axis).
  valid: Any  # bool: the line meets the map grown by the support.
  t: Any  # float32: the line's parameter in its family's pencil.

  def per_family(self, xp, x):
    """[P, 2] per pair and family -> [P, H, W] the value of each target's family."""
    return xp.where(self.vertical, x[:, 1, None, None], x[:, 0, None, None])


@dataclasses.dataclass(frozen=True)
class _Spacing:
  """Each pencil's lines, [P, 2] per pair and family: t_k = first + (k - LANCZOS_LOBES) step."""
  first: Any  # float64 least t of the family's targets (0 without targets).
  step: Any  # float64 t between neighbouring lines.
  core: Any  # int lines that cover the targets' range of t (0 without targets).
  counts: Any  # [2P] int lines per group: core and LANCZOS_LOBES beyond each end.
  num_pairs: int


@dataclasses.dataclass(frozen=True)
class _Lines:
  """The lines of every pencil, group after group: y(X) = offset + slope X."""
  group: Any  # [L] int group g = 2 p + family of each line.
  start: Any  # [2P] int first line of each group.
  offset: Any  # [L] float64 minor coordinate at major coordinate 0.
  slope: Any  # [L] float64.


def _f32(xp, x):
  return xp.cast(x, xp.f32)


def _cross(u, v, xp):
  return xp.stack([u[..., 1] * v[..., 2] - u[..., 2] * v[..., 1],
                   u[..., 2] * v[..., 0] - u[..., 0] * v[..., 2],
                   u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]], -1)


def _views_for_pairs(num_pairs: int) -> int:
  num_views = int(round(0.5 + math.sqrt(0.25 + num_pairs)))
  if num_views < 2 or num_views * (num_views - 1) != num_pairs:
    raise ValueError(f"{num_pairs} fundamental matrices is not V (V - 1) for any V >= 2")
  return num_views


def build_plan(xp, fundamental, layout: Layout, num_lines: int) -> dict:
  """Lines, band-sum samples and target interpolation of one frame (module docstring).

  Args:
    xp: `epipolar_fusion`'s `_NumpyOps` or `_TensorflowOps`.
    fundamental: [P, 3, 3] float64 (xp array), pairs in `ordered_pairs` order.
    layout: `sampling_layout(...)` of the heatmap size and line.
    num_lines: Most core lines per pair; the spacing widens where a pencil needs more.

  Returns:
    dict of xp arrays (L lines, M samples per line, C line intervals, V views):
      band_rows: [L, M] int first of the 4 rows of the blurred maps (`epipolar_fusion._blurred`)
        under each sample's B-spline;
      band_weights: [L, M, 4] float32 B-spline weights times the integration step;
      window_rows: [C, 2 LANCZOS_LOBES] int lines that resample each line interval;
      target_rows: [V, HW, V - 1, 2] int neighbouring fine rows per target pixel and source
        (`ordered_pairs` order), zero rows without a line;
      target_weights: [V, HW, V - 1, 2] float32 linear interpolation weights.
  """
  num_views = _views_for_pairs(int(fundamental.shape[0]))
  pencils = _pencils(xp, fundamental, layout)
  targets = _target_lines(xp, fundamental, layout, pencils)
  spacing = _spacing(xp, targets, pencils, layout, num_lines)
  lines = _lines(xp, pencils, spacing)
  band_rows, band_weights = _band_samples(xp, lines, layout, num_views)
  window_rows, interval_start = _windows(xp, spacing, lines)
  target_rows, target_weights = _target_interpolation(xp, targets, spacing, interval_start,
                                                      layout, num_views)
  return {"band_rows": band_rows, "band_weights": band_weights, "window_rows": window_rows,
          "target_rows": target_rows, "target_weights": target_weights}


def _source_epipoles(xp, f):
  """[P, 3, 3] F -> [P, 3] unit source epipoles (F e = 0).

  The largest cross product of two rows of F (exact for a rank-2 F).
  """
  crosses = xp.stack([_cross(f[:, 0], f[:, 1], xp), _cross(f[:, 1], f[:, 2], xp),
                      _cross(f[:, 2], f[:, 0], xp)], 1)  # [P, 3, 3]
  best = xp.argmax(xp.sum(crosses * crosses, 2), 1)
  pick = xp.cast(xp.arange(3, xp.int_)[None] == best[:, None], xp.f64)
  epipole = xp.sum(crosses * pick[..., None], 1)
  return epipole / xp.maximum(xp.sqrt(xp.sum(epipole * epipole, 1)), 1e-300)[:, None]


def _pencils(xp, fundamental, layout: Layout) -> _Pencils:
  """Step 1: each pair's source epipole and its pencils' reference coordinate (`_Pencils`)."""
  epipole = _source_epipoles(xp, fundamental)
  e0, e1, e2 = epipole[:, 0], epipole[:, 1], epipole[:, 2]
  major_e = xp.stack([e0, e1], 1)  # [P, 2]
  minor_e = xp.stack([e1, e0], 1)
  sizes = layout.major_sizes
  centres = 0.5 * (sizes - 1)
  reference = xp.where(major_e * e2[:, None] <= centres * (e2 * e2)[:, None],
                       centres + sizes, centres - sizes)
  denominator = e2[:, None] * reference - major_e
  denominator = xp.where(xp.abs(denominator) > 1e-300, denominator, 1e-300)
  return _Pencils(major_e, minor_e, e2, reference, denominator)


def _target_lines(xp, f, layout: Layout, pencils: _Pencils) -> _Targets:
  """Step 2: every target pixel's source line l = F^T x = (a, b, c), its family and its t.

  The lines are unnormalized (only ratios and signs matter). Everything per pixel is affine in
  (x, y) or a ratio of two: float32 (t within 1e-5 px).
  """
  xs = np.arange(layout.width, dtype=np.float64)[None, None, :]
  ys = np.arange(layout.height, dtype=np.float64)[None, :, None]
  affine = lambda k: (_f32(xp, k[:, 0, None, None] * xs)  # noqa: E731
                      + _f32(xp, k[:, 1, None, None] * ys + k[:, 2, None, None]))
  a, b = affine(f[:, :, 0]), affine(f[:, :, 1])
  abs_a, abs_b = xp.abs(a), xp.abs(b)
  vertical = abs_a > abs_b  # Family 1: the line is closer to the y axis.
  # The line meets the map grown by the support iff its value at the map's centre is within
  # its reach over the half extents (the rectangle's support function); a zero reach: no line.
  centre = np.array([[0.5 * (layout.width - 1)], [0.5 * (layout.height - 1)], [1.0]])
  # Python floats keep the product float32 in both backends (a NumPy float64 scalar would
  # promote NumPy's to float64).
  reach = (abs_a * float(centre[0, 0] + layout.support)
           + abs_b * float(centre[1, 0] + layout.support))
  valid = (xp.abs(affine(xp.matmul(f, xp.asarray(centre, xp.f64))[..., 0])) <= reach) & (reach > 0)
  # The line's parameter t: its minor coordinate at X = r, -(a r + c) / b in family 0 and
  # -(b r + c) / a in family 1.
  reference = pencils.reference
  t = (xp.where(vertical, affine(-f[:, :, 1] * reference[:, 1, None] - f[:, :, 2]),
                affine(-f[:, :, 0] * reference[:, 0, None] - f[:, :, 2]))
       / xp.where(valid, xp.where(vertical, a, b), 1.0))
  return _Targets(vertical, valid, t)


def _spacing(xp, targets: _Targets, pencils: _Pencils, layout: Layout,
             num_lines: int) -> _Spacing:
  """Step 3: each family's range of t and line spacing, widened to at most `num_lines` lines."""
  num_pairs = pencils.num_pairs
  t, valid, vertical = targets.t, targets.valid, targets.vertical
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
  major_e = pencils.major_e
  spread = xp.maximum(xp.abs(major_e),
                      xp.abs(pencils.e2[:, None] * (layout.major_sizes - 1) - major_e))
  step = layout.spacing * xp.abs(pencils.denominator) / xp.maximum(spread, 1e-300)
  need = (last - first) / step
  step = step * xp.maximum(xp.sum(need, 1) / max(num_lines - 4, 1), 1.0)[:, None]
  core = xp.where(present, xp.cast(xp.floor((last - first) / step), xp.int_) + 2, 0)  # [P, 2]
  counts = xp.reshape(xp.where(present, core + 2 * LANCZOS_LOBES, 0), [-1])  # [2P]
  return _Spacing(first, step, core, counts, num_pairs)


def _lines(xp, pencils: _Pencils, spacing: _Spacing) -> _Lines:
  """Step 4: line k of group g has t_k = first + (k - LANCZOS_LOBES) step (`_Lines`)."""
  counts = spacing.counts
  line_group = xp.repeat(xp.arange(2 * pencils.num_pairs, xp.int_), counts)
  line_start = xp.cumsum(counts) - counts
  k = xp.cast(xp.arange(xp.sum(counts), xp.int_) - xp.take(line_start, line_group), xp.f64)
  by_line = lambda x: xp.take(xp.reshape(x, [-1]), line_group)  # noqa: E731
  t_k = by_line(spacing.first) + (k - LANCZOS_LOBES) * by_line(spacing.step)
  denominator = by_line(pencils.denominator)
  offset = (by_line(pencils.minor_e) * by_line(pencils.reference)
            - t_k * by_line(pencils.major_e)) / denominator
  slope = (t_k * xp.take(pencils.e2, line_group // 2) - by_line(pencils.minor_e)) / denominator
  return _Lines(line_group, line_start, offset, slope)


def _padded(values, num_samples: int) -> np.ndarray:
  return np.concatenate([values, np.zeros(num_samples - len(values))])


def _band_samples(xp, lines: _Lines, layout: Layout, num_views: int):
  """Step 5: each line's samples at major coordinates X_m on its family's minor lattice.

  Returns:
    band_rows [L, M] int, the first of the cubic B-spline's 4 rows around y(X_m) in the blurred
    maps, and band_weights [L, M, 4] float32, their weights times the integration step (see
    `build_plan`). Non-square maps: a family's samples past its last have weight and row 0.
  """
  fam = layout.families
  family = lines.group % 2
  num_samples = layout.samples
  sample_x = np.stack([_padded(fm.samples, num_samples)
                       for fm in fam]).astype(np.float32)  # [2, M]
  origin = np.array([fm.minor_origin for fm in fam])
  position = (_f32(xp, lines.offset - xp.take(xp.asarray(origin, xp.f64), family))[:, None]
              + _f32(xp, lines.slope)[:, None] * xp.take(xp.asarray(sample_x, xp.f32), family))
  below = xp.floor(position)
  band_weights = _bspline_weights(xp, position - below, lines.slope, layout.major_step)
  band_rows = _band_rows(xp, below, lines.group, layout, num_views)
  if len(fam[0].samples) != len(fam[1].samples):  # Non-square maps: drop the padded samples.
    in_row = xp.take(xp.asarray(np.stack([_padded(np.ones(len(fm.samples)), num_samples)
                                          for fm in fam]), xp.f32), family)
    band_weights = band_weights * in_row[..., None]
    band_rows = band_rows * xp.cast(in_row, xp.int_)
  return band_rows, band_weights


def _bspline_weights(xp, u, slope, major_step: int):
  """[L, M] fractional positions u in [0, 1) -> [L, M, 4] cubic B-spline weights times the step
  along the line (major_step sqrt(1 + slope^2) pixels), which they sum to."""
  v = 1.0 - u
  scale = _f32(xp, major_step / 6.0 * xp.sqrt(1.0 + slope * slope))[:, None]
  # The step scales the [L, M] weights before the stack: NumPy broadcast a [L, 1, 1] factor over
  # [L, M, 4] in loops of 4 (0.4 ms at 64 px, 4 views).
  u_2 = u * u
  w_3 = u_2 * u
  w_1 = (3.0 * w_3 - 6.0 * u_2 + 4.0) * scale
  w_0, w_3 = v * v * v * scale, w_3 * scale
  return xp.stack([w_0, w_1, 6.0 * scale - w_0 - w_1 - w_3, w_3], -1)  # Sum to 6 scale.


def _band_rows(xp, below, line_group, layout: Layout, num_views: int):
  """[L, M] lattice rows below the samples -> [L, M] int first rows in the blurred maps.

  The maps are `epipolar_fusion._blurred`'s: family 0 then family 1, each [V, M_f, N_f], and
  each line reads its pair's source view; lines beyond the lattice read its edge rows, which
  hold ~0.
  """
  fam = layout.families
  family = line_group % 2
  # Whole numbers below 2^24 (the table's rows), exact in float32: computed there, half the
  # bytes of int64, and cast once.
  rows = _f32(xp, xp.take(xp.asarray(np.array([fm.minor_rows for fm in fam]), xp.int_),
                          family))[:, None]
  per_view = np.array([len(fm.samples) * fm.minor_rows for fm in fam])
  table_start = np.array([0, num_views * per_view[0]])
  if num_views * per_view.sum() >= 2 ** 24:
    raise ValueError(f"{num_views} views of {layout.height}x{layout.width} maps: the blurred "
                     f"maps' {num_views * per_view.sum()} rows exceed float32's whole numbers "
                     "(2^24)")
  source = xp.asarray(ordered_pairs(num_views)[:, 0], xp.int_)
  return xp.cast(
      _f32(xp, xp.take(xp.asarray(table_start, xp.int_), family)
           + xp.take(source, line_group // 2) * xp.take(xp.asarray(per_view, xp.int_),
                                                        family))[:, None]
      + xp.arange(layout.samples, xp.f32)[None] * rows
      + xp.clip(below - 1.0, 0.0, rows - 4.0), xp.int_)


def _windows(xp, spacing: _Spacing, lines: _Lines):
  """Step 6: line intervals [k, k + 1] of the core lines, each resampled from lines
  k - LANCZOS_LOBES + 1 .. k + LANCZOS_LOBES.

  Returns:
    window_rows [C, 2 LANCZOS_LOBES] int lines of each interval, and interval_start [2P] int
    first interval of each group: interval i of group g is fine row (interval_start_g + i)
    UPSAMPLE + phase.
  """
  core = xp.reshape(spacing.core, [-1])
  interval_group = xp.repeat(xp.arange(2 * spacing.num_pairs, xp.int_), core)
  interval_start = xp.cumsum(core) - core
  interval = xp.arange(xp.sum(core), xp.int_) - xp.take(interval_start, interval_group)
  window_rows = ((xp.take(lines.start, interval_group) + interval + 1)[:, None]
                 + xp.arange(2 * LANCZOS_LOBES, xp.int_)[None])
  return window_rows, interval_start


def _target_interpolation(xp, targets: _Targets, spacing: _Spacing, interval_start,
                          layout: Layout, num_views: int):
  """Step 7: the fine rows (u, u + 1) around each target's t and their linear weights.

  Targets without a line read two zero rows after the last fine row. Rounding can put a target
  a hair outside its family's range: its row is clipped and its weight with it.

  Returns:
    target_rows [V, HW, V - 1, 2] int and target_weights [V, HW, V - 1, 2] float32, grouped by
    target view (`build_plan`).
  """
  per_family = functools.partial(targets.per_family, xp)
  per_step = UPSAMPLE / spacing.step
  fine = (targets.t * per_family(_f32(xp, per_step))
          - per_family(_f32(xp, spacing.first * per_step)))
  last_row = _f32(xp, xp.maximum(spacing.core * UPSAMPLE - 2, 0))
  below = xp.clip(xp.floor(fine), 0.0, per_family(last_row))
  fraction = xp.clip(fine - below, 0.0, 1.0)
  target_rows = xp.cast(xp.where(
      targets.valid,
      per_family(_f32(xp, xp.reshape(interval_start, [spacing.num_pairs, 2]) * UPSAMPLE)) + below,
      _f32(xp, xp.sum(spacing.core) * UPSAMPLE)), xp.int_)  # Exact in float32, as band_rows.
  # Transposed before the stack, which then writes [V, HW, V - 1, 2] in order (NumPy: the
  # transposed stack cost a copy with loops of 2 in `epipolar_fusion._apply`).
  by_target = lambda x: xp.transpose(  # noqa: E731
      xp.reshape(x, [num_views, num_views - 1, layout.height * layout.width]), [0, 2, 1])
  target_rows, fraction = by_target(target_rows), by_target(fraction)
  return (xp.stack([target_rows, target_rows + 1], -1),
          xp.stack([1.0 - fraction, fraction], -1))
