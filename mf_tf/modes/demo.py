"""--mode=demo: the README's main job (meta-train, finetune on a new rig, compare, plot).

Turns the config's demo section into `mf_tf.experiments.demo.DemoSettings` and runs `run_demo`;
writes <workdir>/demo/ (results, figures, meta-parameters, export) and the finetuned fusion where
--mode=evaluate and --mode=export look for it (<workdir>/finetune/<rig>/).
"""

from __future__ import annotations

import dataclasses
import os
import time

from absl import logging

from mf_tf import checkpoints
from mf_tf.data import world
from mf_tf.experiments import benchmark
from mf_tf.experiments import demo
from mf_tf.modes import common
from mf_tf.modes import evaluate as evaluate_mode
from mf_tf.modes import export as export_mode


def settings_from_config(config) -> demo.DemoSettings:
  """`DemoSettings` from the experiment config (sections demo, rig, fusion, evaluate, export)."""
  section = config.demo
  size = int(section.heatmap_size)
  sigma = float(config.detector.sigma) * size / 64.0  # Targets as sharp as the detector's peaks.
  # Training losses (meta-training, finetuning) use the loss temperature; read-out keeps T.
  fusion = common.fusion_settings(config)
  loss_t = fusion.loss_temperature
  maml_settings = common.maml_settings(section.maml, config, sigma)
  return demo.DemoSettings(
      joint_set=str(config.joint_set), heatmap_size=size,
      temperature=fusion.temperature, target_sigma=sigma, seed=int(config.seed),
      pretrain_rig=str(config.rig.pretrain), target_rig=str(config.rig.target),
      pretrain_frames=int(section.pretrain_frames), maml=maml_settings, shots=int(section.shots),
      finetune=benchmark.FitSettings(int(section.finetune_steps), float(section.finetune_lr),
                                     int(section.finetune_batch_size), loss_t),
      test_frames=int(section.test_frames),
      test_seed=int(config.seed) + int(config.evaluate.seed_offset),
      detector=world.detector_params_from_config(config.detector),
      pictorial_options=dataclasses.replace(
          evaluate_mode.pictorial_options_from_config(config.evaluate),
          coarse_bins=int(section.coarse_bins), refine_iterations=int(section.refine_iterations)),
      limb_frames=int(config.evaluate.limb_frames),
      line_width_px=fusion.line_width_px,
      line_value=fusion.line_value,
      eval_batch_size=int(config.evaluate.batch_size), export=bool(section.export),
      export_backbone=str(section.export_backbone),
      export_backbone_weights=str(section.export_backbone_weights),
      export_top_k=int(config.export.top_k),
      export_batching=export_mode.batching_settings(config), progress=bool(section.progress),
      recipe=common.recipe(config), paper_row=bool(section.paper_row),
      calibrated_variant=bool(section.calibrated_variant))


def run(config, workdir: str) -> dict:
  """--mode=demo: writes <workdir>/demo/ (results, figures, meta-parameters, export)."""
  start = time.time()
  settings = settings_from_config(config)
  # The finetuned fusion goes where --mode=evaluate / export look for it.
  checkpoint_dir = checkpoints.finetuned_rig_dir(os.path.join(workdir, "finetune"),
                                                common.rig(config, "target"))
  out = demo.run_demo(settings, os.path.join(workdir, "demo"), checkpoint_dir)
  logging.info("demo: finished in %.0f s", time.time() - start)
  return out
