"""--mode=benchmark: the paper's protocol (all methods x K on held-out rigs), configs/benchmark.py.

Turns the config's benchmark section into `mf_tf.experiments.benchmark.BenchmarkSettings` and
runs `run_benchmark`; writes <workdir>/benchmark/results.{json,md} and figure7_<rig>.png.
"""

from __future__ import annotations

import os

from absl import logging

from mf_tf.data import world
from mf_tf.experiments import benchmark
from mf_tf.modes import common
from mf_tf.modes import evaluate as evaluate_mode


def _fit(section, loss_temperature: float | None = None) -> benchmark.FitSettings:
  return benchmark.FitSettings(int(section.steps), float(section.learning_rate),
                               int(section.batch_size), loss_temperature)


def _as_tuple(value) -> tuple:
  if isinstance(value, str):
    return tuple(v.strip() for v in value.split(",") if v.strip())
  return tuple(value)


def settings_from_config(config) -> benchmark.BenchmarkSettings:
  """`BenchmarkSettings` from a config with a `benchmark` section (configs/benchmark.py)."""
  if "benchmark" not in config:
    raise ValueError("the config has no 'benchmark' section; run --mode=benchmark with "
                     "--config=configs/benchmark.py[:smoke|:full]")
  section = config.benchmark
  # Training losses use fusion.loss_temperature; the read-out keeps fusion.temperature.
  fusion = common.fusion_settings(config)
  loss_t = fusion.loss_temperature
  maml_settings = common.maml_settings(section.maml, config, float(section.target_sigma))
  rig_names = _as_tuple(section.heldout_rigs) + _as_tuple(config.get("eval_rig_files", ""))
  return benchmark.BenchmarkSettings(
      joint_set=str(config.joint_set), heatmap_size=int(config.heatmap_size),
      temperature=fusion.temperature, target_sigma=float(section.target_sigma),
      seed=int(config.seed), pretrain_rig=str(config.rig.pretrain),
      pretrain_frames=int(section.pretrain_frames), maml=maml_settings,
      affine_pretrain=_fit(section.affine_pretrain),
      naive_pretrain=_fit(section.naive_pretrain, loss_t),
      heldout_rigs=tuple(rig_names), panoptic_rig=str(section.panoptic_rig),
      panoptic_trials=int(section.panoptic_trials), panoptic_views=int(section.panoptic_views),
      shots=tuple(int(k) for k in _as_tuple(section.shots)),
      train_frames=int(section.train_frames), test_frames=int(section.test_frames),
      finetune=_fit(section.finetune, loss_t),
      naive_finetune=_fit(section.naive_finetune, loss_t),
      naive_full=_fit(section.naive_full, loss_t),
      naive_full_solver=str(section.naive_full_solver),
      detector=world.detector_params_from_config(config.detector),
      pictorial_options=(evaluate_mode.pictorial_options_from_config(config.evaluate)
                         if section.pictorial else None),
      limb_frames=int(config.evaluate.limb_frames),
      line_width_px=fusion.line_width_px,
      line_value=fusion.line_value,
      eval_batch_size=int(config.evaluate.batch_size), source=str(section.source),
      images=dict(section.images.to_dict()) if "images" in section else {},
      recipe=common.recipe(config), paper_rows=bool(section.paper_rows),
      outlier_px=float(config.evaluate.outlier_px) or None,
      workers=int(section.workers), worker_threads=int(section.worker_threads))


def run(config, workdir: str) -> dict:
  """--mode=benchmark: writes <workdir>/benchmark/results.{json,md} and figure7_<rig>.png."""
  settings = settings_from_config(config)
  logging.info("benchmark settings: %s", settings)
  return benchmark.run_benchmark(settings, os.path.join(workdir, "benchmark"),
                       config_dict=config.to_dict(), progress=bool(config.benchmark.progress))
