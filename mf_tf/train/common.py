"""Helpers shared by the training modes: tf.distribute strategy and rig selection from names."""

from __future__ import annotations

import os

import tensorflow as tf

from mf_tf.geometry import calibration
from mf_tf.geometry import rigs as rigs_lib
from mf_tf.geometry.rig import Rig

STRATEGIES = ("none", "mirrored", "multi_worker")


def get_strategy(name: str) -> tf.distribute.Strategy:
  """The tf.distribute strategy named by `config.distribute`.

  "none": the default single-device strategy; "mirrored": `MirroredStrategy` over this host's
  devices (GPUs, else logical CPUs); "multi_worker": `MultiWorkerMirroredStrategy`, configured by
  the TF_CONFIG environment variable of each worker.
  """
  if name == "none":
    return tf.distribute.get_strategy()
  if name == "mirrored":
    gpus = tf.config.list_logical_devices("GPU")
    devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices)
  if name == "multi_worker":
    return tf.distribute.MultiWorkerMirroredStrategy()
  raise ValueError(f"config.distribute={name!r}, expected one of {STRATEGIES}")


def load_rig(name_or_path: str) -> Rig:
  """A built-in rig name or a canonical rig JSON file."""
  if os.path.isfile(str(name_or_path)):
    return calibration.load_rig_file(name_or_path)
  return rigs_lib.get_rig(name_or_path)


def target_sigma(config_sigma_at_64: float, heatmap_size: int) -> float:
  """Gaussian target std in heatmap px: the config value is at 64 px, scaled to the size."""
  if not config_sigma_at_64 > 0:
    raise ValueError(f"target sigma {config_sigma_at_64}, expected > 0")
  return float(config_sigma_at_64) * int(heatmap_size) / 64.0
