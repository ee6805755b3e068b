"""The one constructor of fusion layers: a start's name, a rig and what the start reads.

A start is where a fusion layer's parameters come from before it is finetuned or applied:

  metafuse / affine        AffineFusion: omega_base = init.omega_base (frozen), every pair's
                           theta = init.theta ([HW, 6] shared, or [P, HW, 6] as is) — MetaFuse
                           from meta-training, AffineFuse from plain pretraining (paper Table 1);
  calibrated               MetaFuse^0: the rig's epipolar geometry (`calibrated.calibrated_fusion`);
  self_calibrated          the same for a rig without usable calibration: every pair's fundamental
                           matrix estimated from the K labelled joints (`labels`);
  metafuse_calibrated      the calibrated theta plus the meta-learned residual init.theta (both
                           rigs calibrated, a departure from the paper);
  metafuse_self_calibrated the self-calibrated theta plus the meta-learned residual;
  naive                    NaiveFusion: free matrices from `init` ([P0, HW, HW]; taken pair by pair
                           when P0 = P, else every pair starts from their mean), zeros without.

Recipes (`mf_tf.train.recipes`) name their candidate starts from `STARTS`; the modes, the demo,
the benchmark, export and evaluation all build their layers here. A new fusion method is a new
start: a branch of `make_fusion_layer` (and, when it reads a pretrained file, its entry in
`mf_tf.checkpoints.default_init_path`).
"""

from __future__ import annotations

import keras
import numpy as np

from mf_tf.fusion import calibrated as calibrated_lib
from mf_tf.fusion import layers as fusion_layers
from mf_tf.fusion import ops
from mf_tf.geometry.rig import Rig

STARTS = ("metafuse", "affine", "naive", "calibrated", "metafuse_calibrated",
          "self_calibrated", "metafuse_self_calibrated")
# Starts whose theta comes from the labelled joints of the K frames (`labels`).
LABEL_GEOMETRY_STARTS = ("self_calibrated", "metafuse_self_calibrated")
# Starts that read a pretrained init (`init`); "naive" reads one when given.
PRETRAINED_STARTS = ("metafuse", "affine", "metafuse_calibrated", "metafuse_self_calibrated")


def validate_rig(rig: Rig) -> None:
  """Raises ValueError unless the rig can be fused (at least 2 cameras)."""
  if rig.num_views < 2:
    raise ValueError(f"rig {rig.name!r} has {rig.num_views} camera; fusion needs at least 2")


def make_fusion_layer(start: str, rig: Rig, heatmap_size: int, *, init=None,
                      temperature: float = ops.DEFAULT_TEMPERATURE,
                      line_width_px: float = 1.0, line_value: float = 0.3,
                      theta_grid: int = 0, labels=None,
                      name: str = "fusion") -> keras.layers.Layer:
  """The built fusion layer of `start` (module docstring) for `rig`.

  Args:
    start: One of `STARTS`.
    rig: The rig (V >= 2).
    heatmap_size: H = W.
    init: `MetaParams`-like (omega_base, theta) for the pretrained starts; a matrices array (or
      None) for "naive".
    temperature: Read-out softmax temperature T.
    line_width_px, line_value: The calibrated line base's cross-section std (px) and peak.
    theta_grid: AffineFusion starts: 0 trains the per-pixel theta (the paper); g >= 2 trains a
      smooth g x g residual field on top of the initial theta (`AffineFusion`).
    labels: Label-geometry starts: [K, V, J, 2] labelled joints of the K frames, heatmap px.
    name: Layer name.
  """
  validate_rig(rig)
  if start not in STARTS:
    raise ValueError(f"unknown fusion start {start!r}; expected one of {STARTS}")
  size = int(heatmap_size)
  if start == "naive":
    return _naive_layer(rig.num_views, size, init, temperature, name)
  if start == "calibrated":
    return calibrated_lib.calibrated_fusion(rig, size, temperature, line_width_px, line_value,
                                            theta_grid=theta_grid, name=name)
  layer = fusion_layers.AffineFusion(rig.num_views, size, temperature, train_base=False,
                                     theta_grid=theta_grid, name=name)
  layer.build((None, rig.num_views, size, size, 1))
  label_theta = _label_theta(start, labels, rig, size) if start in LABEL_GEOMETRY_STARTS else None
  if start == "self_calibrated":
    layer.assign_parameters(calibrated_lib.calibrated_base(size, line_width_px, line_value),
                            label_theta)
    return layer
  if init is None:
    raise ValueError(f"start {start!r} needs the pretrained (omega_base, theta) init")
  omega, theta = (np.asarray(p, np.float32) for p in init)
  if theta.ndim == 2:
    theta = np.repeat(theta[None], layer.num_pairs, axis=0)
  if start == "metafuse_calibrated":
    theta = calibrated_lib.calibrated_theta(rig, size) + theta
  elif start == "metafuse_self_calibrated":
    theta = label_theta + theta
  layer.assign_parameters(omega, theta)
  return layer


def _naive_layer(num_views: int, size: int, init, temperature: float,
                 name: str) -> fusion_layers.NaiveFusion:
  """NaiveFusion with matrices from `init` (module docstring), zeros when None."""
  layer = fusion_layers.NaiveFusion(num_views, size, temperature, name=name)
  layer.build((None, num_views, size, size, 1))
  if init is not None:
    matrices = np.asarray(init, np.float32)
    pairs, pixels = layer.num_pairs, size * size
    if matrices.ndim != 3 or matrices.shape[1:] != (pixels, pixels):
      raise ValueError(f"naive init has shape {matrices.shape}, expected [P0, {pixels}, "
                       f"{pixels}]")
    if matrices.shape[0] != pairs:
      matrices = np.repeat(matrices.mean(axis=0, keepdims=True), pairs, axis=0)
    layer.matrices.assign(matrices)
  return layer


def _label_theta(start: str, labels, rig: Rig, size: int) -> np.ndarray:
  """Every pair's epipolar theta from the labelled joints (`calibrated.self_calibrated_theta`)."""
  if labels is None:
    raise ValueError(f"start {start!r} needs the labelled joints (labels=[K, V, J, 2])")
  labels = np.asarray(labels, np.float64)
  if labels.ndim != 4 or labels.shape[1] != rig.num_views or labels.shape[-1] != 2:
    raise ValueError(f"labels have shape {labels.shape}, expected [K, {rig.num_views}, J, 2] for "
                     f"rig {rig.name!r}")
  inside = np.all((labels >= -0.5) & (labels < size - 0.5), axis=-1)
  return calibrated_lib.self_calibrated_theta(labels, rig.num_views, size, valid=inside)
