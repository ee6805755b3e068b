"""The read-out of fused heatmaps: 2D joints and their confidences.

One definition for evaluation (`mf_tf.evaluation.evaluate.decode_joints`), adaptation's
selection and the exported model (`mf_tf.serving.export`), so that served scores, and the
triangulation weights made from them, are the evaluated ones:

  coords, scores = codec.decode(softmax_T(fused))          `decode_fused`
  coords, peaks = codec.decode(crop heatmaps)             `decode_crops`

Person-crop heatmaps (the detector's, fused by `mf_tf.fusion.epipolar_fusion` or not) are read
without the softmax: they are the detector's heatmaps, not fusion logits, and the joints'
visibility comes from the detector.

The temperature softmax per channel (paper Sec. 5.1) does not move the argmax; it sets the
sub-pixel refinement and turns the peak into a probability: a confident joint scores near 1, a
flat channel near 1 / (H W).
"""

from __future__ import annotations

import tensorflow as tf

from mf_tf.data.codec import HeatmapCodec
from mf_tf.fusion import ops


def decode_fused(fused: tf.Tensor, temperature: float, codec: HeatmapCodec):
  """2D joints and confidences of fused (or initial) heatmaps.

  Args:
    fused: [..., H, W, J] heatmaps before the softmax.
    temperature: Softmax temperature T (`FusionSettings.temperature`, paper 0.2).
    codec: The heatmap codec of H x W heatmaps.

  Returns:
    coords: [..., J, 2] heatmap pixels (x = column, y = row); scores: [..., J] softmax peak
    probabilities.
  """
  return codec.decode(ops.softmax_temperature(fused, temperature))


def decode_crops(heatmaps: tf.Tensor, codec: HeatmapCodec):
  """2D joints of [..., C, C, J] person-crop heatmaps, crop px, and their peak values (no
  softmax; module docstring): `--mode=video` and the served `fuse_crops` signature."""
  return codec.decode(heatmaps)
