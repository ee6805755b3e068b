r"""`--mode=simulate`: write a synthetic multi-view dataset for a rig, plus a contact sheet.

  python -m mf_tf.main --mode=simulate --workdir=/tmp/mf_tf
  python -m mf_tf.main --mode=simulate --config=configs/default.py:smoke --workdir=/tmp/mf_tf \
      --config.world.rig=h36m
  python -m mf_tf.main --mode=simulate --workdir=/tmp/mf_tf \
      --config.world.rig=target --config.rig.target=my_rig.json

The simulated rig is config.world.rig alone (default "pretrain"): setting config.rig.target does
not change it unless world.rig is "target", as in the last command.

Config read (configs/default.py):
  seed, joint_set, heatmap_size, image_size;
  world.rig: "pretrain" / "target" (the rig named by config.rig.pretrain / config.rig.target),
    a built-in rig name (mf_tf/geometry/rigs.py) or a canonical rig JSON path;
  world.num_frames, world.shard_size, world.render_images, world.image_encoding,
  world.store_heatmaps (dense heatmaps in the shards instead of only the compact detector state);
  world.sheet_frame, world.sheet_joint, world.sheet_views (contact sheet);
  detector.* when present (mf_tf.data.detector.DetectorParams fields), else the defaults;
  render.* when present (image rendering options of mf_tf.data.render).

Output: <workdir>/simulate/<rig name>/ holding meta.json, rig.json, shard-*.tfrecord (read with
`mf_tf.data.pipeline.make_dataset`) and contact_sheet.png. Frames are simulated
in chunks of SIMULATE_CHUNK frames (seed of chunk k derived from (seed, k)), so memory stays
bounded and the frames do not depend on the shard size; the directory appears only once complete.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time

import keras
import numpy as np
from absl import logging

from mf_tf.data import contact_sheet
from mf_tf.data import detector as detector_lib
from mf_tf.data import tfrecord
from mf_tf.data import world
from mf_tf.geometry import rigs as rigs_lib

RIG_ALIASES = ("pretrain", "target")
# Frames simulated per call: bounds memory (50 frames x 20 views x 256^2 RGB is ~200 MB) and,
# being independent of the shard size, makes the frames a function of the seed alone.
SIMULATE_CHUNK = 50


def resolve_rig(config):
  """The rig named by config.world.rig (an alias of config.rig.*, a built-in name or a path)."""
  spec = str(config.world.rig)
  if spec in RIG_ALIASES:
    others = ", ".join(f"config.rig.{alias}={config.rig[alias]!r}" for alias in RIG_ALIASES
                       if alias != spec)
    logging.info("simulate: world.rig=%r is config.rig.%s=%r (not simulated: %s; choose with "
                 "--config.world.rig)", spec, spec, str(config.rig[spec]), others)
    spec = str(config.rig[spec])
  return rigs_lib.get_rig(spec)


def _detector_params(config) -> detector_lib.DetectorParams:
  if "detector" in config:
    return detector_lib.detector_params_from_config(config.detector)
  return detector_lib.DetectorParams()


def _chunk_seed(seed: int, chunk: int) -> int:
  return int(np.random.SeedSequence([int(seed), int(chunk)]).generate_state(1)[0] & 0x7FFFFFFF)


def dataset_dir(workdir: str, rig_name: str) -> str:
  """<workdir>/simulate/<rig name, made filesystem-safe>."""
  return os.path.join(workdir, "simulate", re.sub(r"[^A-Za-z0-9_.-]+", "_", rig_name))


def simulate_dataset(rig, out_dir: str, *, num_frames: int, shard_size: int, seed: int,
                     joint_set: str, heatmap_size: int, image_size: int, render_images: bool,
                     detector_params: detector_lib.DetectorParams, image_encoding: str = "png",
                     store_heatmaps: bool = False, render_options: dict | None = None,
                     overwrite: bool = True, verbose: bool = True) -> str:
  """Simulates `num_frames` frames chunk by chunk and writes them (atomically) to `out_dir`."""
  scaled = detector_params.scaled(heatmap_size)
  extra = {"seed": int(seed), "image_size": int(image_size) if render_images else None,
           "source": "mf_tf.data.world.simulate_frames"}
  progress = keras.utils.Progbar(num_frames, unit_name="frame") if verbose else None
  start = time.perf_counter()
  with tfrecord.ShardWriter(out_dir, rig, joint_set, heatmap_size, shard_size, num_frames,
                            image_encoding=image_encoding,
                            detector_params=dataclasses.asdict(scaled), overwrite=overwrite,
                            extra_meta=extra) as writer:
    for chunk, first in enumerate(range(0, num_frames, SIMULATE_CHUNK)):
      count = min(SIMULATE_CHUNK, num_frames - first)
      frames = world.simulate_frames(
          rig, count, _chunk_seed(seed, chunk), joint_set=joint_set, heatmap_size=heatmap_size,
          detector_params=detector_params, render_images=render_images, image_size=image_size,
          return_heatmaps=store_heatmaps, render_options=render_options)
      writer.add(frames)
      if progress is not None:
        progress.update(writer.frames_written)
      logging.info("simulate: %d/%d frames (%.1f s)", writer.frames_written, num_frames,
                   time.perf_counter() - start)
  return out_dir


def sheet_frame(data_dir: str, frame_index: int) -> dict:
  """One stored frame with its initial heatmaps rendered from the stored detector state."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  meta = tfrecord.read_meta(data_dir)
  if not 0 <= frame_index < meta["num_frames"]:
    raise ValueError(f"sheet frame {frame_index}, expected 0..{meta['num_frames'] - 1}")
  for index, frame in tfrecord.iterate_frames(data_dir):
    if index == frame_index:
      break
  if "heatmaps" not in frame:
    params = meta["detector"]
    frame["heatmaps"] = detector_lib.render_heatmaps(
        tf.constant(frame["peaks"]), tf.constant(frame["amplitudes"]), meta["heatmap_size"],
        params["sigma"], params["noise_level"], tf.constant(frame["noise_seed"])).numpy()
  return frame


def run(config, workdir: str, args) -> None:
  """Writes <workdir>/simulate/<rig>/ (TFRecord shards) and its contact_sheet.png."""
  del args
  rig = resolve_rig(config)
  out_dir = dataset_dir(workdir, rig.name)
  world_config = config.world
  logging.info("simulate: rig %s (%d views), %d frames -> %s", rig.name, rig.num_views,
               world_config.num_frames, out_dir)
  simulate_dataset(
      rig, out_dir, num_frames=int(world_config.num_frames),
      shard_size=int(world_config.shard_size), seed=int(config.seed),
      joint_set=config.joint_set, heatmap_size=int(config.heatmap_size),
      image_size=int(config.image_size), render_images=bool(world_config.render_images),
      detector_params=_detector_params(config), image_encoding=world_config.image_encoding,
      store_heatmaps=bool(world_config.store_heatmaps),
      render_options=config.render.to_dict() if "render" in config else None)
  frame = sheet_frame(out_dir, int(world_config.sheet_frame))
  sheet = os.path.join(out_dir, "contact_sheet.png")
  contact_sheet.make_contact_sheet(
      sheet, rig, config.joint_set, frame, int(config.heatmap_size),
      joint=world_config.sheet_joint, max_views=int(world_config.sheet_views),
      title=f"{rig.name}: frame {int(world_config.sheet_frame)} of {world_config.num_frames}, "
            f"{config.joint_set}, epipolar lines of '{world_config.sheet_joint}' from view 0")
  logging.info("simulate: wrote %s and %s", out_dir, sheet)
