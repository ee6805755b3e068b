"""Meta-training checkpoints, verified on resume (`mf_tf.train.metatrain`).

Checkpoints are <workdir>/checkpoints/ckpt-<step>; each has a sidecar `ckpt-<step>.run.json`
holding the `MamlSettings` and a fingerprint of the data (pool frame count and content hash, the
training pairs, the init). `open_checkpoints` restores the newest intact checkpoint after comparing
its sidecar with the current run (every difference listed in one `CheckpointError`), falls back
past an unreadable (e.g. truncated) one with a warning naming it, and with `restart=True` discards
them all. `save_checkpoint` writes the sidecar before the checkpoint, so a checkpoint never exists
without it.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import shutil

import numpy as np
import tensorflow as tf
from absl import logging
from google.protobuf import text_format

from mf_tf import files
from mf_tf.checkpoints import CheckpointError
from mf_tf.meta import maml
from mf_tf.meta import tasks as tasks_lib

CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_NAME = "ckpt"  # Checkpoint prefixes: <workdir>/checkpoints/ckpt-<step>.
RUN_INFO_SUFFIX = ".run.json"  # Sidecar of each checkpoint prefix: settings + data fingerprint.

# Arrays larger than this are hashed on a strided sample (dense pools are gigabytes).
_HASH_FULL_BYTES = 64 << 20
_HASH_STRIDE = 7


def _hash_arrays(*arrays) -> str:
  digest = hashlib.sha256()
  for array in arrays:
    if array is None:
      digest.update(b"none;")
      continue
    array = np.asarray(array)
    digest.update(f"{array.dtype.str}{array.shape};".encode())
    if array.nbytes > _HASH_FULL_BYTES:
      array = array.reshape(-1)[::_HASH_STRIDE]
    digest.update(np.ascontiguousarray(array).tobytes())
  return digest.hexdigest()[:16]


def data_fingerprint(pool: tasks_lib.FramePool, pairs, init: maml.MetaParams,
                     theta_by_pair=None) -> dict:
  """What a meta-training run trains on, to tell a checkpoint of other data on resume.

  Args:
    pool: The frame pool.
    pairs: [P, 2] training pairs.
    init: Initial meta-parameters.
    theta_by_pair: Calibrated variant's per-pair theta, or None.

  Returns:
    JSON-ready dict: pool frame count and shape, SHA-256 prefixes of the pool arrays, the pairs
    and the init (arrays over 64 MiB are hashed on every 7th value).
  """
  return {
      "pool_frames": pool.num_frames,
      "pool_views": pool.num_views,
      "pool_joints": pool.num_joints,
      "heatmap_size": int(pool.heatmap_size),
      "pool_sha256": _hash_arrays(pool.joints2d, pool.visibility, pool.heatmaps, pool.peaks,
                                  pool.amplitudes, pool.noise_seed,
                                  np.asarray([pool.detector_sigma, pool.detector_noise])),
      "pairs_sha256": _hash_arrays(np.asarray(pairs, np.int64)),
      "init": "calibrated" if theta_by_pair is not None else "shared",
      "init_sha256": _hash_arrays(init.omega_base, init.theta, theta_by_pair),
  }


def run_info(settings, fingerprint: dict) -> dict:
  """The sidecar's content (without the step): `MamlSettings` and `data_fingerprint`."""
  return {"settings": dataclasses.asdict(settings), "data": fingerprint}


def run_differences(stored: dict, current: dict, step: int) -> list[str]:
  """Each setting or data property that differs between two run infos, as "name: old -> new".

  num_steps differs only when the new value is below `step` (the checkpoint's step): the task
  batch of a step does not depend on num_steps, so a longer run continues honestly.
  """
  problems = []
  for section in ("settings", "data"):
    old, new = stored.get(section) or {}, current[section]
    for key in sorted(set(old) | set(new)):
      before, after = old.get(key, "(absent)"), new.get(key, "(absent)")
      if section == "settings" and key == "num_steps":
        if isinstance(after, int) and after < step:
          problems.append(f"num_steps: {before} -> {after} (below the checkpoint's step {step})")
        continue
      if isinstance(before, list):
        before = tuple(before)
      if isinstance(after, list):
        after = tuple(after)
      if before != after:
        problems.append(f"{key}: {before} -> {after}")
  return problems


def _checkpoint_files(prefix: str) -> list[str]:
  return sorted(glob.glob(glob.escape(prefix) + ".data-*")) + [prefix + ".index"]


def _restore_intact(checkpoint: tf.train.Checkpoint, manager: tf.train.CheckpointManager,
                    info: dict) -> str | None:
  """Restores the newest readable checkpoint of `manager` after checking its run info.

  Returns:
    The restored checkpoint prefix, or None when there is no checkpoint.

  Raises:
    CheckpointError: no checkpoint is readable, or the restored one was written with other
      settings or data (every difference listed).
  """
  prefixes = list(manager.checkpoints)
  if not prefixes:  # No (readable) state file: the checkpoints on disk, by step.
    found = glob.glob(os.path.join(glob.escape(manager.directory), f"{CHECKPOINT_NAME}-*.index"))
    prefixes = sorted((path[:-len(".index")] for path in found),
                      key=lambda prefix: int(prefix.rsplit("-", 1)[1]) if
                      prefix.rsplit("-", 1)[1].isdigit() else -1)
  unreadable = []
  for prefix in reversed(prefixes):
    try:
      checkpoint.restore(prefix).assert_existing_objects_matched()
    except (IndexError, ValueError, AssertionError, tf.errors.OpError) as error:
      reason = f"{type(error).__name__}: {' '.join(str(error).split())[:200]}"
      unreadable.append(f"{prefix} ({reason})")
      logging.warning("metatrain: checkpoint %s is unreadable (%s; files %s); falling back to the "
                      "previous checkpoint", prefix, reason, _checkpoint_files(prefix))
      continue
    step = int(checkpoint.step.numpy())
    info_path = prefix + RUN_INFO_SUFFIX
    try:
      with open(info_path) as stream:
        stored = json.load(stream)
    except (OSError, json.JSONDecodeError) as error:
      logging.warning("metatrain: %s is missing or unreadable (%s): cannot verify that "
                      "checkpoint %s was written with the current settings and data",
                      info_path, error, prefix)
      return prefix
    problems = run_differences(stored, info, step)
    if problems:
      raise CheckpointError(
          f"checkpoint {prefix} (step {step}) was written with other settings or data: "
          + "; ".join(problems) + ". Use the same settings to resume it, or pass restart=True "
          "(--config.metatrain.restart=True) to discard its checkpoints and start over")
    return prefix
  if unreadable:
    raise CheckpointError(
        f"no intact checkpoint in {manager.directory}: " + "; ".join(unreadable)
        + ". Pass restart=True (--config.metatrain.restart=True) to start over")
  return None


def open_checkpoints(checkpoint: tf.train.Checkpoint, workdir: str, info: dict, *,
                     restart: bool = False) -> tf.train.CheckpointManager:
  """The checkpoint manager of <workdir>/checkpoints, with the newest intact checkpoint restored.

  Args:
    checkpoint: The learner's checkpoint (omega_base, theta, step, optimizer); restored in place.
    workdir: The run's folder.
    info: The current `run_info`, compared with the restored checkpoint's sidecar.
    restart: Discard the existing checkpoints first.

  Raises:
    CheckpointError: an unreadable state file, no intact checkpoint, or a checkpoint of other
      settings or data.
  """
  checkpoint_dir = os.path.join(workdir, CHECKPOINT_DIR)
  if restart and os.path.isdir(checkpoint_dir):
    logging.warning("metatrain: restart=True: discarding the checkpoints in %s", checkpoint_dir)
    shutil.rmtree(checkpoint_dir)
  try:
    manager = tf.train.CheckpointManager(checkpoint, checkpoint_dir, max_to_keep=2,
                                         checkpoint_name=CHECKPOINT_NAME)
  except (tf.errors.OpError, ValueError, text_format.ParseError) as error:
    raise CheckpointError(
        f"checkpoint state file {os.path.join(checkpoint_dir, 'checkpoint')} is unreadable "
        f"({type(error).__name__}: {error}); pass restart=True "
        "(--config.metatrain.restart=True) to start over") from error
  restored = _restore_intact(checkpoint, manager, info)
  if restored:
    logging.info("metatrain: resumed from %s at step %d", restored, int(checkpoint.step))
  return manager


def save_checkpoint(manager: tf.train.CheckpointManager, step: int, info: dict) -> str:
  """Saves checkpoint `step` with its run-info sidecar; drops sidecars of deleted checkpoints."""
  prefix = os.path.join(manager.directory, f"{CHECKPOINT_NAME}-{step}")
  # The sidecar first: a checkpoint never exists without it (a stray sidecar is harmless).
  os.makedirs(manager.directory, exist_ok=True)
  files.write_atomic(prefix + RUN_INFO_SUFFIX, json.dumps({**info, "step": step}, indent=1))
  saved = manager.save(checkpoint_number=step)
  kept = set(manager.checkpoints)
  for path in glob.glob(os.path.join(glob.escape(manager.directory), "*" + RUN_INFO_SUFFIX)):
    if path[:-len(RUN_INFO_SUFFIX)] not in kept:
      os.remove(path)
  logging.info("metatrain: saved checkpoint %s (step %d)", saved, step)
  return saved
