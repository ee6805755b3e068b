"""Bad inputs and parameters raise one clear error at construction, build and model input."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mf_tf.fusion import layers

_LAYERS = [layers.AffineFusion, layers.NaiveFusion, layers.MaterializedFusion]


@pytest.mark.parametrize("layer_cls", _LAYERS)
def test_bad_constructor_arguments(layer_cls):
  with pytest.raises(ValueError, match="at least 2 views, got num_views=1"):
    layer_cls(1, 8)
  with pytest.raises(ValueError, match="heatmap_size must be at least 2x2"):
    layer_cls(2, 1)
  with pytest.raises(ValueError, match="temperature must be positive"):
    layer_cls(2, 8, temperature=0.0)


@pytest.mark.parametrize("layer_cls", _LAYERS + [layers.NoFusion])
def test_wrong_views_or_size_at_build_and_model_input(layer_cls):
  layer = layer_cls(3, 8)
  with pytest.raises(ValueError, match="heatmaps have 2 views .* expected num_views=3"):
    layer.build((None, 2, 8, 8, 4))
  with pytest.raises(ValueError, match="heatmaps are 16x16 .* expected heatmap_size 8x8"):
    layer_cls(3, 8)(keras.Input(shape=(3, 16, 16, 4)))
  with pytest.raises(ValueError, match="heatmaps have 4 views"):
    layer_cls(3, 8)(keras.Input(shape=(4, 8, 8, 4)))
  with pytest.raises(ValueError, match="must be \\[batch, 3, 8, 8, joints\\]"):
    layer_cls(3, 8)(np.zeros((3, 8, 8, 4), np.float32))
  with pytest.raises(ValueError, match="heatmaps have 2 views"):
    layer_cls(3, 8)(np.zeros((1, 2, 8, 8, 4), np.float32))


@pytest.mark.parametrize("layer_cls", _LAYERS + [layers.NoFusion])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_heatmaps(layer_cls, bad):
  heatmaps = np.zeros((1, 3, 8, 8, 2), np.float32)
  heatmaps[0, 2, 4, 4, 1] = bad
  layer = layer_cls(3, 8)
  with pytest.raises(tf.errors.InvalidArgumentError, match="heatmaps hold NaN or Inf"):
    layer(heatmaps)
  model = keras.Sequential([keras.Input(shape=(3, 8, 8, 2)), layer_cls(3, 8)])
  model.compile(jit_compile=False)
  with pytest.raises(tf.errors.InvalidArgumentError, match="heatmaps hold NaN or Inf"):
    model.predict(heatmaps, verbose=0)


def test_non_finite_or_misshapen_parameters():
  layer = layers.AffineFusion(2, 8)
  theta = np.tile([1.0, 0, 0, 0, 1, 0], (2, 64, 1))
  theta[1, 3, 2] = np.nan
  with pytest.raises(ValueError, match="theta holds NaN or Inf"):
    layer.assign_parameters(theta=theta)
  with pytest.raises(ValueError, match="omega_base holds NaN or Inf"):
    layer.assign_parameters(omega_base=np.full((8, 8), np.inf))
  with pytest.raises(ValueError, match=r"theta has shape \(1, 64, 6\), expected \(2, 64, 6\)"):
    layer.assign_parameters(theta=theta[:1])
  # A non-finite value written straight into the variable is caught at call time.
  layer.theta.assign(theta.astype(np.float32))
  with pytest.raises(tf.errors.InvalidArgumentError, match="'theta' holds NaN or Inf"):
    layer(np.zeros((1, 2, 8, 8, 1), np.float32))
  matrices = np.zeros((2, 64, 64), np.float32)
  matrices[0, 0, 0] = np.nan
  with pytest.raises(ValueError, match="matrices holds NaN or Inf"):
    layers.MaterializedFusion(2, 8, matrices=matrices)
  with pytest.raises(ValueError, match="indices must lie in"):
    layers.MaterializedFusion(2, 8, top_k=2, values=np.zeros((2, 64, 2)),
                              indices=np.full((2, 64, 2), 64))
  with pytest.raises(ValueError, match="values/indices need top_k"):
    layers.MaterializedFusion(2, 8, values=np.zeros((2, 64, 2)))
  naive = layers.NaiveFusion(2, 8)
  naive.build((None, 2, 8, 8, 1))
  naive.matrices.assign(matrices)
  with pytest.raises(tf.errors.InvalidArgumentError, match="'matrices' holds NaN or Inf"):
    naive(np.zeros((1, 2, 8, 8, 1), np.float32))
