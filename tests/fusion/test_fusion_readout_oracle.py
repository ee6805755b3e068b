"""Temperature softmax, loss and read-out at a non-default temperature against NumPy.

The oracle is written here from the definitions (paper Sec. 5.1 and the codec's docstring):
softmax_T(h) = exp(h / T) / sum_HW exp(h / T) per channel; the read-out takes the integer argmax
of softmax_T(h), refines each axis by the vertex of the parabola through the logarithms of the
peak and its two neighbours (clipped to half a pixel, none at the border), and scores the joint
with the softmax peak. T = 0.65 is far from the default 0.2, so code that drops the temperature
gives other scores, losses and probabilities.
"""

import numpy as np
import pytest
import tensorflow as tf

from mf_tf.data.codec import HeatmapCodec
from mf_tf.evaluation import evaluate
from mf_tf.fusion import ops
from mf_tf.fusion import readout
from mf_tf.fusion.layers import MaterializedFusion

from readout_oracle import gaussian_blobs
from readout_oracle import np_decode
from readout_oracle import np_fuse
from readout_oracle import np_softmax

BATCH, VIEWS, SIZE, JOINTS = 2, 3, 16, 4
TEMPERATURE = 0.65
assert TEMPERATURE != ops.DEFAULT_TEMPERATURE


def _heatmaps(seed=0):
  return gaussian_blobs(BATCH, VIEWS, SIZE, JOINTS, seed)


def test_softmax_temperature_matches_numpy():
  heatmaps = _heatmaps()
  got = ops.softmax_temperature(tf.constant(heatmaps), TEMPERATURE).numpy()
  np.testing.assert_allclose(got, np_softmax(heatmaps, TEMPERATURE), rtol=1e-5, atol=1e-8)
  # The temperature matters for these maps: at the default the peaks are far sharper.
  assert np.abs(np_softmax(heatmaps, ops.DEFAULT_TEMPERATURE) - got).max() > 0.1


def test_peak_normalized_softmax_matches_numpy():
  heatmaps = _heatmaps(1)
  peak = heatmaps.max(axis=(-3, -2), keepdims=True).astype(np.float64)
  expected = np.exp((heatmaps - peak) / TEMPERATURE)
  got = ops.peak_normalized_softmax(tf.constant(heatmaps), TEMPERATURE).numpy()
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("kind", ["mse", "ce"])
def test_fusion_loss_matches_numpy(kind):
  fused, target = _heatmaps(2).astype(np.float64), _heatmaps(3).astype(np.float64)
  weights = np.random.default_rng(4).integers(0, 2, (BATCH, VIEWS, JOINTS)).astype(np.float64)
  p = np_softmax(fused, TEMPERATURE)
  mass = target.sum(axis=(-3, -2), keepdims=True)
  if kind == "mse":
    per_channel = ((p * mass - target) ** 2).sum(axis=(-3, -2))
  else:
    q = target / mass
    per_channel = (q * (np.log(q) - np.log(p))).sum(axis=(-3, -2))  # KL(q || p)
  expected = np.mean(per_channel * weights)
  got = ops.fusion_loss(tf.constant(fused), tf.constant(target), tf.constant(weights),
                        TEMPERATURE, kind)
  assert float(got) == pytest.approx(expected, rel=1e-9)


def test_decode_fused_matches_numpy_read_out():
  fused = _heatmaps(5)
  coords, scores = readout.decode_fused(tf.constant(fused), TEMPERATURE, HeatmapCodec(SIZE))
  expected_coords, expected_scores = np_decode(np_softmax(fused, TEMPERATURE))
  np.testing.assert_allclose(scores.numpy(), expected_scores, rtol=1e-5)
  np.testing.assert_allclose(coords.numpy(), expected_coords, atol=1e-4)
  assert np.abs(np_decode(np_softmax(fused, ops.DEFAULT_TEMPERATURE))[1]
                - expected_scores).max() > 0.1


def test_evaluation_decode_joints_matches_numpy_read_out():
  fused = _heatmaps(6)
  coords, scores = evaluate.decode_joints(fused, TEMPERATURE)
  expected_coords, expected_scores = np_decode(np_softmax(fused, TEMPERATURE))
  np.testing.assert_allclose(scores, expected_scores, rtol=1e-5)
  np.testing.assert_allclose(coords, expected_coords, atol=1e-4)


def test_fusion_layer_softmax_uses_its_temperature():
  heatmaps = _heatmaps(7)
  pairs = VIEWS * (VIEWS - 1)
  matrices = np.random.default_rng(8).uniform(0.0, 0.02, (pairs, SIZE * SIZE, SIZE * SIZE))
  layer = MaterializedFusion(VIEWS, SIZE, temperature=TEMPERATURE,
                             matrices=matrices.astype(np.float32))
  fused = np_fuse(heatmaps, matrices.astype(np.float32))
  np.testing.assert_allclose(layer(tf.constant(heatmaps)).numpy(), fused, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(layer(tf.constant(heatmaps), softmax=True).numpy(),
                             np_softmax(fused, TEMPERATURE), rtol=1e-4, atol=1e-8)
