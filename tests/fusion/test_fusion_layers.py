"""Fusion layers: the keras-hub style helper for every layer, materialization, freezing."""

import numpy as np
import pytest
import tensorflow as tf

from mf_tf.fusion import layers
from mf_tf.fusion import ops
from fusion_layer_test_helper import random_heatmaps
from fusion_layer_test_helper import run_layer_test

_SIZE = 8


@pytest.fixture
def data():
  rng = np.random.default_rng(0)
  return random_heatmaps(rng, batch=2, views=3, size=_SIZE), random_heatmaps(
      rng, batch=2, views=3, size=_SIZE)


def test_affine_fusion_layer(data, tmp_path):
  inputs, targets = data
  run_layer_test(layers.AffineFusion, {"num_views": 3, "heatmap_size": _SIZE}, inputs,
                 target_data=targets, tmp_path=tmp_path)


def test_affine_fusion_two_views_non_square(tmp_path):
  inputs = random_heatmaps(np.random.default_rng(1), views=2, size=6)[:, :, :, :5]
  run_layer_test(layers.AffineFusion, {"num_views": 2, "heatmap_size": (6, 5),
                                       "theta_init": "identity", "base_init": "zeros"},
                 inputs, tmp_path=tmp_path)


def test_naive_fusion_layer(data, tmp_path):
  inputs, targets = data
  run_layer_test(layers.NaiveFusion, {"num_views": 3, "heatmap_size": _SIZE}, inputs,
                 target_data=targets, tmp_path=tmp_path)


def test_no_fusion_layer(data, tmp_path):
  inputs, _ = data
  run_layer_test(layers.NoFusion, {}, inputs, tmp_path=tmp_path, expect_trainable=False)
  np.testing.assert_array_equal(layers.NoFusion()(inputs).numpy(), inputs)


def test_materialized_fusion_layers(data, tmp_path):
  inputs, _ = data
  live = layers.AffineFusion(3, _SIZE)
  live.build(inputs.shape)
  rng = np.random.default_rng(2)
  live.assign_parameters(omega_base=rng.normal(size=(_SIZE, _SIZE)),
                         theta=live.theta.numpy() + 0.1 * rng.normal(size=live.theta.shape))
  dense = live.materialize()
  np.testing.assert_allclose(dense(inputs).numpy(), live(inputs).numpy(), atol=1e-5)
  run_layer_test(layers.MaterializedFusion, {"num_views": 3, "heatmap_size": _SIZE}, inputs,
                 tmp_path=tmp_path, expect_trainable=False)
  sparse_kwargs = {"num_views": 3, "heatmap_size": _SIZE, "top_k": 5}
  run_layer_test(layers.MaterializedFusion, sparse_kwargs, inputs, tmp_path=tmp_path,
                 expect_trainable=False)
  full = live.materialize(top_k=_SIZE * _SIZE)
  np.testing.assert_allclose(full(inputs).numpy(), live(inputs).numpy(), atol=1e-5)
  sparse = live.materialize(top_k=16)
  assert sparse.values.shape == (6, _SIZE * _SIZE, 16)
  error = np.abs(sparse(inputs).numpy() - live(inputs).numpy()).max()
  assert error < np.abs(live(inputs).numpy() - inputs).max()  # Keeps most of the fusion.
  # Materialized layers round-trip through config + weights.
  restored = layers.MaterializedFusion.from_config(sparse.get_config())
  restored.build(inputs.shape)
  restored.set_weights(sparse.get_weights())
  np.testing.assert_allclose(restored(inputs).numpy(), sparse(inputs).numpy(), atol=1e-6)


def test_affine_layer_equals_pure_math_with_its_weights(data):
  inputs, _ = data
  layer = layers.AffineFusion(3, _SIZE)
  fused = layer(inputs)
  expected = ops.fuse(inputs, ops.affine_matrices(layer.omega_base, layer.theta))
  np.testing.assert_allclose(fused.numpy(), expected.numpy(), atol=1e-6)
  # Translation theta + line base: view v's row i is a horizontal line through row y_i.
  matrices = layer.fusion_matrices().numpy().reshape(6, _SIZE, _SIZE, _SIZE, _SIZE)
  for row in range(_SIZE):
    assert np.all(np.argmax(matrices[0, row, 3].max(axis=-1)) == row)


def test_freeze_base_and_train_base_false(data):
  inputs, targets = data
  layer = layers.AffineFusion(3, _SIZE, train_base=False)
  layer.build(inputs.shape)
  assert [w.name for w in layer.trainable_weights] == ["theta"]
  layer = layers.AffineFusion(3, _SIZE)
  layer.build(inputs.shape)
  assert len(layer.trainable_weights) == 2
  layer.freeze_base()
  assert [w.name for w in layer.trainable_weights] == ["theta"]
  assert layers.AffineFusion.from_config(layer.get_config()).train_base is False


def test_affine_fusion_smooth_theta_field(data, tmp_path):
  inputs, targets = data
  run_layer_test(layers.AffineFusion, {"num_views": 3, "heatmap_size": _SIZE, "theta_grid": 3},
                 inputs, target_data=targets, tmp_path=tmp_path)
  layer = layers.AffineFusion(3, _SIZE, theta_grid=3, train_base=False)
  layer.build((None, 3, _SIZE, _SIZE, 1))
  # Only the g x g residual trains; at zero residual the layer is the per-pixel one.
  assert [v.name for v in layer.trainable_variables] == ["theta_residual"]
  assert tuple(layer.theta_residual.shape) == (6, 9, 6)
  plain = layers.AffineFusion(3, _SIZE, train_base=False)
  plain.build((None, 3, _SIZE, _SIZE, 1))
  np.testing.assert_allclose(layer(inputs), plain(inputs), atol=1e-6)
  # A constant residual shifts every pixel's theta by the same amount.
  shift = np.zeros((6, 9, 6), np.float32)
  shift[..., 2] = 0.25
  layer.theta_residual.assign(shift)
  np.testing.assert_allclose(layer.effective_theta().numpy()[..., 2],
                             layer.theta.numpy()[..., 2] + 0.25, atol=1e-6)
  np.testing.assert_allclose(layer.materialize()(inputs), layer(inputs), atol=1e-5)
  with pytest.raises(ValueError, match="theta_grid=1"):
    layers.AffineFusion(3, _SIZE, theta_grid=1)
