"""A synthetic multi-view dataset of a rig in TFRecord shards, and a frame for its contact sheet.

`simulate_dataset` writes <out_dir>/ holding meta.json, rig.json and shard-*.tfrecord (read with
`mf_tf.data.pipeline.make_dataset`). Frames are simulated in chunks of SIMULATE_CHUNK frames (seed
of chunk k derived from (seed, k)), so memory stays bounded and the frames do not depend on the
shard size; the directory appears only once complete. --mode=simulate (`mf_tf.modes.simulate`)
writes one for config.rig.target with its contact sheet.
"""

from __future__ import annotations

import dataclasses
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from mf_tf import files
from mf_tf.data import detector as detector_lib
from mf_tf.data import tfrecord
from mf_tf.data import world

# Frames simulated per call: bounds memory (50 frames x 20 views x 256^2 RGB is ~200 MB) and,
# being independent of the shard size, makes the frames a function of the seed alone.
SIMULATE_CHUNK = 50


def _chunk_seed(seed: int, chunk: int) -> int:
  return int(np.random.SeedSequence([int(seed), int(chunk)]).generate_state(1)[0] & 0x7FFFFFFF)


def dataset_dir(workdir: str, rig_name: str) -> str:
  """<workdir>/simulate/<rig name>, its real path, proved inside `workdir`.

  Raises:
    UnsafePathError: `rig_name` is not a safe name (`mf_tf.files.check_name`) or the path
      leaves `workdir` (e.g. through a symbolic link).
  """
  return files.inside(workdir, "simulate", files.check_name(rig_name, "rig name"))


def simulate_dataset(rig, out_dir: str, *, num_frames: int, shard_size: int, seed: int,
                     joint_set: str, heatmap_size: int, image_size: int, render_images: bool,
                     detector_params: detector_lib.DetectorParams, image_encoding: str = "png",
                     store_heatmaps: bool = False, render_options: dict | None = None,
                     overwrite: bool = True, verbose: bool = True) -> str:
  """Simulates `num_frames` frames chunk by chunk and writes them (atomically) to `out_dir`.

  An existing `out_dir` is replaced only when mf_tf wrote it (`tfrecord.ShardWriter`); any other
  folder is refused before a frame is simulated.
  """
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


