r"""--mode=simulate: write a synthetic multi-view dataset for a rig, plus a contact sheet.

  python -m mf_tf.main --mode=simulate --workdir=/tmp/mf_tf
  python -m mf_tf.main --mode=simulate --workdir=/tmp/mf_tf --config.rig.target=my_rig.json
  python -m mf_tf.main --mode=simulate --workdir=/tmp/mf_tf --config.world.rig=pretrain

The simulated rig is config.rig.target (default), or config.rig.pretrain with
--config.world.rig=pretrain: the same rig options every mode reads.

Config read (configs/default.py):
  seed, joint_set, heatmap_size, image_size, rig.target / rig.pretrain;
  world.num_frames, world.shard_size, world.render_images, world.image_encoding,
  world.store_heatmaps (dense heatmaps in the shards instead of only the compact detector state);
  world.sheet_frame, world.sheet_joint, world.sheet_views (contact sheet);
  detector.* (mf_tf.data.detector.DetectorParams fields); render.* (mf_tf.data.render options).

Output: <workdir>/simulate/<rig name>/ holding meta.json, rig.json, shard-*.tfrecord (read with
`mf_tf.data.pipeline.make_dataset`) and contact_sheet.png.
"""

from __future__ import annotations

import os

from absl import logging

from mf_tf.data import contact_sheet
from mf_tf.data import detector as detector_lib
from mf_tf.data import simulate
from mf_tf.modes import common


RIG_ROLES = ("pretrain", "target")


def resolve_rig(config):
  """The rig of config.rig.<config.world.rig> (world.rig: "target", the default, or "pretrain")."""
  role = str(config.world.rig)
  if role not in RIG_ROLES:
    raise ValueError(f"config.world.rig={role!r}, expected one of {RIG_ROLES} (which rig of "
                     "config.rig.* to simulate; give a rig name or file with "
                     "--config.rig.target=NAME_OR_FILE)")
  return common.rig(config, role)


def _detector_params(config) -> detector_lib.DetectorParams:
  if "detector" in config:
    return detector_lib.detector_params_from_config(config.detector)
  return detector_lib.DetectorParams()


def run(config, workdir: str) -> str:
  """Writes <workdir>/simulate/<rig>/ (TFRecord shards) and its contact_sheet.png."""
  rig = resolve_rig(config)
  out_dir = simulate.dataset_dir(workdir, rig.name)  # Proved inside workdir.
  world_config = config.world
  logging.info("simulate: rig %s (%d views), %d frames -> %s", rig.name, rig.num_views,
               world_config.num_frames, out_dir)
  simulate.simulate_dataset(
      rig, out_dir, num_frames=int(world_config.num_frames),
      shard_size=int(world_config.shard_size), seed=int(config.seed),
      joint_set=config.joint_set, heatmap_size=int(config.heatmap_size),
      image_size=int(config.image_size), render_images=bool(world_config.render_images),
      detector_params=_detector_params(config), image_encoding=world_config.image_encoding,
      store_heatmaps=bool(world_config.store_heatmaps),
      render_options=config.render.to_dict() if "render" in config else None)
  frame = simulate.sheet_frame(out_dir, int(world_config.sheet_frame))
  sheet = os.path.join(out_dir, "contact_sheet.png")
  contact_sheet.make_contact_sheet(
      sheet, rig, config.joint_set, frame, int(config.heatmap_size),
      joint=world_config.sheet_joint, max_views=int(world_config.sheet_views),
      title=f"{rig.name}: frame {int(world_config.sheet_frame)} of {world_config.num_frames}, "
            f"{config.joint_set}, epipolar lines of '{world_config.sheet_joint}' from view 0")
  logging.info("simulate: wrote %s and %s", out_dir, sheet)
  return out_dir
