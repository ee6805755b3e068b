"""--mode=pretrain: the baselines AffineFuse / NaiveFuse by plain training (config.pretrain).

Reads the pool of --mode=precompute when present, else simulates it; the loops are
`mf_tf.train.pretrain`. Output: <workdir>/pretrain/affine.npz or naive.npz (`mf_tf.checkpoints`).
"""

from __future__ import annotations

import os

from absl import logging

from mf_tf import checkpoints
from mf_tf.meta import tasks as tasks_lib
from mf_tf.modes import common
from mf_tf.modes import precompute as precompute_mode
from mf_tf.train import pretrain
from mf_tf.train import precompute


def run(config, workdir: str) -> str:
  """--mode=pretrain: writes <workdir>/pretrain/{affine,naive}.npz."""
  method = config.pretrain.method
  if method not in pretrain.METHODS:
    raise ValueError(f"config.pretrain.method={method!r}, expected one of {pretrain.METHODS}")
  pool_path = os.path.join(workdir, precompute.POOL_FILE)
  pool = (tasks_lib.FramePool.load(pool_path) if os.path.isfile(pool_path)
          else precompute_mode.pool_from_config(config, workdir))
  views = tuple(config.pretrain.views)
  pairs = pretrain.select_view_pairs(pool.num_views, views)
  sigma = common.target_sigma(config, pool.heatmap_size)
  fusion = common.fusion_settings(config)
  temperature, loss = fusion.loss_temperature, fusion.loss  # The training loss's, as every mode.
  section = config.pretrain
  out_dir = os.path.join(workdir, "pretrain")
  os.makedirs(out_dir, exist_ok=True)
  if method == "affine":
    steps = max(1, int(section.epochs) * pool.num_frames // int(section.batch_size))
    params = pretrain.pretrain_affine(pool, pairs, steps=steps, tasks_per_step=2,
                                      frames_per_task=int(section.batch_size),
                                      learning_rate=float(section.learning_rate),
                                      temperature=temperature, target_sigma=sigma,
                                      seed=int(config.seed), loss=loss)
    path = os.path.join(out_dir, "affine.npz")
    checkpoints.save_meta_params(params, path, {"method": "affine", "views": list(views),
                                                "steps": steps})
  else:
    matrices = pretrain.pretrain_naive(pool, views, epochs=int(section.epochs),
                                       batch_size=int(section.batch_size),
                                       learning_rate=float(section.learning_rate),
                                       temperature=temperature, target_sigma=sigma,
                                       seed=int(config.seed), loss=loss)
    path = os.path.join(out_dir, "naive.npz")
    checkpoints.save_naive(matrices, views, path)
  logging.info("pretrain %s -> %s", method, path)
  return path
