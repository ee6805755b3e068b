"""--mode=metatrain: MAML over the pretraining rig's camera pairs (config.metatrain).

Reads the pool of --mode=precompute (<workdir>/precompute/pool.npz) when present, else simulates
it; the loop is `mf_tf.train.metatrain.metatrain_fusion` (checkpoints, resume, TensorBoard), with
the loss and theta init that config.recipe's starts read (`mf_tf.train.recipes`).
Output: <workdir>/metatrain/meta_params.npz (`mf_tf.checkpoints`) and heldout.json.
"""

from __future__ import annotations

import dataclasses
import json
import os

from absl import logging

from mf_tf import checkpoints
from mf_tf import files
from mf_tf.meta import maml
from mf_tf.meta import tasks as tasks_lib
from mf_tf.modes import common
from mf_tf.modes import precompute as precompute_mode
from mf_tf.train import metatrain
from mf_tf.train import precompute
from mf_tf.train import pretraining


def settings_from_config(config) -> metatrain.MamlSettings:
  """`MamlSettings` from config.metatrain (plus the shared loss, sigma and seed)."""
  return common.maml_settings(config.metatrain, config, common.target_sigma(config))


def run(config, workdir: str) -> maml.MetaParams:
  """--mode=metatrain: writes <workdir>/metatrain/meta_params.npz (+ checkpoints, TensorBoard).

  Reads the pool of --mode=precompute (<workdir>/precompute/pool.npz) when present, else
  simulates it (config.precompute). Reports held-out pairs' query losses before and after
  meta-training, each before and after one adaptation.
  """
  settings = settings_from_config(config)
  metatrain.check_loop_settings(settings.num_steps, config.metatrain.checkpoint_every)
  pool_path = os.path.join(workdir, precompute.POOL_FILE)
  pool_source = pool_path if os.path.isfile(pool_path) else "simulated"
  if os.path.isfile(pool_path):
    pool = tasks_lib.FramePool.load(pool_path)
    logging.info("metatrain: pool %s (%d frames)", pool_path, pool.num_frames)
  else:
    logging.info("metatrain: no %s; simulating %d frames", pool_path,
                 int(config.precompute.num_frames))
    pool = precompute_mode.pool_from_config(config, workdir)
  if pool.heatmap_size != int(config.heatmap_size):
    raise ValueError(f"pool heatmaps are {pool.heatmap_size} px, config.heatmap_size is "
                     f"{config.heatmap_size}")
  train_pairs, holdout_pairs = tasks_lib.split_pairs(pool.num_views,
                                                     int(config.metatrain.holdout_pairs),
                                                     int(config.seed))
  out_dir = os.path.join(workdir, "metatrain")
  recipe = common.recipe(config)
  # What the recipe's starts read: calibrated theta + residual, else the paper's shared init.
  theta_init = recipe.meta_theta_init or "shared"
  rig = common.rig(config, "pretrain") if theta_init == "calibrated" else None
  if rig is not None and rig.num_views != pool.num_views:
    raise ValueError(f"pretraining rig {rig.name!r} has {rig.num_views} views, the pool "
                     f"{pool.num_views}")
  fusion = common.fusion_settings(config)
  line = dict(line_width_px=fusion.line_width_px, line_value=fusion.line_value)
  init, theta_by_pair = pretraining.meta_start(recipe, rig, pool.heatmap_size, **line)
  report = {}
  if len(holdout_pairs):
    report["init"] = metatrain.evaluate_pairs(init, pool, holdout_pairs, settings,
                                              len(holdout_pairs), theta_by_pair=theta_by_pair)
  params = pretraining.meta_training(recipe, pool, train_pairs, settings, rig=rig, **line,
                                     workdir=out_dir, strategy=common.strategy(config),
                                     checkpoint_every=int(config.metatrain.checkpoint_every),
                                     restart=bool(config.metatrain.restart))
  if len(holdout_pairs):
    report["metatrained"] = metatrain.evaluate_pairs(params, pool, holdout_pairs, settings,
                                                     len(holdout_pairs),
                                                     theta_by_pair=theta_by_pair)
    for stage, losses in report.items():
      logging.info("metatrain held-out pairs (%s): %s", stage, losses)
  checkpoints.save_meta_params(
      params, os.path.join(out_dir, checkpoints.META_PARAMS_FILE),
      {"method": "maml", "steps": settings.num_steps, "theta_init": theta_init,
       "recipe": recipe.name, "pool": pool_source, "rig": str(config.rig.pretrain),
       "heldout": report,
       "settings": dataclasses.asdict(settings)})
  files.write_atomic(os.path.join(out_dir, "heldout.json"), json.dumps(report, indent=1))
  return params
