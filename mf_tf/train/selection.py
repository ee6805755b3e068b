"""The one model selection of adaptation: validation JDR by the evaluation's read-out and metric.

Every keep-the-better choice of finetuning goes through here: the start or an epoch
(`finetune.finetune_fusion`), the scale and start of the solved NaiveFuse
(`finetune.solve_naive_fusion`) and the candidate starts of a recipe (`adaptation.adapt`). A
candidate's validation JDR is `mf_tf.evaluation.metrics.jdr` of the joints decoded by
`mf_tf.fusion.readout.decode_fused`, pooled over every labelled joint of the validation frames;
candidates compare by `score` and ties keep the earlier one (`best_index`).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from mf_tf.data.codec import HeatmapCodec
from mf_tf.evaluation import metrics
from mf_tf.fusion import readout

SELECTIONS = ("val_jdr", "val_loss")


def validation_jdr(fused, joints2d, threshold_px, temperature: float) -> float:
  """Percentage of labelled joints whose read-out lies within `threshold_px` of the truth.

  Joints outside the heatmap or not finite are not counted; the rate pools every counted
  (frame, view, joint), i.e. `metrics.jdr`'s per-joint rates weighted by their counts.

  Args:
    fused: [N, V, H, W, J] fused heatmaps (pre-softmax).
    joints2d: [N, V, J, 2] true joints, heatmap px.
    threshold_px: Detection radius, heatmap px (half the head size): a scalar or [N, V] (per
      frame and view; nan drops the view).
    temperature: Read-out softmax temperature.

  Returns:
    JDR in percent (nan when no joint is labelled).
  """
  fused = tf.convert_to_tensor(fused, tf.float32)
  size = int(fused.shape[2])
  coords, _ = readout.decode_fused(fused, temperature, HeatmapCodec(size))
  joints2d = np.asarray(joints2d, np.float64)
  with np.errstate(invalid="ignore"):
    inside = np.all((joints2d >= -0.5) & (joints2d < size - 0.5), axis=-1)
  result = metrics.jdr(coords.numpy(), joints2d, 2.0 * np.asarray(threshold_px, np.float64),
                       valid=inside)
  count = result["count"]
  if count.sum() == 0:
    return float("nan")
  return float(np.nansum(result["per_joint"] * count) / count.sum())


def score(selection: str, jdr: float, loss: float) -> tuple:
  """The comparable score of a candidate: (JDR, -loss) for "val_jdr", (-loss,) for "val_loss"."""
  if selection not in SELECTIONS:
    raise ValueError(f"selection={selection!r}, expected one of {SELECTIONS}")
  return (jdr, -loss) if selection == "val_jdr" else (-loss,)


def best_index(scores) -> int:
  """Index of the best of `scores` (tuples or numbers); ties keep the earlier candidate."""
  scores = list(scores)
  if not scores:
    raise ValueError("no candidate to select from")
  kept = 0
  for index, value in enumerate(scores):
    if value > scores[kept]:
      kept = index
  return kept
