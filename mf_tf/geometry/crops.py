"""Rotated square person crops and the epipolar geometry between two crops.

A top-down 2D pose model (BlazePose, `mf_tf.models.blazepose`) sees each person through a
rotated square crop of the image, and its heatmaps live in that crop. Fusing heatmaps across
views then needs the rig's epipolar geometry expressed in the two crop frames, per frame and per
person: F_crop = A_v^-T F A_u^-1 (Hartley & Zisserman 9.2 with the point maps x' = A x).

Conventions:
  - Pixel coordinates put pixel centres at integers (x = column, y = row), in the image and in
    the crop / heatmap grid alike, as `mf_tf.data.codec` and `Camera.project` do.
  - A crop ("region of interest", ROI) is a square of side `size` image pixels centred at `center`
    and rotated by `rotation` radians. Its upward axis points along the image direction
    R(rotation) (0, -1), R(a) = [[cos a, -sin a], [sin a, cos a]] (y down, so a positive rotation
    turns the crop clockwise on screen); rotation 0 is an upright crop. This is MediaPipe's
    NormalizedRect convention.
  - A crop affine A is [3, 3], mapping homogeneous image pixels to the pixels of an N x N grid
    covering the ROI (N = 256 for the model input, 64 for its heatmaps).
  - Fundamental matrices follow `mf_tf.geometry.epipolar`: x_target^T F x_source = 0 for
    homogeneous UNDISTORTED points.

Lens distortion: a crop affine applied to raw (distorted) image pixels gives crop coordinates in
which the epipolar constraint holds only approximately. The Panoptic HD cameras have k1 ~ -0.28
(about 100 px of displacement at the image corners), so it is not ignored: either the crop is
sampled from the undistorted image (`crop_sample_coords` with a camera, what `BlazePose` does when
given one), so that A maps undistorted pixels to crop pixels and F_crop is exact; or points
measured in a crop of the raw image are corrected with `undistort_crop_points` before F_crop is
applied. Ignoring distortion instead, on real Panoptic joints seen by cameras 00_03 and 00_12
through 64 x 64 crops of 700 and 950 px, puts them off their epipolar lines by a median 0.05, 95th
percentile 0.38 and max 0.62 heatmap px (tests/geometry/test_geometry_crops.py), against
< 1e-6 px with the correction.
"""

from __future__ import annotations

import numpy as np

from mf_tf.geometry import camera as camera_lib
from mf_tf.geometry import epipolar


def roi_affine(center, size, rotation, output_size: int) -> np.ndarray:
  """Affine map from image pixels to the pixels of an N x N grid covering a rotated square ROI.

  With c the centre, s the side, R the rotation and N = output_size, an image point p maps to
  h = (N / s) R^T (p - c) + (N - 1) / 2; the ROI's corners c + R (+-s/2, +-s/2) map to the grid's
  outer corners (-0.5, -0.5) ... (N - 0.5, N - 0.5).

  Args:
    center: [..., 2] ROI centre in image pixels.
    size: [...] ROI side in image pixels (positive).
    rotation: [...] ROI rotation in radians (see the module docstring).
    output_size: N, the side of the grid in pixels (e.g. 256 for a crop, 64 for a heatmap).

  Returns:
    [..., 3, 3] float64 affine matrices (last row [0, 0, 1]).
  """
  center = np.asarray(center, np.float64)
  size = np.asarray(size, np.float64)
  rotation = np.asarray(rotation, np.float64)
  if center.shape[-1:] != (2,):
    raise ValueError(f"center has shape {center.shape}, expected [..., 2]")
  if not np.all(size > 0):
    raise ValueError(f"ROI size must be positive, got {size}")
  if int(output_size) < 1:
    raise ValueError(f"output_size must be a positive number of pixels, got {output_size}")
  scale = float(output_size) / size
  cos, sin = np.cos(rotation), np.sin(rotation)
  # Rows of (N / s) R^T.
  linear = scale[..., None, None] * np.stack(
      [np.stack([cos, sin], -1), np.stack([-sin, cos], -1)], -2)
  offset = 0.5 * (float(output_size) - 1.0) - np.einsum("...ij,...j->...i", linear, center)
  top = np.concatenate([linear, offset[..., None]], axis=-1)
  bottom = np.broadcast_to(np.array([0.0, 0.0, 1.0]), top.shape[:-2] + (1, 3))
  return np.concatenate([top, bottom], axis=-2)


def rescale_affine(affine, from_size: int, to_size: int) -> np.ndarray:
  """Re-expresses a grid affine for another grid size over the same ROI (e.g. 256 -> 64).

  Args:
    affine: [..., 3, 3] image pixels -> pixels of a from_size grid.
    from_size: Side of the grid `affine` maps to.
    to_size: Side of the new grid.

  Returns:
    [..., 3, 3] image pixels -> pixels of a to_size grid covering the same ROI.
  """
  ratio = float(to_size) / float(from_size)
  shift = 0.5 * (ratio - 1.0)  # Pixel centres at integers: h' = ratio (h + 0.5) - 0.5.
  grid = np.array([[ratio, 0.0, shift], [0.0, ratio, shift], [0.0, 0.0, 1.0]])
  return grid @ np.asarray(affine, np.float64)


def apply_affine(affine, points) -> np.ndarray:
  """Applies [..., 3, 3] affine (or projective) maps to [..., P, 2] points -> [..., P, 2]."""
  affine = np.asarray(affine, np.float64)
  points = np.asarray(points, np.float64)
  homogeneous = np.concatenate([points, np.ones_like(points[..., :1])], axis=-1)
  mapped = np.einsum("...ij,...pj->...pi", affine, homogeneous)
  return mapped[..., :2] / mapped[..., 2:]


def crop_sample_coords(affine, output_size: int, camera: camera_lib.Camera | None = None):
  """Where each pixel of an N x N crop reads the image: the sampling grid of a crop.

  Args:
    affine: [3, 3] image pixels -> crop pixels (see `roi_affine`).
    output_size: N.
    camera: When given, `affine` acts on UNDISTORTED image pixels and the grid points are
      distorted with the camera's lens model, so that the crop shows the undistorted image and
      `crop_fundamental_matrix` is exact in it. None: `affine` acts on raw image pixels.

  Returns:
    [N, N, 2] float64 (x, y) raw image pixel coordinates of every crop pixel (row-major).
  """
  grid = np.arange(int(output_size), dtype=np.float64)
  xs, ys = np.meshgrid(grid, grid)
  coords = apply_affine(np.linalg.inv(np.asarray(affine, np.float64)),
                        np.stack([xs, ys], axis=-1).reshape(-1, 2))
  if camera is not None:
    coords = camera_lib.distort_points(camera, coords)
  return coords.reshape(int(output_size), int(output_size), 2)


def undistort_crop_points(camera: camera_lib.Camera, affine, points) -> np.ndarray:
  """Moves points measured in a crop of the RAW image to the crop frame of the undistorted image.

  crop px -> raw image px (A^-1) -> undistorted image px -> crop px (A). F_crop holds exactly for
  the result.

  Args:
    camera: The view's camera (its K and distortion).
    affine: [..., 3, 3] raw image pixels -> crop pixels.
    points: [..., P, 2] crop pixel coordinates.

  Returns:
    [..., P, 2] crop pixel coordinates of the undistorted points.
  """
  affine = np.asarray(affine, np.float64)
  image_points = apply_affine(np.linalg.inv(affine), points)
  return apply_affine(affine, camera_lib.undistort_points(camera, image_points))


def crop_fundamental_matrix(source: camera_lib.Camera, target: camera_lib.Camera,
                            source_affine, target_affine) -> np.ndarray:
  """Fundamental matrix between a source crop and a target crop, H&Z 9.2 with x' = A x.

  With F the pair's fundamental matrix (`epipolar.fundamental_matrix`, x_v^T F x_u = 0 for
  undistorted image pixels) and crop points h_u = A_u x_u, h_v = A_v x_v:
  h_v^T (A_v^-T F A_u^-1) h_u = x_v^T F x_u = 0.

  Args:
    source: Camera of the source view u.
    target: Camera of the target view v.
    source_affine: [..., 3, 3] A_u, undistorted image pixels of u -> crop (heatmap) pixels.
    target_affine: [..., 3, 3] A_v, likewise for v (leading dims broadcast with A_u's).

  Returns:
    [..., 3, 3] F_crop, unit Frobenius norm, with h_v^T F_crop h_u = 0.
  """
  source_affine = np.asarray(source_affine, np.float64)
  target_affine = np.asarray(target_affine, np.float64)
  for name, affine in (("source_affine", source_affine), ("target_affine", target_affine)):
    if affine.shape[-2:] != (3, 3):
      raise ValueError(f"{name} has shape {affine.shape}, expected [..., 3, 3]")
    if not np.all(np.isfinite(affine)):
      raise ValueError(f"{name} holds non-finite values")
  F = epipolar.fundamental_matrix(source, target)
  F_crop = np.swapaxes(np.linalg.inv(target_affine), -1, -2) @ F @ np.linalg.inv(source_affine)
  return F_crop / np.linalg.norm(F_crop, axis=(-2, -1), keepdims=True)
