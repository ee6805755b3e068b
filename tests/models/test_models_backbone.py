"""Backbone builders, local weights loading, and the multi-view model."""

import keras
import numpy as np
import pytest

from mf_tf.fusion import layers
from mf_tf.models import backbone as backbone_lib
from mf_tf.models import multiview


def test_backbone_shapes_quarter_resolution():
  model = backbone_lib.build_backbone("mobilenetv2_035", 64, 5)
  assert model.output_shape == (None, 16, 16, 5)
  heatmaps = model(np.zeros((2, 64, 64, 3), np.float32))
  assert heatmaps.shape == (2, 16, 16, 5)


def test_resnet50_head_matches_paper_shapes():
  model = backbone_lib.build_backbone("resnet50", 64, 17)
  assert model.output_shape == (None, 16, 16, 17)
  assert [model.get_layer(f"deconv{i}").filters for i in range(3)] == [256, 256, 256]
  assert model.get_layer("deconv0").kernel_size == (4, 4)


def test_bad_arguments_are_rejected():
  with pytest.raises(ValueError, match="unknown backbone"):
    backbone_lib.build_backbone("vgg", 64, 4)
  with pytest.raises(ValueError, match="multiple of 32"):
    backbone_lib.build_backbone("mobilenetv2_035", 50, 4)


def test_weights_round_trip_whole_and_trunk(tmp_path):
  source = backbone_lib.build_backbone("mobilenetv2_035", 64, 4)
  x = np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 3)).astype(np.float32)
  path = str(tmp_path / "backbone.weights.h5")
  source.save_weights(path)
  target = backbone_lib.build_backbone("mobilenetv2_035", 64, 4, weights=path)
  np.testing.assert_allclose(target(x), source(x), atol=1e-6)
  # A headless trunk file (as ImageNet weights ship) loads into the trunk only.
  trunk_path = str(tmp_path / "trunk.weights.h5")
  source.get_layer("trunk").save_weights(trunk_path)
  other = backbone_lib.build_backbone("mobilenetv2_035", 64, 4)
  assert backbone_lib.load_backbone_weights(other, trunk_path) == "trunk"
  for a, b in zip(other.get_layer("trunk").weights, source.get_layer("trunk").weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_missing_and_mismatched_weights_files(tmp_path):
  model = backbone_lib.build_backbone("mobilenetv2_035", 64, 4)
  with pytest.raises(FileNotFoundError, match="does not exist"):
    backbone_lib.load_backbone_weights(model, str(tmp_path / "nope.weights.h5"))
  small = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
  path = str(tmp_path / "small.weights.h5")
  small.save_weights(path)
  with pytest.raises(ValueError, match="does not match"):
    backbone_lib.load_backbone_weights(model, path)


def test_multiview_model_shared_backbone_and_safe_load(tmp_path):
  backbone = backbone_lib.build_backbone("mobilenetv2_035", 64, 4)
  fusion = layers.AffineFusion(3, 16)
  model = multiview.build_multiview_model(backbone, fusion, 3)
  images = np.random.default_rng(1).uniform(0, 255, (2, 3, 64, 64, 3)).astype(np.float32)
  out = model(images)
  assert out["heatmaps"].shape == (2, 3, 16, 16, 4) and out["fused"].shape == (2, 3, 16, 16, 4)
  # Shared weights: each view's heatmaps equal the backbone on that view alone.
  np.testing.assert_allclose(out["heatmaps"][:, 1], backbone(images[:, 1]), atol=1e-5)
  np.testing.assert_allclose(out["fused"], fusion(out["heatmaps"]), atol=1e-5)
  path = str(tmp_path / "model.keras")
  model.save(path)
  loaded = keras.saving.load_model(path, safe_mode=True)
  np.testing.assert_allclose(loaded(images)["fused"], out["fused"], atol=1e-5)


def test_fusion_model_on_heatmaps():
  model = multiview.build_fusion_model(layers.NoFusion(), 2, 16, 3)
  x = np.random.default_rng(2).random((1, 2, 16, 16, 3)).astype(np.float32)
  out = model(x)
  np.testing.assert_allclose(out["fused"], x)
