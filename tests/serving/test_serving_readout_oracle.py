"""Served scores and keypoints of a tiny ExportModule at a non-default temperature, against NumPy.

The fusion layer's temperature (0.65, not the default 0.2) is the read-out's: scores are the
peak of softmax(h / T) over each channel's H * W pixels and keypoints its argmax refined by the
log-parabola through the peak and its neighbours (clipped to half a pixel, none at the border),
computed here in NumPy from the heatmaps and the fusion matrices (paper Eq. 1).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mf_tf.fusion import ops
from mf_tf.fusion.layers import MaterializedFusion
from mf_tf.geometry.rig import ordered_pairs
from mf_tf.geometry.rigs import ring_rig
from mf_tf.serving import export

VIEWS, SIZE, JOINTS = 2, 16, 4
TEMPERATURE = 0.65
assert TEMPERATURE != ops.DEFAULT_TEMPERATURE


def _matrices():
  pairs = VIEWS * (VIEWS - 1)
  rng = np.random.default_rng(0)
  return rng.uniform(0.0, 0.02, (pairs, SIZE * SIZE, SIZE * SIZE)).astype(np.float32)


def _heatmaps(batch=2, seed=1):
  """[B, V, H, W, J] float32 Gaussian blobs (amplitude 1-3) at interior spots, plus noise."""
  rng = np.random.default_rng(seed)
  grid = np.arange(SIZE, dtype=np.float64)
  centre = rng.uniform(2.0, SIZE - 3.0, (batch, VIEWS, 1, 1, JOINTS, 2))
  amplitude = rng.uniform(1.0, 3.0, (batch, VIEWS, 1, 1, JOINTS))
  d2 = ((grid[None, :, None] - centre[..., 0]) ** 2 + (grid[:, None, None] - centre[..., 1]) ** 2)
  blobs = amplitude * np.exp(-d2 / (2 * 1.5 ** 2))
  return (blobs + 0.05 * rng.random(blobs.shape)).astype(np.float32)


def np_fuse(heatmaps, matrices):
  """Paper Eq. 1: fused_v = h_v + sum_{u != v} W_{u->v} h_u, pairs in `ordered_pairs` order."""
  h = np.asarray(heatmaps, np.float64)
  flat = h.reshape(h.shape[0], h.shape[1], SIZE * SIZE, h.shape[-1])
  fused = flat.copy()
  for pair, (source, target) in enumerate(ordered_pairs(h.shape[1])):
    fused[:, target] += np.einsum("ij,bjc->bic", matrices[pair], flat[:, source])
  return fused.reshape(h.shape)


def np_read_out(heatmaps, temperature):
  """([..., J, 2] keypoints (x, y), [..., J] scores) of softmax(h / T), see the module docstring."""
  h = np.moveaxis(np.asarray(heatmaps, np.float64), -1, -3)  # [..., J, H, W]
  lead, (height, width) = h.shape[:-2], h.shape[-2:]
  logits = h.reshape(lead + (-1,)) / temperature
  p = np.exp(logits - logits.max(axis=-1, keepdims=True))
  p = (p / p.sum(axis=-1, keepdims=True)).reshape(h.shape)
  coords, scores = np.zeros(lead + (2,)), np.zeros(lead)
  for index in np.ndindex(*lead):
    channel = p[index]
    row, col = np.unravel_index(np.argmax(channel), channel.shape)
    peak = channel[row, col]

    def offset(low, high, interior, centre=peak):
      if not interior:
        return 0.0
      log_c, log_l, log_h = (np.log(max(v, 1e-10)) for v in (centre, low, high))
      curvature = log_l + log_h - 2.0 * log_c
      if curvature >= -1e-6:
        return 0.0
      return float(np.clip(0.5 * (log_l - log_h) / curvature, -0.5, 0.5))

    dx = offset(channel[row, max(col - 1, 0)], channel[row, min(col + 1, width - 1)],
                0 < col < width - 1)
    dy = offset(channel[max(row - 1, 0), col], channel[min(row + 1, height - 1), col],
                0 < row < height - 1)
    coords[index] = (col + dx, row + dy)
    scores[index] = peak
  return coords, scores


@pytest.fixture(scope="module")
def module():
  inputs = keras.Input((SIZE, SIZE, 3))
  backbone = keras.Model(inputs, keras.layers.Conv2D(JOINTS, 1)(inputs))
  fusion = MaterializedFusion(VIEWS, SIZE, temperature=TEMPERATURE, matrices=_matrices())
  rig = ring_rig(VIEWS, seed=3, image_size=(640, 480))
  return export.ExportModule(backbone, fusion, rig, triangulate=False, crop_heatmap_size=8)


def _check_outputs(outputs, heatmaps):
  fused = np_fuse(heatmaps, _matrices())
  np.testing.assert_allclose(outputs["fused_heatmaps"].numpy(), fused, rtol=1e-5, atol=1e-5)
  for prefix, maps in (("initial_", heatmaps), ("", fused)):
    coords, scores = np_read_out(maps, TEMPERATURE)
    np.testing.assert_allclose(outputs[f"{prefix}scores"].numpy(), scores, rtol=1e-4,
                               err_msg=prefix)
    np.testing.assert_allclose(outputs[f"{prefix}keypoints_heatmap"].numpy(), coords, atol=1e-3,
                               err_msg=prefix)
    # At the default temperature the scores would be far higher.
    assert np.abs(np_read_out(maps, ops.DEFAULT_TEMPERATURE)[1] - scores).min() > 0.05


def test_served_scores_use_the_fusion_temperature(module):
  assert module.temperature == TEMPERATURE
  heatmaps = _heatmaps()
  _check_outputs(module.serve_heatmaps(tf.constant(heatmaps)), heatmaps)


@pytest.mark.large  # Saving and loading the SavedModel: a few seconds.
def test_saved_model_scores_use_the_fusion_temperature(module, tmp_path):
  tf.saved_model.save(module, str(tmp_path), signatures=module.signatures())
  loaded = tf.saved_model.load(str(tmp_path))
  heatmaps = _heatmaps(batch=1, seed=2)
  _check_outputs(loaded.signatures["heatmaps"](heatmaps=tf.constant(heatmaps)), heatmaps)
