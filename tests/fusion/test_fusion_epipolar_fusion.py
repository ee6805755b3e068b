"""Epipolar-line fusion without dense matrices agrees with the dense calibrated MetaFuse^0."""

import numpy as np
import pytest
import tensorflow as tf

from mf_tf.fusion import calibrated
from mf_tf.fusion import epipolar_fusion
from mf_tf.fusion import epipolar_plan
from mf_tf.fusion import layers
from mf_tf.fusion import ops
from mf_tf.geometry import epipolar
from mf_tf.geometry import rigs
from mf_tf.geometry import volume
from mf_tf.geometry.rig import ordered_pairs

WIDTH, VALUE = 1.0, 0.1  # The calibrated MetaFuse^0 defaults (config.fusion).
# Agreement with the dense calibrated fusion, messages (fused - initial) as a share of the largest
# dense message, on the 4-view H36M case at 32 px: measured 1.16 % (max), 0.42 % (99th
# percentile), 99.3 % equal argmaxes. Nearly all of it is the Gaussian cross-section
# (`band_profile`), which alone moves messages by 1.07 % there and by 1.5-3.0 % on the 16 px
# pencils below (sharper peaks, std 1.2 px): PENCIL_ERROR.
MAX_ERROR, P99_ERROR, SAME_ARGMAX, PENCIL_ERROR = 0.015, 0.006, 0.99, 0.04
# Against Eq. (1) with the Gaussian cross-section evaluated densely: the sampling alone. Measured
# 0.22 % (32 px) and 0.18 % (64 px) for peaks of std 1.5 px, 0.46 % (64 px) and up to 0.86 %
# (16 px) for std 1-1.2 px, the sharpest the sampling is set for (`HEATMAP_SIGMA_PX`).
SAMPLING_ERROR = 0.01

def _gaussians(points, size, sigma=1.5):
  """[..., J, 2] heatmap points -> [..., size, size, J] Gaussian heatmaps (peak 1)."""
  grid = np.arange(size, dtype=np.float64)
  dx = grid[None, :, None] - points[..., None, None, :, 0]
  dy = grid[:, None, None] - points[..., None, None, :, 1]
  return np.exp(-(dx ** 2 + dy ** 2) / (2 * sigma ** 2)).astype(np.float32)


def _dense_fused(heatmaps, fundamental_or_rig, size):
  """Dense reference: AffineFusion with the calibrated parameters, materialized, by ops.fuse."""
  num_views = heatmaps.shape[0]
  if isinstance(fundamental_or_rig, np.ndarray):
    omega = calibrated.calibrated_base(size, WIDTH, VALUE)
    theta = calibrated.theta_from_fundamental(fundamental_or_rig, size)
  else:
    omega, theta = calibrated.calibrated_parameters(fundamental_or_rig, size, WIDTH, VALUE)
  layer = layers.AffineFusion(num_views, size)
  layer.assign_parameters(omega, theta)
  matrices = layer.materialize().matrices
  return ops.fuse(heatmaps[None], matrices)[0].numpy()


def _gaussian_fused(heatmaps, fundamental, width=WIDTH, value=VALUE):
  """Eq. (1) evaluated densely with the Gaussian cross-section of `band_profile`, float64."""
  num_views, height, size_x, num_joints = heatmaps.shape
  integral, sigma = epipolar_fusion.band_profile((height, size_x), width, value)
  rows, cols = np.mgrid[:height, :size_x]
  pixels = np.stack([cols.ravel(), rows.ravel(), np.ones(height * size_x)], -1)
  fused = heatmaps.astype(np.float64).reshape(num_views, -1, num_joints).copy()
  for pair, (source, target) in enumerate(ordered_pairs(num_views)):
    lines = pixels @ fundamental[pair]  # [HW, 3]: F^T x of every target pixel.
    norm = np.linalg.norm(lines[:, :2], axis=1, keepdims=True)
    lines = np.where(norm > 0, lines / np.where(norm > 0, norm, 1.0), np.inf)  # No line: 0.
    d = lines @ pixels.T  # [HW target, HW source] signed distances, pixels.
    band = integral * np.exp(-0.5 * (d / sigma) ** 2) / (np.sqrt(2 * np.pi) * sigma)
    fused[target] += band @ heatmaps[source].reshape(-1, num_joints)
  return fused.reshape(heatmaps.shape)


def _compare(heatmaps, reference, fused):
  reference_message, message = reference - heatmaps, fused - heatmaps
  error = np.abs(message - reference_message) / np.abs(reference_message).max()
  flat = lambda x: x.reshape(x.shape[0], -1, x.shape[-1])  # noqa: E731
  same_argmax = flat(reference).argmax(1) == flat(fused).argmax(1)
  return error, same_argmax


@pytest.fixture(scope="module")
def h36m_case():
  """4-view H36M rig at 32 px: 6 random body-sized poses x 6 joints, with distractors."""
  rig = rigs.get_rig("h36m")
  size = 32
  rng = np.random.default_rng(0)
  centre = volume.axes_meeting_point(rig)
  points = centre + rng.uniform(-500, 500, (6, 6, 3)) * [1, 1, 2]  # [poses, joints, 3] mm
  views = []
  for camera in rig.cameras:
    uv, _ = camera.project(points.reshape(-1, 3), distort=False)
    views.append(uv.reshape(6, 6, 2) * [size / camera.width, size / camera.height])
  truth = np.stack(views, 1)  # [poses, V, J, 2]
  heatmaps = _gaussians(truth, size)
  # A stronger distractor 6-9 px away in one view per joint: fusion must not follow it.
  shift = rng.uniform(6, 9, truth.shape[:1] + (1,) + truth.shape[2:]) * rng.choice([-1, 1], (
      truth.shape[0], 1, truth.shape[2], 2))
  distractor = np.clip(truth[:, :1] + shift, 2, size - 3)
  heatmaps[:, :1] = 0.6 * heatmaps[:, :1] + _gaussians(distractor, size)
  fundamental = epipolar.pair_fundamental_matrices(rig, size)
  return rig, size, heatmaps, truth, fundamental


def test_matches_the_dense_calibrated_fusion_on_a_full_image_rig(h36m_case):
  rig, size, heatmaps, truth, fundamental = h36m_case
  errors, agree = [], []
  for pose in heatmaps:
    dense = _dense_fused(pose, rig, size)
    fused = epipolar_fusion.epipolar_fuse(pose, fundamental, line_width_px=WIDTH,
                                          line_value=VALUE).numpy()
    error, same = _compare(pose, dense, fused)
    errors.append(error)
    agree.append(same)
  errors, agree = np.stack(errors), np.stack(agree)
  assert agree.mean() >= SAME_ARGMAX, agree.mean()
  assert errors.max() <= MAX_ERROR, errors.max()
  assert np.percentile(errors, 99) <= P99_ERROR, np.percentile(errors, 99)


def test_sampling_error_against_the_gaussian_eq1(h36m_case):
  _, _, heatmaps, _, fundamental = h36m_case
  for pose in heatmaps[:3]:
    error, _ = _compare(pose, _gaussian_fused(pose, fundamental),
                        epipolar_fusion.epipolar_fuse(pose, fundamental).numpy())
    assert error.max() <= SAMPLING_ERROR, error.max()


@pytest.mark.large
def test_sampling_error_at_64_px_with_sharp_peaks():
  """Heatmap peaks of std 1 px (`HEATMAP_SIGMA_PX`), the sharpest the sampling is set for."""
  size = 64
  fundamental = epipolar.pair_fundamental_matrices(rigs.get_rig("h36m"), size)
  heatmaps = _gaussians(np.random.default_rng(3).uniform(5, 58, (4, 6, 2)), size, sigma=1.0)
  error, _ = _compare(heatmaps, _gaussian_fused(heatmaps, fundamental),
                      epipolar_fusion.epipolar_fuse(heatmaps, fundamental).numpy())
  assert error.max() <= SAMPLING_ERROR, error.max()


def test_fusion_recovers_the_true_joint_over_a_distractor(h36m_case):
  _, size, heatmaps, truth, fundamental = h36m_case
  fused = np.stack([epipolar_fusion.epipolar_fuse(pose, fundamental).numpy()
                    for pose in heatmaps])
  peak = lambda maps: np.stack(np.unravel_index(  # noqa: E731
      maps.reshape(*maps.shape[:2], -1, maps.shape[-1]).argmax(2), (size, size))[::-1], -1)
  inside = np.all((truth[:, 0] > 1) & (truth[:, 0] < size - 2), -1)
  before = np.linalg.norm(peak(heatmaps)[:, 0] - truth[:, 0], axis=-1)
  after = np.linalg.norm(peak(fused)[:, 0] - truth[:, 0], axis=-1)
  assert np.mean(before[inside] > 3) > 0.9  # The distractor wins in view 0 before fusion...
  assert np.mean(after[inside] <= 1.5) > 0.9  # ...and the true joint wins after.


def _pencil_fundamental(source_epipole_target, homography=np.eye(3)):
  """A rank-2 F = [e_t]x H (x_t^T F x_s = 0); its source epipole is H^-1 e_t."""
  return epipolar.skew(source_epipole_target) @ homography


def _pair(target_epipole):
  """Two views related by a rotation and shift; pairs in ordered_pairs order (1->0, 0->1)."""
  rotation = np.array([[np.cos(0.3), -np.sin(0.3), 2.0], [np.sin(0.3), np.cos(0.3), -1.5],
                       [0.0, 0.0, 1.0]])
  forward = _pencil_fundamental(np.asarray(target_epipole), rotation)  # view 0 -> view 1
  forward /= np.linalg.norm(forward)
  assert ordered_pairs(2).tolist() == [[1, 0], [0, 1]]
  return np.stack([forward.T, forward])


PENCILS = [("epipole at infinity (rectified pair)", (1.0, 0.0, 0.0)),
           ("epipole inside both maps", (7.3, 8.6, 1.0)),
           ("far epipole", (900.0, -40.0, 1.0))]


@pytest.mark.parametrize("name, target_epipole", PENCILS)
def test_matches_dense_for_any_pencil(name, target_epipole):
  size = 16
  fundamental = _pair(target_epipole)
  rng = np.random.default_rng(1)
  heatmaps = _gaussians(rng.uniform(2, size - 3, (2, 5, 2)), size, sigma=1.2)
  fused = epipolar_fusion.epipolar_fuse(heatmaps, fundamental).numpy()
  error, _ = _compare(heatmaps, _dense_fused(heatmaps, fundamental, size), fused)
  assert error.max() <= PENCIL_ERROR, (name, error.max())
  error, _ = _compare(heatmaps, _gaussian_fused(heatmaps, fundamental), fused)
  assert error.max() <= SAMPLING_ERROR, (name, error.max())


def test_non_square_maps():
  height, width = 12, 18
  forward = _pencil_fundamental(np.array([30.0, 5.0, 1.0]))
  fundamental = np.stack([forward.T, forward]) / np.linalg.norm(forward)
  rng = np.random.default_rng(2)
  points = rng.uniform(2, [width - 3, height - 3], (2, 4, 2))
  grid_x, grid_y = np.arange(width), np.arange(height)
  heatmaps = np.exp(-((grid_x[None, None, :, None] - points[:, None, None, :, 0]) ** 2
                      + (grid_y[None, :, None, None] - points[:, None, None, :, 1]) ** 2)
                    / (2 * 1.2 ** 2)).astype(np.float32)
  fused = epipolar_fusion.epipolar_fuse(heatmaps, fundamental).numpy()
  error, _ = _compare(heatmaps, _gaussian_fused(heatmaps, fundamental), fused)
  assert error.max() <= SAMPLING_ERROR, error.max()


def test_rectified_pair_spreads_a_blob_along_its_row():
  size = 16
  forward = _pencil_fundamental(np.array([1.0, 0.0, 0.0]))  # y_target = y_source.
  fundamental = np.stack([forward.T, forward])
  heatmaps = np.zeros((2, size, size, 1), np.float32)
  heatmaps[0] = _gaussians(np.array([[5.0, 9.0]]), size, sigma=1.2)
  message = (epipolar_fusion.epipolar_fuse(heatmaps, fundamental).numpy() - heatmaps)[1, ..., 0]
  # Eq. 1 by hand: every source pixel (x, y) counts with g(y - 9), the Gaussian of the base's
  # integral and variance, times its value.
  integral, sigma = epipolar_fusion.band_profile(size, WIDTH, VALUE)
  rows = np.arange(size) - 9.0
  g = integral * np.exp(-0.5 * (rows / sigma) ** 2) / (np.sqrt(2 * np.pi) * sigma)
  expected = np.sum(g * heatmaps[0, :, :, 0].sum(axis=1))
  np.testing.assert_allclose(message[9], expected, rtol=2e-3)
  assert np.all(message[9] > 20 * message[[3, 15]].max())


@pytest.mark.parametrize("size", [16, 17])
def test_band_profile_has_the_line_bases_integral_and_variance(size):
  """The dense base's cross-section: rows of the Gaussian interpolated linearly (even and odd H)."""
  base = ops.line_base(size, 1.3, 0.2)[:, 0].astype(np.float64)
  rows = np.arange(size) - 0.5 * (size - 1)
  d = np.linspace(rows[0] - 1, rows[-1] + 1, 200001)
  g = np.interp(d, rows, base, left=0.0, right=0.0)
  step = d[1] - d[0]
  integral, sigma = epipolar_fusion.band_profile(size, 1.3, 0.2)
  np.testing.assert_allclose(integral, np.sum(g) * step, rtol=1e-6)
  np.testing.assert_allclose(sigma ** 2, np.sum(g * d * d) * step / integral, rtol=1e-6)


def _reference_apply(heatmaps, plan, layout):
  """`_apply` written out: loops over lattice rows, lines, samples, intervals and targets."""
  num_views, height, width, num_joints = heatmaps.shape
  tables = []
  for family, transpose in zip(layout.families, ([0, 1, 2, 3], [0, 2, 1, 3])):
    maps = heatmaps.astype(np.float64).transpose(transpose)  # [V, minor, major, J]
    table = np.zeros((num_views, len(family.samples), family.minor_rows, num_joints))
    for v in range(num_views):
      for m in range(len(family.samples)):
        for n in range(family.minor_rows):
          table[v, m, n] = np.einsum("y,x,yxj->j", family.blur_minor[n], family.blur_major[m],
                                     maps[v])
    tables.append(table.reshape(-1, num_joints))
  table = np.concatenate(tables)
  rows, weights = np.asarray(plan["band_rows"]), np.asarray(plan["band_weights"])
  sums = np.zeros((rows.shape[0], num_joints))
  for line in range(rows.shape[0]):
    for m in range(rows.shape[1]):
      for k in range(weights.shape[2]):
        sums[line] += weights[line, m, k] * table[rows[line, m] + k]
  fine = [sum(layout.lanczos[phase, i] * sums[row] for i, row in enumerate(window))
          for window in np.asarray(plan["window_rows"]) for phase in range(len(layout.lanczos))]
  fine = np.array(fine + [np.zeros(num_joints)] * 2)
  fused = heatmaps.astype(np.float64).reshape(num_views, -1, num_joints).copy()
  target_rows, target_weights = np.asarray(plan["target_rows"]), np.asarray(
      plan["target_weights"])
  for v in range(num_views):
    for pixel in range(height * width):
      for source in range(num_views - 1):
        for k in range(2):
          fused[v, pixel] += (target_weights[v, pixel, source, k]
                              * fine[target_rows[v, pixel, source, k]])
  return fused.reshape(heatmaps.shape)


@pytest.mark.parametrize("size", [12, (10, 14)])
def test_fast_path_equals_a_straightforward_reference(size):
  height, width = ops.heatmap_hw(size)
  rig = rigs.get_rig("h36m").subset([0, 1, 2])
  fundamental = epipolar.pair_fundamental_matrices(rig, height)
  rng = np.random.default_rng(4)
  heatmaps = rng.uniform(0, 1, (3, height, width, 2)).astype(np.float32)
  layout = epipolar_plan.sampling_layout(height, width, WIDTH, VALUE)
  plan = epipolar_plan.build_plan(epipolar_fusion._NumpyOps, fundamental, layout,
                                  epipolar_fusion.default_num_lines((height, width)))
  fused = epipolar_fusion._apply(epipolar_fusion._NumpyOps, heatmaps, plan, layout)
  np.testing.assert_allclose(fused, _reference_apply(heatmaps, plan, layout), rtol=1e-5,
                             atol=1e-5 * np.abs(fused).max())


def test_target_sums_read_row_pairs_in_blocks():
  """Both backends' target interpolation equals the sum written out, across NumPy's blocks."""
  rng = np.random.default_rng(6)
  fine = rng.uniform(-1, 1, (40, 3)).astype(np.float32)
  first = rng.integers(0, 39, (2, 2500, 3))  # [V, HW, V - 1]: more targets than one block.
  rows = np.stack([first, first + 1], -1)
  weights = rng.uniform(0, 1, rows.shape).astype(np.float32)
  expected = np.einsum("psk,pskj->pj", weights.reshape(-1, 3, 2), fine[rows].reshape(-1, 3, 2, 3))
  numpy_sums = epipolar_fusion._NumpyOps.target_sums(fine, rows, weights)
  tf_sums = epipolar_fusion._TensorflowOps.target_sums(tf.constant(fine), tf.constant(rows),
                                                       tf.constant(weights)).numpy()
  np.testing.assert_allclose(numpy_sums, expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(tf_sums, expected, rtol=1e-5, atol=1e-6)


def test_tensorflow_ops_equal_numpy_eager_and_traced(h36m_case):
  _, size, heatmaps, _, fundamental = h36m_case
  layout = epipolar_plan.sampling_layout(size, size, WIDTH, VALUE)
  expected = epipolar_plan.build_plan(epipolar_fusion._NumpyOps, fundamental, layout,
                                      epipolar_fusion.default_num_lines(size))
  plan = epipolar_fusion.line_plan(fundamental, size)
  for key, value in expected.items():
    if value.dtype.kind == "i":
      np.testing.assert_array_equal(plan[key].numpy(), value, err_msg=key)
    else:
      np.testing.assert_allclose(plan[key].numpy(), value, atol=1e-5, err_msg=key)

  @tf.function(input_signature=[tf.TensorSpec(heatmaps.shape[1:], tf.float32),
                                tf.TensorSpec(fundamental.shape, tf.float64)])
  def traced(pose, pair_fundamental):
    return epipolar_fusion.apply_line_plan(pose, epipolar_fusion.line_plan(pair_fundamental,
                                                                           size))

  numpy_fused = epipolar_fusion.epipolar_fuse(heatmaps[0], fundamental).numpy()
  eager = epipolar_fusion.apply_line_plan(heatmaps[0], plan).numpy()
  graph = traced(heatmaps[0], fundamental).numpy()
  scale = np.abs(numpy_fused - heatmaps[0]).max()
  np.testing.assert_allclose(eager, numpy_fused, atol=1e-5 * scale)
  np.testing.assert_allclose(graph, numpy_fused, atol=1e-5 * scale)


def test_plan_shapes_and_weights():
  size, num_views = 12, 3
  rig = rigs.get_rig("h36m").subset([0, 1, 2])
  fundamental = epipolar.pair_fundamental_matrices(rig, size)
  layout = epipolar_plan.sampling_layout(size, size, WIDTH, VALUE)
  plan = epipolar_plan.build_plan(epipolar_fusion._NumpyOps, fundamental, layout, 100)
  num_lines, num_samples = plan["band_rows"].shape
  assert num_samples == layout.samples and plan["band_weights"].shape == (num_lines,
                                                                         num_samples, 4)
  table_rows = sum(num_views * len(f.samples) * f.minor_rows for f in layout.families)
  assert plan["band_rows"].min() >= 0 and plan["band_rows"].max() + 4 <= table_rows
  # The cubic B-spline's weights: 4 values of (1 - u)^3, 3 u^3 - 6 u^2 + 4, ..., u^3 over 6 for
  # the sample's phase u, times the step along the line, major_step / cos(angle to the major
  # axis): the same for all samples of a line, and at least major_step.
  weights = plan["band_weights"]
  steps = weights.sum(-1)
  np.testing.assert_allclose(steps, np.broadcast_to(steps[:, :1], steps.shape), rtol=1e-5)
  assert np.all(steps >= layout.major_step * (1 - 1e-5))
  u = np.cbrt(weights[..., 3] / steps * 6)
  np.testing.assert_allclose(weights / steps[..., None] * 6, np.stack(
      [(1 - u) ** 3, 3 * u ** 3 - 6 * u ** 2 + 4, -3 * u ** 3 + 3 * u ** 2 + 3 * u + 1, u ** 3],
      -1), atol=1e-5)
  assert plan["window_rows"].min() >= 0 and plan["window_rows"].max() < num_lines
  assert plan["target_rows"].shape == plan["target_weights"].shape == (num_views, size * size,
                                                                      num_views - 1, 2)
  fine_rows = len(plan["window_rows"]) * epipolar_plan.UPSAMPLE + 2
  assert plan["target_rows"].min() >= 0 and plan["target_rows"].max() < fine_rows
  weights = plan["target_weights"]
  assert weights.min() >= 0 and np.allclose(weights.sum(-1), 1.0)


def test_num_lines_caps_the_lines_per_pair(h36m_case):
  _, size, heatmaps, _, fundamental = h36m_case
  layout = epipolar_plan.sampling_layout(size, size, WIDTH, VALUE)
  pairs, families = len(fundamental), 2
  for cap in (16, 40):
    plan = epipolar_plan.build_plan(epipolar_fusion._NumpyOps, fundamental, layout, cap)
    margins = 2 * epipolar_plan.LANCZOS_LOBES * pairs * families
    assert len(plan["band_rows"]) <= pairs * cap + margins
  default = epipolar_plan.build_plan(epipolar_fusion._NumpyOps, fundamental, layout,
                                     epipolar_fusion.default_num_lines(size))
  unbounded = epipolar_plan.build_plan(epipolar_fusion._NumpyOps, fundamental, layout, 10 ** 6)
  assert len(default["band_rows"]) == len(unbounded["band_rows"])  # The default never binds.


def test_targets_without_a_line_receive_nothing():
  size = 8
  heatmaps = np.random.default_rng(5).uniform(0, 1, (2, size, size, 2)).astype(np.float32)
  fused = epipolar_fusion.epipolar_fuse(heatmaps, np.zeros((2, 3, 3))).numpy()
  np.testing.assert_array_equal(fused, heatmaps)
  plan = epipolar_fusion.line_plan(np.zeros((2, 3, 3)), size)
  assert plan["band_rows"].shape[0] == 0
  np.testing.assert_array_equal(epipolar_fusion.apply_line_plan(heatmaps, plan).numpy(), heatmaps)
  # Lines far outside the source map (beyond the band's support) bring nothing either.
  away = _pencil_fundamental(np.array([1.0, 0.0, 0.0]),
                             np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 500.0], [0.0, 0.0, 1.0]]))
  fused = epipolar_fusion.epipolar_fuse(heatmaps, np.stack([away.T, away])).numpy()
  np.testing.assert_array_equal(fused, heatmaps)


def test_bad_inputs_name_the_value():
  heatmaps = np.zeros((3, 8, 8, 2), np.float32)
  with pytest.raises(ValueError, match=r"expected \(6, 3, 3\) for 3 views"):
    epipolar_fusion.epipolar_fuse(heatmaps, np.zeros((2, 3, 3)))
  with pytest.raises(ValueError, match="NaN or Inf"):
    epipolar_fusion.epipolar_fuse(heatmaps, np.full((6, 3, 3), np.nan))
  with pytest.raises(ValueError, match=r"expected \[V, H, W, J\]"):
    epipolar_fusion.epipolar_fuse(heatmaps[0], np.zeros((6, 3, 3)))
  with pytest.raises(ValueError, match="line_width_px"):
    epipolar_fusion.line_plan(np.zeros((6, 3, 3)), 8, line_width_px=0.0)
  with pytest.raises(ValueError, match="num_lines=2"):
    epipolar_fusion.epipolar_fuse(heatmaps, np.zeros((6, 3, 3)), num_lines=2)
  with pytest.raises(ValueError, match="the plan is for 8x8 maps"):
    epipolar_fusion.apply_line_plan(np.zeros((3, 9, 9, 2), np.float32),
                                    epipolar_fusion.line_plan(np.zeros((6, 3, 3)), 8))
