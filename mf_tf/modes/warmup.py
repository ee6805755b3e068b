"""--mode=warmup: train the backbone alone on rendered images of the pretraining rig.

Reads config.warmup (frames, epochs, schedule) and config.model (backbone, local weights file);
the loop is `mf_tf.train.warmup.warmup_backbone`. Output: <workdir>/warmup/backbone.keras and
backbone.weights.h5.
"""

from __future__ import annotations

import os

from absl import logging

from mf_tf.data import joints as joints_lib
from mf_tf.data import tfrecord
from mf_tf.data import world
from mf_tf.models import backbone as backbone_lib
from mf_tf.modes import common
from mf_tf.train import warmup


def run(config, workdir: str) -> str:
  """--mode=warmup: writes <workdir>/warmup/backbone.keras and backbone.weights.h5."""
  section = config.warmup
  size, image_size = int(config.heatmap_size), int(config.image_size)
  if image_size != 4 * size:
    raise ValueError(f"config.image_size={image_size} must be 4 x config.heatmap_size={size}")
  if section.data_dir:
    frames = tfrecord.load_arrays(section.data_dir, keys=["images", "joints2d", "visibility"])
  else:
    rig = common.rig(config, "pretrain")
    views = list(range(min(int(section.views), rig.num_views)))
    frames = world.simulate_frames(rig.subset(views), int(section.num_frames), int(config.seed),
                                   config.joint_set, size, render_images=True,
                                   image_size=image_size, return_heatmaps=False)
  images = frames["images"]
  if images.shape[2] != image_size:
    raise ValueError(f"dataset images are {images.shape[2]} px, config.image_size={image_size}")
  flat = lambda a: a.reshape((-1,) + a.shape[2:])  # noqa: E731  [N, V, ...] -> [N*V, ...]
  num_joints = joints_lib.get_joint_set(config.joint_set).num_joints
  strategy = common.strategy(config)
  with strategy.scope():
    backbone = backbone_lib.build_backbone(config.model.backbone, image_size, num_joints,
                                           weights=config.model.weights or None)
  out_dir = os.path.join(workdir, "warmup")
  os.makedirs(out_dir, exist_ok=True)
  history = warmup.warmup_backbone(
      backbone, flat(images), flat(frames["joints2d"]), flat(frames["visibility"]),
      target_sigma=common.target_sigma(config, size),
      epochs=int(section.epochs), batch_size=int(section.batch_size),
      learning_rate=float(section.learning_rate),
      validation_fraction=float(section.validation_fraction), workdir=out_dir,
      seed=int(config.seed), strategy=strategy)
  backbone.save(os.path.join(out_dir, "backbone.keras"))
  backbone.save_weights(os.path.join(out_dir, "backbone.weights.h5"))
  logging.info("warmup: loss %s -> %s", history["loss"][0], history["loss"][-1])
  return out_dir
