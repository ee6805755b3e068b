"""The fusion settings every stage shares: read-out and loss temperatures, loss, epipolar line.

One `FusionSettings` is built from `config.fusion` and the recipe's loss by the modes
(`mf_tf.modes.common.fusion_settings`) and passed down; the libraries take its fields as arguments.
It has no defaults of its own: the values and their reasons are in configs/default.py.
"""

from __future__ import annotations

import dataclasses
import math

from mf_tf.fusion import ops


@dataclasses.dataclass(frozen=True)
class FusionSettings:
  """Settings of the fusion read-out, its training loss and the calibrated epipolar line.

  Attributes:
    temperature: Softmax temperature of the read-out: the 2D estimate and its confidence are
      decoded from softmax_T(fused) by evaluation and by the exported model alike.
    loss_temperature: Softmax temperature of the training loss (`ops.fusion_loss`).
    loss: Training loss kind, one of `ops.LOSSES`.
    line_width_px: Calibrated init: cross-section sigma of the epipolar line, heatmap px.
    line_value: Calibrated init: peak of the line (fused = h_v + line_value * line sums).
  """
  temperature: float
  loss_temperature: float
  loss: str
  line_width_px: float
  line_value: float

  def __post_init__(self):
    for name in ("temperature", "loss_temperature", "line_width_px"):
      value = getattr(self, name)
      if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"fusion.{name}={value!r}, expected a finite number > 0")
    if not (isinstance(self.line_value, (int, float)) and math.isfinite(self.line_value)
            and self.line_value >= 0):
      raise ValueError(f"fusion.line_value={self.line_value!r}, expected a finite number >= 0")
    if self.loss not in ops.LOSSES:
      raise ValueError(f"fusion.loss={self.loss!r}, expected one of {ops.LOSSES}")
