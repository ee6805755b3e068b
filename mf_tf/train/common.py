"""Shared by the training loops: the tf.distribute strategy by name and the target sigma."""

from __future__ import annotations

import tensorflow as tf

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


def target_sigma(config_sigma_at_64: float, heatmap_size: int) -> float:
  """Gaussian target std in heatmap px: the config value is at 64 px, scaled to the size."""
  if not config_sigma_at_64 > 0:
    raise ValueError(f"target sigma {config_sigma_at_64}, expected > 0")
  return float(config_sigma_at_64) * int(heatmap_size) / 64.0
