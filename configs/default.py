r"""The embedded synthetic default: every mode runs on it with no download.

  python -m mf_tf.main --mode=simulate --workdir=/tmp/mf_tf
  python -m mf_tf.main --mode=simulate --config=configs/default.py:smoke --workdir=/tmp/mf_tf_smoke

Each section belongs to one stage; libraries receive explicit arguments taken from it by the mode
functions, never the config itself. `:smoke` shrinks everything for quick local runs and CI.
"""

import ml_collections


def get_config(arg=None):
  config = ml_collections.ConfigDict()
  config.seed = 0  # Every random draw (poses, rigs, detector noise, init) derives from this.
  config.joint_set = "h36m17"  # Named joint set; see mf_tf/data/joints.py.
  config.heatmap_size = 64  # Heatmap side in pixels; a heatmap covers its camera's whole image.
  config.image_size = 256  # Rendered / backbone input side in pixels (heatmap_size * 4).

  # Rigs: a built-in name (see mf_tf/geometry/rigs.py) or a canonical rig JSON file.
  config.rig = ml_collections.ConfigDict()
  config.rig.pretrain = "panoptic_vga20"  # Paper: 20 Panoptic cameras, 380 ordered pairs.
  config.rig.target = "h36m"  # Held-out rig for finetune / evaluate / export / demo.

  # Synthetic world and its simulated detector (mf_tf/data/).
  config.world = ml_collections.ConfigDict()
  config.world.num_frames = 2000  # Frames written by --mode=simulate.
  config.world.render_images = True  # Also render the volumetric body (slower).
  config.world.shard_size = 500  # Frames per TFRecord shard.

  config.distribute = "none"  # none | mirrored | multi_worker (tf.distribute strategy).

  if arg == "smoke":
    config.heatmap_size = 32
    config.image_size = 128
    config.world.num_frames = 16
    config.world.shard_size = 8
  elif arg not in (None, ""):
    raise ValueError(f"unknown config variant {arg!r}; expected none or 'smoke'")
  return config
