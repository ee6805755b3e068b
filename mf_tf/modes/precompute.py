"""--mode=precompute: store the pretraining rig's frame pool (config.precompute).

Two sources of initial heatmaps (config.precompute.source): "detector" (the synthetic world's
simulated detector, stored compactly) or "backbone" (rendered images through the frozen warm-up
backbone, stored densely). Output: <workdir>/precompute/pool.npz, read by --mode=metatrain and
--mode=pretrain (which simulate the pool themselves when it is absent).
"""

from __future__ import annotations

import os

from absl import logging

from mf_tf.data import world
from mf_tf.meta import tasks as tasks_lib
from mf_tf.modes import common
from mf_tf.train import precompute


def pool_from_config(config, workdir: str, save: bool = False) -> tasks_lib.FramePool:
  """The pool of config.rig.pretrain described by config.precompute (saved with save=True)."""
  source = config.precompute.source
  if source not in ("detector", "backbone"):
    raise ValueError(f"config.precompute.source={source!r}, expected 'detector' or 'backbone'")
  if int(config.precompute.num_frames) < 1:
    raise ValueError(f"config.precompute.num_frames={config.precompute.num_frames}, "
                     "expected >= 1")
  rig = common.rig(config, "pretrain")
  backbone = precompute.load_warmup_backbone(workdir) if source == "backbone" else None
  pool = precompute.build_pool(rig, int(config.precompute.num_frames), int(config.seed),
                               config.joint_set, int(config.heatmap_size),
                               world.detector_params_from_config(config.detector), backbone,
                               int(config.image_size), int(config.precompute.batch_size))
  if save:
    path = os.path.join(workdir, precompute.POOL_FILE)
    pool.save(path)
    logging.info("precompute: %d frames x %d views (%s) -> %s", pool.num_frames, pool.num_views,
                 source, path)
  return pool


def run(config, workdir: str) -> tasks_lib.FramePool:
  """--mode=precompute: writes <workdir>/precompute/pool.npz."""
  return pool_from_config(config, workdir, save=True)
