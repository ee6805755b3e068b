"""Fusion math: Eq. 1 vs a per-pair reference, softmax, loss, top-k, validation."""

import numpy as np
import pytest
import tensorflow as tf

from mf_tf.fusion import ops
from mf_tf.fusion import sparse
from mf_tf.geometry.rig import ordered_pairs


def _reference_fuse(heatmaps, matrices):
  batch, views, height, width, joints = heatmaps.shape
  flat = heatmaps.reshape(batch, views, height * width, joints)
  fused = flat.copy()
  for p, (source, target) in enumerate(ordered_pairs(views)):
    fused[:, target] += np.einsum("ij,bjk->bik", matrices[p], flat[:, source])
  return fused.reshape(heatmaps.shape)


@pytest.mark.parametrize("views", [2, 3, 4])
def test_fuse_matches_per_pair_reference(views):
  rng = np.random.default_rng(views)
  heatmaps = rng.normal(size=(2, views, 4, 5, 3))
  matrices = rng.normal(size=(views * (views - 1), 20, 20))
  np.testing.assert_allclose(ops.fuse(heatmaps, matrices).numpy(),
                             _reference_fuse(heatmaps, matrices), atol=1e-10)


def test_fuse_rejects_wrong_number_of_matrices():
  with pytest.raises(ValueError, match="3 views need 6 fusion matrices, got 2"):
    ops.fuse(np.zeros((1, 3, 4, 4, 2)), np.zeros((2, 16, 16)))


def test_translation_theta_with_point_base_is_same_pixel_correspondence():
  size = 6
  base = np.zeros((size + 1, size + 1), np.float32)  # Odd size: the centre is a pixel.
  base[size // 2, size // 2] = 1.0
  matrices = ops.affine_matrices(base, ops.translation_theta(size + 1, 2)).numpy()
  np.testing.assert_allclose(matrices[0], np.eye((size + 1) ** 2), atol=1e-5)
  identity = ops.affine_matrices(base, ops.identity_theta(size + 1, 1)).numpy()
  np.testing.assert_allclose(identity[0], np.tile(base.ravel(), ((size + 1) ** 2, 1)), atol=1e-6)


def test_line_base_is_horizontal_line_through_centre():
  base = ops.line_base(9, width_px=1.0)
  assert base.shape == (9, 9)
  np.testing.assert_allclose(base[4], 1.0)
  np.testing.assert_allclose(base[3], np.exp(-0.5), rtol=1e-6)
  assert np.argmax(base[:, 0]) == 4


def test_sparse_fusion_equals_dense_for_full_k_and_for_sparse_matrices():
  rng = np.random.default_rng(0)
  heatmaps = rng.normal(size=(2, 3, 4, 4, 2)).astype(np.float32)
  matrices = rng.normal(size=(6, 16, 16)).astype(np.float32)
  values, indices = sparse.sparsify_top_k(matrices, 16)
  np.testing.assert_allclose(sparse.fuse_sparse(heatmaps, values, indices).numpy(),
                             ops.fuse(heatmaps, matrices).numpy(), atol=1e-5)
  keep = np.argsort(-np.abs(matrices), axis=-1)[..., :5]
  top = np.zeros_like(matrices)
  np.put_along_axis(top, keep, np.take_along_axis(matrices, keep, -1), -1)
  values, indices = sparse.sparsify_top_k(top, 5)
  assert values.shape == (6, 16, 5) and indices.dtype == tf.int32
  np.testing.assert_allclose(sparse.fuse_sparse(heatmaps, values, indices).numpy(),
                             ops.fuse(heatmaps, top).numpy(), atol=1e-5)


def test_softmax_temperature_and_peak_normalization():
  rng = np.random.default_rng(1)
  heatmaps = rng.normal(size=(2, 2, 5, 6, 3)).astype(np.float32)
  soft = ops.softmax_temperature(heatmaps, 0.2).numpy()
  np.testing.assert_allclose(soft.sum(axis=(2, 3)), 1.0, rtol=1e-5)
  peak = ops.peak_normalized_softmax(heatmaps, 0.2).numpy()
  np.testing.assert_allclose(peak.max(axis=(2, 3)), 1.0)
  np.testing.assert_allclose(peak / peak.sum(axis=(2, 3), keepdims=True), soft, rtol=1e-4)


def _gaussian(size, x, y, sigma=1.5):
  rows, cols = np.mgrid[:size, :size]
  return np.exp(-((cols - x) ** 2 + (rows - y) ** 2) / (2 * sigma ** 2))


def test_fusion_loss_values_weights_and_gradient():
  size, temperature = 16, 0.2
  target = _gaussian(size, 5, 7)[None, None, :, :, None]  # [1, 1, H, W, 1]
  # softmax_T(f) * sum(target) == target exactly when f = T * log(target).
  perfect = temperature * np.log(np.maximum(target, 1e-30))
  assert float(ops.fusion_loss(perfect, target, None, temperature)) < 1e-10
  wrong = _gaussian(size, 11, 3)[None, None, :, :, None]
  loss_wrong = float(ops.fusion_loss(wrong, target, np.ones((1, 1, 1)), temperature))
  soft = ops.softmax_temperature(wrong, temperature).numpy()
  expected = np.sum((soft * target.sum() - target) ** 2)
  np.testing.assert_allclose(loss_wrong, expected, rtol=1e-6)
  assert 2.0 < loss_wrong < 30.0  # O(1): a misplaced peak costs about the two blobs' energy.
  assert float(ops.fusion_loss(wrong, target, np.zeros((1, 1, 1)), temperature)) == 0.0
  fused = tf.Variable(wrong)
  with tf.GradientTape() as tape:
    loss = ops.fusion_loss(fused, target, None, temperature)
  grad = tape.gradient(loss, fused).numpy()[0, 0, :, :, 0]
  assert np.isfinite(grad).all()
  assert grad[7, 5] < 0  # Raise the fused map at the true joint.
  assert grad[3, 11] > 0  # Lower the wrong peak.


def test_check_heatmaps_errors():
  good = tf.zeros([2, 3, 8, 8, 4])
  assert ops.check_heatmaps(good, 3, 8).shape == good.shape
  with pytest.raises(ValueError, match="2 views .* expected num_views=3"):
    ops.check_heatmaps(tf.zeros([2, 2, 8, 8, 4]), 3, 8)
  with pytest.raises(ValueError, match="8x8 .* expected heatmap_size 16x16"):
    ops.check_heatmaps(good, 3, 16)
  with pytest.raises(ValueError, match="must be \\[batch, views, H, W, joints\\]"):
    ops.check_heatmaps(tf.zeros([3, 8, 8, 4]), 3, 8)
  for bad in (np.nan, np.inf):
    values = np.zeros([1, 3, 8, 8, 2], np.float32)
    values[0, 1, 2, 3, 1] = bad
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN or Inf"):
      ops.check_heatmaps(tf.constant(values), 3, 8)
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN or Inf"):
      tf.function(lambda h: ops.check_heatmaps(h, 3, 8))(tf.constant(values))


def test_sparse_fusion_chunked_accumulation_matches(monkeypatch):
  rng = np.random.default_rng(3)
  heatmaps = rng.normal(size=(2, 3, 4, 4, 2)).astype(np.float32)
  matrices = rng.normal(size=(6, 16, 16)).astype(np.float32)
  values, indices = sparse.sparsify_top_k(matrices, 12)
  whole = sparse.fuse_sparse(heatmaps, values, indices).numpy()
  monkeypatch.setattr(sparse, "_SPARSE_CHUNK_ELEMENTS", 16 * 2 * 2 * 3)  # chunk = 3 of k = 12
  assert sparse._sparse_chunk(12, 16 * 2 * 2) == 3
  chunked = sparse.fuse_sparse(heatmaps, values, indices).numpy()
  xla = tf.function(sparse.fuse_sparse, jit_compile=True)(heatmaps, values, indices).numpy()
  np.testing.assert_allclose(chunked, whole, atol=1e-5)
  np.testing.assert_allclose(xla, whole, atol=1e-5)


def test_cross_entropy_loss_is_zero_at_its_optimum_and_matches_a_direct_formula():
  rng = np.random.default_rng(3)
  target = np.exp(-rng.uniform(0.0, 4.0, size=(2, 3, 5, 4, 2)))  # Positive, peak <= 1.
  temperature = 0.2
  optimum = temperature * np.log(target)  # softmax_T(optimum) = target / sum(target).
  assert float(ops.fusion_loss(optimum, target, None, temperature, "ce")) == pytest.approx(
      0.0, abs=1e-9)
  fused = rng.normal(size=target.shape)
  flat_f = fused.reshape(2, 3, 20, 2) / temperature
  log_p = flat_f - np.log(np.exp(flat_f).sum(axis=2, keepdims=True))
  q = target.reshape(2, 3, 20, 2) / target.reshape(2, 3, 20, 2).sum(axis=2, keepdims=True)
  weights = rng.uniform(0.0, 1.0, size=(2, 3, 2))
  expected = np.mean((np.sum(q * (np.log(q) - log_p), axis=2)) * weights)  # KL(q || p).
  np.testing.assert_allclose(float(ops.fusion_loss(fused, target, weights, temperature, "ce")),
                             expected, rtol=1e-9)
  with pytest.raises(ValueError, match="kind='l1'"):
    ops.fusion_loss(fused, target, None, temperature, "l1")


def test_cross_entropy_gradient_matches_finite_differences_and_ignores_empty_targets():
  rng = np.random.default_rng(4)
  target = np.exp(-rng.uniform(0.0, 3.0, size=(1, 2, 3, 3, 2)))
  target[0, 1, :, :, 1] = 0.0  # An all-zero target (joint outside the map) contributes 0.
  fused = tf.Variable(rng.normal(size=target.shape))
  with tf.GradientTape() as tape:
    loss = ops.fusion_loss(fused, target, None, 0.5, "ce")
  grad = tape.gradient(loss, fused).numpy()
  assert np.all(grad[0, 1, :, :, 1] == 0.0) and np.isfinite(float(loss))
  eps = 1e-6
  for index in [(0, 0, 1, 2, 0), (0, 1, 0, 0, 0), (0, 0, 2, 2, 1)]:
    step = np.zeros(target.shape)
    step[index] = eps
    numeric = (float(ops.fusion_loss(fused.numpy() + step, target, None, 0.5, "ce"))
               - float(ops.fusion_loss(fused.numpy() - step, target, None, 0.5, "ce"))) / (2 * eps)
    assert grad[index] == pytest.approx(numeric, rel=1e-5, abs=1e-9)


def test_theta_field_basis_interpolates_bilinearly_between_grid_nodes():
  basis = ops.theta_field_basis((5, 7), 3)
  assert basis.shape == (35, 9)
  np.testing.assert_allclose(basis.sum(axis=1), 1.0, atol=1e-6)
  # Corners and the centre are grid nodes: one weight of exactly 1.
  for pixel, node in ((0, 0), (6, 2), (28, 6), (34, 8), (2 * 7 + 3, 4)):
    np.testing.assert_allclose(basis[pixel], np.eye(9)[node], atol=1e-6)
  # A field linear in the pixel position is reproduced exactly at every pixel.
  node_y, node_x = np.meshgrid(np.linspace(0, 4, 3), np.linspace(0, 6, 3), indexing="ij")
  rows, cols = np.mgrid[:5, :7]
  np.testing.assert_allclose(basis @ (2 * node_x - node_y).ravel(), (2 * cols - rows).ravel(),
                             atol=1e-5)
  with pytest.raises(ValueError, match="grid_size=1"):
    ops.theta_field_basis(8, 1)
