"""The frame pool that meta-training and pretraining read (written by --mode=precompute).

Two sources of initial heatmaps (`config.precompute.source`):
  "detector": the synthetic world's simulated detector, stored as its compact state;
  "backbone": rendered images of the same frames through the frozen warm-up backbone, stored
    densely (what the paper does with real images: Sec. 4.2, "pre-computed heatmaps").
"""

from __future__ import annotations

import os

import keras
import numpy as np

from mf_tf.data import world
from mf_tf.meta import tasks as tasks_lib

POOL_FILE = os.path.join("precompute", "pool.npz")


def backbone_heatmaps(backbone: keras.Model, images, batch_size: int = 8) -> np.ndarray:
  """Runs a backbone over every view of every frame.

  Args:
    backbone: images [N, S, S, 3] (0..255) -> heatmaps [N, H, W, J].
    images: [N, V, S, S, 3] uint8 or float.
    batch_size: Images per call.

  Returns:
    [N, V, H, W, J] float32.
  """
  images = np.asarray(images)
  if images.ndim != 5:
    raise ValueError(f"images must be [N, V, S, S, 3], got shape {images.shape}")
  count, views = images.shape[:2]
  flat = images.reshape((count * views,) + images.shape[2:]).astype(np.float32)
  out = backbone.predict(flat, batch_size=batch_size, verbose=0)
  return out.reshape((count, views) + out.shape[1:]).astype(np.float32)


def build_pool(rig, num_frames: int, seed: int, joint_set: str, heatmap_size: int,
               detector_params=None, backbone: keras.Model | None = None,
               image_size: int = 256, batch_size: int = 8) -> tasks_lib.FramePool:
  """Simulates frames of `rig` and wraps them as a `FramePool`.

  Args:
    rig: The pretraining rig.
    num_frames: Frames.
    seed: World seed.
    joint_set: Joint set name.
    heatmap_size: H = W.
    detector_params: `DetectorParams` of the simulated detector (64 px units); None: defaults.
    backbone: None keeps the simulated detector (compact state); a model renders images of
      size `image_size` and stores its dense heatmaps.
    image_size: Rendered image side (backbone path).
    batch_size: Backbone batch size.
  """
  frames = world.simulate_frames(rig, num_frames, seed, joint_set, heatmap_size,
                                 detector_params=detector_params,
                                 render_images=backbone is not None, image_size=image_size,
                                 return_heatmaps=False)
  if backbone is None:
    return tasks_lib.FramePool.from_frames(frames, heatmap_size, detector_params)
  heatmaps = backbone_heatmaps(backbone, frames.pop("images"), batch_size)
  if heatmaps.shape[2] != heatmap_size:
    raise ValueError(f"backbone heatmaps are {heatmaps.shape[2]} px, expected heatmap_size="
                     f"{heatmap_size} (image_size / 4)")
  return tasks_lib.FramePool(joints2d=frames["joints2d"], visibility=frames["visibility"],
                             heatmap_size=heatmap_size, heatmaps=heatmaps)


def load_warmup_backbone(workdir: str) -> keras.Model:
  """The backbone written by --mode=warmup (<workdir>/warmup/backbone.keras)."""
  path = os.path.join(workdir, "warmup", "backbone.keras")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no warm-up backbone at {path!r}; run --mode=warmup first or use "
                            "--config.precompute.source=detector")
  return keras.saving.load_model(path, compile=False, safe_mode=True)


