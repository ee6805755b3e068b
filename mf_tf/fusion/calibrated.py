"""Calibrated initialization of MetaFuse ("MetaFuse^0": fusion with zero labelled frames).

With a line-shaped base map (`ops.line_base`: a horizontal line through the centre), theta_i of
the ordered pair (u -> v) is chosen so that the warped base of target pixel i lies exactly on the
epipolar line of pixel i in the source view u (paper Sec. 3 "Discussion" and Fig. 3): fusing all
source pixels on the epipolar line. Built from the fundamental matrix in heatmap pixel
coordinates (`mf_tf.geometry.epipolar.heatmap_fundamental_matrix`, x_target^T F x_source = 0;
lens distortion is ignored, i.e. lines of the undistorted geometry).

Construction in pixel units, then converted to the sampler's normalized coordinates:
  l = F^T x_i = (a, b, c), scaled so that a^2 + b^2 = 1 (|a x + b y + c| = distance in pixels).
  base row    = (H - 1) / 2 + (a x + b y + c)                        (distance across the line)
  base column = (W - 1) / 2 + s * (-b (x - x_c) + a (y - y_c))       (position along the line)
with (x_c, y_c) the source map's centre and s = ((W - 1) / 2) / half-diagonal <= 1, so every
chord of the source map falls inside the base's width. The base's cross-section therefore keeps
its width in pixels. Target pixels with no epipolar line (the epipole itself) get a row of zeros.
"""

from __future__ import annotations

import numpy as np

from mf_tf.fusion import layers
from mf_tf.fusion import ops
from mf_tf.geometry import epipolar
from mf_tf.geometry import self_calibration
from mf_tf.geometry.rig import Rig

# Translation (normalized units) that moves the whole base outside the map: a row of zeros.
_OUTSIDE = np.array([1.0, 0.0, 10.0, 0.0, 1.0, 10.0])


def theta_from_fundamental(fundamental: np.ndarray, heatmap_size) -> np.ndarray:
  """Epipolar-line theta for fundamental matrices in heatmap pixel coordinates.

  Args:
    fundamental: [P, 3, 3] (or [3, 3]) with x_target^T F x_source = 0, heatmap pixels.
    heatmap_size: int or (H, W) (both views).

  Returns:
    float32 [P, HW, 6] (or [HW, 6]) normalized affine parameters for `ops.affine_matrices`
    with base `ops.line_base(heatmap_size, ...)`.
  """
  fundamental = np.asarray(fundamental, np.float64)
  single = fundamental.ndim == 2
  fundamental = fundamental[None] if single else fundamental
  height, width = ops.heatmap_hw(heatmap_size)
  rows, cols = np.mgrid[:height, :width]
  targets = np.stack([cols.ravel(), rows.ravel(), np.ones(height * width)], axis=-1)  # [HW, 3]
  # Source-view lines l = F^T x_target, one per (pair, target pixel). [P, HW, 3]
  lines = np.einsum("pji,nj->pni", fundamental, targets)
  norm = np.linalg.norm(lines[..., :2], axis=-1, keepdims=True)
  valid = norm[..., 0] > 1e-12 * np.maximum(np.abs(lines[..., 2]), 1.0)
  a, b, c = np.moveaxis(lines / np.maximum(norm, 1e-300), -1, 0)
  centre_x, centre_y = 0.5 * (width - 1), 0.5 * (height - 1)
  scale = centre_x / np.hypot(centre_x, centre_y)
  # Pixel-space rows of M: base_pixel = M @ [x, y, 1]_source_pixel.
  pixel = np.zeros(a.shape + (3, 3))
  pixel[..., 0, 0] = -b * scale
  pixel[..., 0, 1] = a * scale
  pixel[..., 0, 2] = scale * (b * centre_x - a * centre_y) + centre_x
  pixel[..., 1, 0] = a
  pixel[..., 1, 1] = b
  pixel[..., 1, 2] = c + centre_y
  pixel[..., 2, 2] = 1.0
  to_pixel = np.array([[centre_x, 0.0, centre_x], [0.0, centre_y, centre_y], [0.0, 0.0, 1.0]])
  normalized = np.linalg.inv(to_pixel) @ pixel @ to_pixel
  theta = normalized[..., :2, :].reshape(a.shape + (6,))
  theta = np.where(valid[..., None], theta, _OUTSIDE)
  theta = theta.astype(np.float32)
  return theta[0] if single else theta


def calibrated_theta(rig: Rig, heatmap_size) -> np.ndarray:
  """[P, HW, 6] epipolar-line theta for every ordered pair of a calibrated rig (pairs order).

  Args:
    rig: Calibrated rig; a heatmap covers each camera's whole image.
    heatmap_size: int or (H, W).

  Returns:
    float32 [V (V - 1), H*W, 6], to use with `calibrated_base` / `ops.line_base`.
  """
  fundamental = epipolar.pair_fundamental_matrices(rig, heatmap_size)
  return theta_from_fundamental(fundamental, heatmap_size)


def calibrated_base(heatmap_size, width_px: float = 1.0, value: float = 1.0) -> np.ndarray:
  """The line base that `calibrated_theta` assumes (`ops.line_base`)."""
  return ops.line_base(heatmap_size, width_px, value)


def calibrated_parameters(rig: Rig, heatmap_size, width_px: float = 1.0, value: float = 1.0):
  """(omega_base [H, W], theta [P, HW, 6]) of MetaFuse^0 for `AffineFusion.assign_parameters`."""
  return calibrated_base(heatmap_size, width_px, value), calibrated_theta(rig, heatmap_size)


def calibrated_fusion(rig: Rig, heatmap_size: int, temperature: float = ops.DEFAULT_TEMPERATURE,
                      width_px: float = 1.0, value: float = 1.0, *, theta_grid: int = 0,
                      name: str = "calibrated") -> layers.AffineFusion:
  """MetaFuse^0 of `rig`: a built AffineFusion holding `calibrated_parameters`.

  The one constructor of the calibrated fusion used by evaluation, finetuning, export and the
  experiments. `.materialize()` it when it is applied many times without training.

  Args:
    rig: The calibrated rig (V views, P = V (V - 1) ordered pairs).
    heatmap_size: Heatmap side in pixels.
    temperature: Read-out softmax temperature of the layer.
    width_px, value: The line base's cross-section sigma and peak (`calibrated_base`).
    theta_grid: 0 (one free theta per target pixel) or the side of a coarse theta grid, as
      `layers.AffineFusion`; the calibrated theta is assigned either way.
    name: Keras layer name.
  """
  size = int(heatmap_size)
  layer = layers.AffineFusion(rig.num_views, size, temperature, train_base=False,
                              theta_grid=theta_grid, name=name)
  layer.build((None, rig.num_views, size, size, 1))
  layer.assign_parameters(*calibrated_parameters(rig, size, width_px, value))
  return layer


def self_calibrated_theta(joints2d, num_views: int, heatmap_size, *, valid=None,
                          return_info: bool = False, **kwargs):
  """Epipolar-line theta of an uncalibrated rig, estimated from labelled joints.

  The self-calibrated counterpart of `calibrated_theta`, for a rig given without calibration: the
  pair fundamental matrices come from `self_calibration.estimate_pair_fundamentals` (robust
  normalized eight-point on the labelled joints) instead of the cameras.

  Args:
    joints2d: [K, V, J, 2] labelled joints in heatmap pixels (undistorted), NaN if unlabelled.
    num_views: V.
    heatmap_size: int or (H, W), the heatmap the joints' coordinates refer to.
    valid: None or [K, V, J] mask of usable labels.
    return_info: Also return the info dict of `estimate_pair_fundamentals` (with "fundamental").
    **kwargs: Keyword arguments of `self_calibration.robust_fundamental`.

  Returns:
    float32 [V (V - 1), H*W, 6] theta for `ops.line_base` (pairs order); with return_info,
    (theta, info).
  """
  fundamental, info = self_calibration.estimate_pair_fundamentals(joints2d, num_views,
                                                                  valid=valid, **kwargs)
  theta = theta_from_fundamental(fundamental, heatmap_size)
  if return_info:
    return theta, {**info, "fundamental": fundamental}
  return theta


def row_line_distance(fundamental: np.ndarray, heatmap_size, row_argmax: np.ndarray):
  """Distance (heatmap pixels) of each row's argmax to its target pixel's epipolar line.

  Args:
    fundamental: [P, 3, 3] heatmap-pixel fundamental matrices.
    heatmap_size: int or (H, W).
    row_argmax: [P, HW] int flat source index of each fusion-matrix row's maximum.

  Returns:
    distance: [P, HW] pixels; crosses: [P, HW] bool, whether the line meets the source map.
  """
  height, width = ops.heatmap_hw(heatmap_size)
  rows, cols = np.mgrid[:height, :width]
  targets = np.stack([cols.ravel(), rows.ravel()], axis=-1).astype(np.float64)
  lines = epipolar.epipolar_lines(np.swapaxes(fundamental, -1, -2)[:, None], targets[None])
  points = np.stack([row_argmax % width, row_argmax // width], axis=-1)
  distance = epipolar.point_line_distance(points, lines)
  corners = np.array([[0, 0, 1], [width - 1, 0, 1], [0, height - 1, 1],
                      [width - 1, height - 1, 1]], np.float64)
  signs = np.sign(np.einsum("pni,ci->pnc", lines, corners))
  crosses = (signs.min(axis=-1) < 0) & (signs.max(axis=-1) > 0)
  return distance, crosses
