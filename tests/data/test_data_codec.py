"""Tests of the heatmap codec."""

import numpy as np
import pytest
import tensorflow as tf

from mf_tf.data.codec import HeatmapCodec
from mf_tf.fusion import ops


def test_encode_peak_and_shape():
  codec = HeatmapCodec(16, sigma=2.0)
  joints2d = np.array([[[3.0, 5.0], [10.0, 2.0], [40.0, 40.0]]], np.float32)
  heatmaps, weights = codec.encode(joints2d, visibility=np.array([[1, 0, 1]]))
  heatmaps = heatmaps.numpy()
  assert heatmaps.shape == (1, 16, 16, 3)
  assert heatmaps[0, 5, 3, 0] == pytest.approx(1.0)  # row y=5, column x=3.
  assert heatmaps[0, 2, 10, 1] == pytest.approx(1.0)  # Invisible joints keep the Gaussian.
  assert heatmaps[0, 5, 4, 0] == pytest.approx(np.exp(-1 / 8), rel=1e-5)
  assert float(np.max(heatmaps[0, ..., 2])) < 1e-6
  np.testing.assert_array_equal(weights, [[1.0, 0.0, 0.0]])


def test_round_trip_sub_pixel():
  codec = HeatmapCodec(32, sigma=2.0)
  rng = np.random.default_rng(0)
  joints2d = rng.uniform(1.0, 30.0, size=(3, 4, 6, 2)).astype(np.float32)
  heatmaps, _ = codec.encode(joints2d)
  coords, scores = codec.decode(heatmaps)
  assert coords.shape == (3, 4, 6, 2) and scores.shape == (3, 4, 6)
  assert np.max(np.abs(coords.numpy() - joints2d)) < 0.3
  assert np.max(np.abs(coords.numpy() - joints2d)) < 1e-2  # Log-parabola is exact on Gaussians.
  assert np.all(scores.numpy() > 0.88)


def test_round_trip_with_amplitude_and_noise_within_tolerance():
  codec = HeatmapCodec(32, sigma=2.0)
  rng = np.random.default_rng(1)
  joints2d = rng.uniform(2.0, 29.0, size=(8, 5, 2)).astype(np.float32)
  heatmaps, _ = codec.encode(joints2d)
  heatmaps = 0.7 * heatmaps + rng.normal(0, 0.005, heatmaps.shape).astype(np.float32)
  coords, _ = codec.decode(heatmaps)
  assert np.max(np.abs(coords.numpy() - joints2d)) < 0.3


def test_decode_under_xla():
  codec = HeatmapCodec(16, sigma=1.5)
  joints2d = np.array([[[0.0, 0.0], [15.0, 7.25], [7.6, 9.3]]], np.float32)
  heatmaps, _ = codec.encode(joints2d)
  coords, _ = tf.function(codec.decode, jit_compile=True)(heatmaps)
  np.testing.assert_allclose(coords.numpy(), joints2d, atol=0.3)


def test_invalid_arguments():
  with pytest.raises(ValueError, match="sigma"):
    HeatmapCodec(16, sigma=0.0)
  with pytest.raises(ValueError, match="heatmap_size"):
    HeatmapCodec(1)


def test_encode_non_finite_joints_give_zero_target_and_weight():
  """A missing joint (NaN) must not put NaN into the target: 0 x NaN in the loss is NaN."""
  codec = HeatmapCodec(16, sigma=2.0)
  joints2d = np.array([[[[3.0, 5.0], [np.nan, np.nan], [7.0, np.nan], [np.inf, 4.0],
                         [10.0, 11.0]]]], np.float32)  # [B=1, V=1, J=5, 2]
  heatmaps, weights = codec.encode(joints2d, visibility=np.ones((1, 1, 5)))
  heatmaps, weights = heatmaps.numpy(), weights.numpy()
  assert np.all(np.isfinite(heatmaps))
  np.testing.assert_array_equal(heatmaps[..., 1:4], 0.0)
  np.testing.assert_array_equal(weights, [[[1.0, 0.0, 0.0, 0.0, 1.0]]])
  # Finite joints are unchanged by their non-finite neighbours.
  alone, _ = codec.encode(joints2d[..., [0, 4], :])
  np.testing.assert_array_equal(heatmaps[..., [0, 4]], alone.numpy())
  fused = np.random.default_rng(0).normal(size=heatmaps.shape).astype(np.float32)
  loss = float(ops.fusion_loss(fused, heatmaps, weights))
  expected = float(ops.fusion_loss(fused[..., [0, 4]], alone, np.ones((1, 1, 2)))) * 2 / 5
  assert np.isfinite(loss) and loss == pytest.approx(expected, rel=1e-5)
