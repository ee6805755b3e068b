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
from mf_tf.geometry.rigs import ring_rig
from mf_tf.serving import export

from readout_oracle import gaussian_blobs
from readout_oracle import np_fuse
from readout_oracle import np_read_out

VIEWS, SIZE, JOINTS = 2, 16, 4
TEMPERATURE = 0.65
assert TEMPERATURE != ops.DEFAULT_TEMPERATURE


def _matrices():
  pairs = VIEWS * (VIEWS - 1)
  rng = np.random.default_rng(0)
  return rng.uniform(0.0, 0.02, (pairs, SIZE * SIZE, SIZE * SIZE)).astype(np.float32)


def _heatmaps(batch=2, seed=1):
  return gaussian_blobs(batch, VIEWS, SIZE, JOINTS, seed)


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
