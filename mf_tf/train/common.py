"""Helpers shared by the modes: tf.distribute strategy, rig selection, finetuned checkpoints."""

from __future__ import annotations

import os

import tensorflow as tf

from mf_tf.geometry import calibration
from mf_tf.geometry import rigs as rigs_lib
from mf_tf.geometry import rig as rig_lib
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


# Calibrations compared with this relative and absolute tolerance (K px, R, t mm, dist): a rig
# file round trip is exact, so anything above it is another calibration.
RIG_TOLERANCE = 1e-5


def load_rig(name_or_path: str) -> Rig:
  """A built-in rig name or a canonical rig JSON file (its "name" field names the rig)."""
  if os.path.isfile(str(name_or_path)):
    return calibration.load_rig_file(name_or_path)
  return rigs_lib.get_rig(name_or_path)


def finetuned_rig_dir(root: str, rig: Rig) -> str:
  """Where --mode=finetune writes the checkpoint of `rig`: `<root>/<rig.name>`."""
  return os.path.join(root, rig.name)


def check_finetuned_rig(stored: Rig, target: Rig, checkpoint: str, target_source: str) -> None:
  """Raises RigMismatchError unless a checkpoint's stored rig has the target rig's cameras.

  Args:
    stored: The rig saved with the finetuned fusion (its rig.json).
    target: The rig the fusion is about to be used for.
    checkpoint: The checkpoint folder, named in the message.
    target_source: How the target was given (a built-in name or a rig file path).

  Raises:
    RigMismatchError: Different view count, camera names or calibration (K, R, t, dist, image
      size beyond `RIG_TOLERANCE`): the fusion was finetuned for another calibration.
  """
  try:
    rig_lib.check_same_rig(stored, target, check_geometry=True, tolerance=RIG_TOLERANCE)
  except rig_lib.RigMismatchError as error:
    raise rig_lib.RigMismatchError(
        f"finetuned fusion {checkpoint!r} was trained for rig {stored.name!r} "
        f"({os.path.join(checkpoint, 'rig.json')}), not for the target rig {target.name!r} "
        f"({target_source}): {error}; run --mode=finetune again with this rig, or give the "
        "rig that checkpoint was trained for") from None


def load_finetuned_for(checkpoint: str, target: Rig, target_source: str):
  """A finetuned fusion checkpoint, checked against the rig it is used for.

  Args:
    checkpoint: A folder written by --mode=finetune (`mf_tf.train.finetune.save_finetuned`).
    target: The rig the fusion will fuse.
    target_source: How the target was given, for the error message.

  Returns:
    (fusion layer, stored rig, meta), as `mf_tf.train.finetune.load_finetuned`.

  Raises:
    FileNotFoundError: An incomplete checkpoint.
    RigMismatchError: See `check_finetuned_rig`.
  """
  from mf_tf.train import finetune  # The finetuning stage owns its checkpoint format.

  layer, stored, meta = finetune.load_finetuned(checkpoint)
  check_finetuned_rig(stored, target, checkpoint, target_source)
  return layer, stored, meta


def target_sigma(config_sigma_at_64: float, heatmap_size: int) -> float:
  """Gaussian target std in heatmap px: the config value is at 64 px, scaled to the size."""
  if not config_sigma_at_64 > 0:
    raise ValueError(f"target sigma {config_sigma_at_64}, expected > 0")
  return float(config_sigma_at_64) * int(heatmap_size) / 64.0
