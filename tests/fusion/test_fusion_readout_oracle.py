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
from mf_tf.geometry.rig import ordered_pairs

BATCH, VIEWS, SIZE, JOINTS = 2, 3, 16, 4
TEMPERATURE = 0.65
assert TEMPERATURE != ops.DEFAULT_TEMPERATURE


def _heatmaps(seed=0):
  """[B, V, H, W, J] float32 Gaussian blobs (amplitude 1-3) at interior sub-pixel spots, noise."""
  rng = np.random.default_rng(seed)
  grid = np.arange(SIZE, dtype=np.float64)
  centre = rng.uniform(2.0, SIZE - 3.0, (BATCH, VIEWS, 1, 1, JOINTS, 2))
  amplitude = rng.uniform(1.0, 3.0, (BATCH, VIEWS, 1, 1, JOINTS))
  d2 = ((grid[None, :, None] - centre[..., 0]) ** 2 + (grid[:, None, None] - centre[..., 1]) ** 2)
  blobs = amplitude * np.exp(-d2 / (2 * 1.5 ** 2))
  return (blobs + 0.05 * rng.random(blobs.shape)).astype(np.float32)


def np_softmax(heatmaps, temperature):
  """softmax(h / T) over the H * W pixels of every channel of [..., H, W, J]."""
  h = np.asarray(heatmaps, np.float64)
  shape = h.shape
  flat = h.reshape(shape[:-3] + (-1, shape[-1])) / temperature
  flat = np.exp(flat - flat.max(axis=-2, keepdims=True))
  return (flat / flat.sum(axis=-2, keepdims=True)).reshape(shape)


def np_decode(probabilities):
  """Argmax with log-parabola sub-pixel refinement: ([..., J, 2] (x, y), [..., J] peak)."""
  p = np.moveaxis(np.asarray(probabilities, np.float64), -1, -3)  # [..., J, H, W]
  lead, (height, width) = p.shape[:-2], p.shape[-2:]
  coords, scores = np.zeros(lead + (2,)), np.zeros(lead)
  for index in np.ndindex(*lead):
    channel = p[index]
    row, col = np.unravel_index(np.argmax(channel), channel.shape)
    peak = channel[row, col]

    def offset(low, high, interior, centre=peak):
      if not interior or centre <= 0:
        return 0.0
      log_c, log_l, log_h = (np.log(max(v, 1e-10)) for v in (centre, low, high))
      curvature = log_l + log_h - 2.0 * log_c
      if curvature >= -1e-6:  # No maximum to refine.
        return 0.0
      return float(np.clip(0.5 * (log_l - log_h) / curvature, -0.5, 0.5))

    dx = offset(channel[row, max(col - 1, 0)], channel[row, min(col + 1, width - 1)],
                0 < col < width - 1)
    dy = offset(channel[max(row - 1, 0), col], channel[min(row + 1, height - 1), col],
                0 < row < height - 1)
    coords[index] = (col + dx, row + dy)
    scores[index] = peak
  return coords, scores


def np_fuse(heatmaps, matrices):
  """Paper Eq. 1: fused_v = h_v + sum_{u != v} W_{u->v} h_u, pairs in `ordered_pairs` order."""
  h = np.asarray(heatmaps, np.float64)
  flat = h.reshape(h.shape[0], h.shape[1], SIZE * SIZE, h.shape[-1])
  fused = flat.copy()
  for pair, (source, target) in enumerate(ordered_pairs(h.shape[1])):
    fused[:, target] += np.einsum("ij,bjc->bic", matrices[pair], flat[:, source])
  return fused.reshape(h.shape)


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
