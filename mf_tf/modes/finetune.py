"""--mode=finetune: adapt fusion to the target rig from K labelled frames (config.finetune).

The frames are config.finetune.data_dir's (a dataset written by --mode=simulate or
`mf_tf.data.convert`), a TFDS dataset's (config.finetune.tfds, `mf_tf.data.tfds_builders`) or
simulated on the rig. config.recipe (`mf_tf.train.recipes`) gives the starts (the meta-trained
init from <workdir>/metatrain/ for the paper's) and how they are finetuned:
`mf_tf.train.adaptation.adapt` keeps the best start and epoch by the recipe's selection
(config.finetune.fusion=affine|naive: the paper's baselines instead, from <workdir>/pretrain/).
Output: <workdir>/finetune/<rig name>/
(`mf_tf.checkpoints.save_finetuned`: one folder swapped in by one rename, with the run's
TensorBoard logs in its tensorboard/).

SIGINT / SIGTERM (`mf_tf.train.stopping`, as --mode=metatrain): a first signal ends training after
the current step and the run stops without writing (the previous checkpoint stays whole; exit
130 / 143); a signal while the finished result is being saved lets the save complete first. A
second signal stops at once.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

import numpy as np
from absl import logging

from mf_tf import checkpoints
from mf_tf import files
from mf_tf.data import pipeline
from mf_tf.data import tfds_builders
from mf_tf.data import world
from mf_tf.fusion import starts as fusion_starts
from mf_tf.modes import common
from mf_tf.train import adaptation
from mf_tf.train import finetune
from mf_tf.train import stopping

FUSIONS = ("metafuse", "affine", "naive")


def run(config, workdir: str) -> str:
  """Writes <workdir>/finetune/<rig name>/ (read with `mf_tf.checkpoints.load_finetuned`)."""
  section = config.finetune
  if section.fusion not in FUSIONS:
    raise ValueError(f"config.finetune.fusion={section.fusion!r}, expected one of {FUSIONS}")
  recipe = common.recipe(config)
  starts = recipe.starts if section.fusion == "metafuse" else (section.fusion,)
  rig = common.rig(config, "target")
  fusion_starts.validate_rig(rig)
  size = int(config.heatmap_size)
  shots = section.shots
  heatmaps, joints2d = _labelled_frames(config, workdir, rig, size)
  init_paths = {start: section.init or checkpoints.default_init_path(start, workdir)
                for start in starts}
  fusion = common.fusion_settings(config)
  layers = adaptation.start_layers(
      recipe, starts, rig, size,
      inits={start: checkpoints.load_init(start, path) for start, path in init_paths.items()},
      labels=joints2d, temperature=fusion.temperature, line_width_px=fusion.line_width_px,
      line_value=fusion.line_value)
  root = files.inside(workdir, "finetune")
  rig_dir = checkpoints.finetuned_rig_dir(root, rig)
  files.check_replaceable(rig_dir, "finetuned fusion checkpoint")  # Refused before training.
  os.makedirs(root, exist_ok=True)
  # This run's TensorBoard logs, moved into the checkpoint folder when it is saved.
  log_dir = tempfile.mkdtemp(dir=root, prefix=f".{rig.name}.tensorboard-")
  try:
    with stopping.deferred_stop_signals("finetune", "writing nothing") as stop:
      adapted = adaptation.adapt(
          recipe, layers, heatmaps, joints2d,
          target_sigma=common.target_sigma(config, size),
          learning_rate=float(section.learning_rate), epochs=int(section.epochs),
          batch_size=int(section.batch_size),
          validation_fraction=float(section.validation_fraction),
          patience=int(section.patience), seed=int(config.seed), log_dir=log_dir,
          loss_temperature=fusion.loss_temperature, stop=stop, progress=True,
          label=f"finetune {rig.name}")
      method, layer, history = adapted["start"], adapted["layer"], adapted["history"]
      if stop.requested:
        logging.warning("finetune: stopped by %s during training; nothing written (%s is as "
                        "it was)", stop.name, rig_dir)
        raise stop.exception()
      logging.info("finetune: kept %s", "the starting parameters" if history["restored_init"]
                   else f"epoch {history['best_epoch']} (validation JDR "
                   f"{history['initial_val_jdr']:.1f}% -> {history['best_val_jdr']:.1f}%)")
      checkpoints.save_finetuned(layer, rig, rig_dir,
                                 {"method": method, "recipe": recipe.name, "shots": int(shots),
                                  "heatmap_size": size, "init": init_paths[method],
                                  "starts": {start: h["best_val_jdr"]
                                             for start, h in adapted["starts"].items()},
                                  "temperature": fusion.temperature,
                                  "history": history}, log_dir=log_dir)
    if stop.requested:  # Arrived while saving: the checkpoint is complete, then stop.
      logging.warning("finetune: stopped by %s after saving %s", stop.name, rig_dir)
      raise stop.exception()
  finally:
    shutil.rmtree(log_dir, ignore_errors=True)  # Ours; gone already once moved into rig_dir.
  logging.info("finetune %s on %s (K=%d): %d epochs, val_loss %.4f -> %s", method, rig.name,
               shots, history["epochs"], history["val_loss"][-1], rig_dir)
  return rig_dir


def _labelled_frames(config, workdir: str, rig, size: int) -> tuple[np.ndarray, np.ndarray]:
  """The K labelled frames of config.finetune: drawn from its TFRecord or TFDS dataset, else
  simulated on the rig. Returns ([K, V, H, W, J] heatmaps, [K, V, J, 2] joints)."""
  section, shots = config.finetune, config.finetune.shots
  if section.data_dir and section.tfds:
    raise ValueError(f"config.finetune.data_dir={section.data_dir!r} and config.finetune.tfds="
                     f"{section.tfds!r}: expected one source of labelled frames")
  if section.data_dir or section.tfds:
    if section.data_dir:
      dataset = pipeline.make_dataset(section.data_dir, 64, render_heatmaps=True, rig=rig,
                                      heatmap_size=size)
    else:
      dataset, _ = tfds_builders.load_training_dataset(
          str(section.tfds), str(section.tfds_split),
          config.data.tfds_dir or os.path.join(workdir, "tensorflow_datasets"), 64,
          manual_dir=config.data.manual_dir or None, rig=rig, heatmap_size=size,
          render_heatmaps=True)
    frames = {"heatmaps": [], "joints2d": []}
    with (pipeline.corrupted_records_named(section.data_dir) if section.data_dir
          else contextlib.nullcontext()):
      for batch in dataset:
        for key in frames:
          frames[key].append(batch[key].numpy())
    frames = {key: np.concatenate(value) for key, value in frames.items()}
    chosen = finetune.select_shots(len(frames["joints2d"]), shots, int(config.seed))
    heatmaps, joints2d = frames["heatmaps"][chosen], frames["joints2d"][chosen]
  else:
    finetune.select_shots(int(shots), shots, int(config.seed))  # Validates K.
    frames = world.simulate_frames(rig, int(shots), int(config.seed), config.joint_set, size,
                                   detector_params=world.detector_params_from_config(
                                       config.detector))
    heatmaps, joints2d = frames["heatmaps"], frames["joints2d"]
  return heatmaps, joints2d
