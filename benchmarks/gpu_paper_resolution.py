r"""Training and inference steps at paper resolution on one device (a GPU, or the CPU).

  python -m benchmarks.gpu_paper_resolution                      # GPU when visible, else CPU
  python -m benchmarks.gpu_paper_resolution --device=cpu --repeats=1
  python -m benchmarks.gpu_paper_resolution --device=gpu --repeats=20

Paper shapes (Sec. 5.1): SimpleBaseline ResNet50 at 256x256 images -> 64x64 heatmaps, 17 joints
(h36m17), the 4-camera h36m rig, batch 8 frames. Items, each timed as the project runs it:

  backbone      forward of `models.backbone.build_backbone("resnet50", 256, 17)` over the batch's
                B * V = 32 images, by `Model.predict_on_batch` (as `--mode=precompute` runs it);
  fusion        forward + backward of `fusion.layers.AffineFusion` (4 views, 12 ordered pairs,
                omega_base and theta trained) with `ops.fusion_loss`, in one `tf.function`
                XLA-compiled exactly when `warp_kernel.xla_for_warps()` says so;
  maml          one outer step of second-order MAML, `train.metatrain.MetaLearner.train_step`
                with configs/default.py's settings (tasks_per_step ordered pairs of the rig,
                support + query = 4 + 4 = 8 frames per task);
  finetune      one step of few-shot finetuning (MetaFuse^K: theta per pixel, omega_base frozen,
                Adam), the step `train.finetune.finetune_fusion` compiles, on 8 frames.

Each item gets one warm-up call (tracing, XLA compilation: reported as "first") and then
--repeats timed calls (`benchmarks.timing`); medians in ms are printed with the device, its name
and the warp backend of each item (`warp_kernel.backend_summary`: on a GPU the TensorFlow ops
under XLA, on the CPU the compiled warp kernels). --device=cpu hides the GPUs from TensorFlow, so
the run is the CPU's alone; --scale shrinks images and heatmaps for a quick look (default 1: paper
resolution). Inputs are synthetic (Gaussian targets at random joints, noisy heatmaps, random
images): the timings do not depend on their values.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks import timing  # noqa: E402
from configs import default as default_config  # noqa: E402
from mf_tf.data import codec as codec_lib  # noqa: E402
from mf_tf.data import joints  # noqa: E402
from mf_tf.fusion import layers  # noqa: E402
from mf_tf.fusion import ops  # noqa: E402
from mf_tf.fusion import starts as fusion_starts  # noqa: E402
from mf_tf.fusion import warp_kernel  # noqa: E402
from mf_tf.fusion.settings import FusionSettings  # noqa: E402
from mf_tf.geometry import rigs  # noqa: E402
from mf_tf.geometry.rig import ordered_pairs  # noqa: E402
from mf_tf.meta import maml  # noqa: E402
from mf_tf.models import backbone as backbone_lib  # noqa: E402
from mf_tf.modes import common as mode_common  # noqa: E402
from mf_tf.modes import metatrain as metatrain_mode  # noqa: E402
from mf_tf.train import finetune  # noqa: E402
from mf_tf.train import metatrain  # noqa: E402

PAPER_IMAGE_SIZE = 256  # Paper Sec. 5.1: 256x256 crops, heatmaps at a quarter of the side.
RIG = "h36m"  # 4 cameras, the paper's target rig.
BACKBONE = "resnet50"  # SimpleBaseline ResNet50, the paper's estimator.
FINETUNE_VALIDATION_FRAMES = 2  # Held out by finetune_fusion's split, beside the batch.


def select_device(device: str | None) -> str:
  """The device to run on, "cpu" or "gpu"; for "cpu" the GPUs are hidden from TensorFlow.

  Args:
    device: "cpu", "gpu", or None for a GPU when one is visible, else the CPU.

  Raises:
    SystemExit: "gpu" without a visible GPU.
  """
  gpus = tf.config.list_physical_devices("GPU")
  device = device or ("gpu" if gpus else "cpu")
  if device == "gpu" and not gpus:
    raise SystemExit("--device=gpu: TensorFlow sees no GPU here (tf.config."
                     "list_physical_devices('GPU') is empty); run with --device=cpu")
  if device == "cpu":
    tf.config.set_visible_devices([], "GPU")
  return device


def device_description(device: str) -> str:
  """The device's name: the GPU model, or the CPU and its core count."""
  if device == "gpu":
    details = tf.config.experimental.get_device_details(tf.config.list_physical_devices("GPU")[0])
    return f"GPU:0 {details.get('device_name', 'unknown GPU')}"
  return f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def image_side(scale: float) -> int:
  """Image side for --scale: 256 * scale rounded to the backbone's stride 32 (at least 32)."""
  if not 0 < scale <= 1:
    raise SystemExit(f"--scale={scale}, expected 0 < scale <= 1 (1: paper resolution)")
  return max(32, int(round(PAPER_IMAGE_SIZE * scale / 32)) * 32)


def synthetic_frames(num_frames: int, num_views: int, heatmap_size: int, num_joints: int,
                     sigma: float, seed: int = 0) -> dict:
  """Labelled frames with detector-like heatmaps.

  Returns:
    joints2d [N, V, J, 2] inside the maps (heatmap px); target [N, V, H, W, J] and weights
    [N, V, J] from `HeatmapCodec.encode`; heatmaps [N, V, H, W, J]: the targets plus noise.
  """
  rng = np.random.default_rng(seed)
  margin = 0.1 * heatmap_size
  joints2d = rng.uniform(margin, heatmap_size - 1 - margin,
                         (num_frames, num_views, num_joints, 2)).astype(np.float32)
  target, weights = codec_lib.HeatmapCodec(heatmap_size, sigma).encode(joints2d)
  heatmaps = target.numpy() + 0.05 * rng.standard_normal(target.shape).astype(np.float32)
  return {"joints2d": joints2d, "target": target.numpy(), "weights": weights.numpy(),
          "heatmaps": heatmaps}


def pair_tasks(frames: dict, pairs: np.ndarray,
               support_size: int) -> tuple[maml.TaskSplit, maml.TaskSplit]:
  """(support, query) splits of ordered-pair tasks: the first `support_size` frames and the rest.

  Args:
    frames: From `synthetic_frames` (N frames of the rig).
    pairs: [T, 2] ordered pairs (source, target).
    support_size: Frames of the support split; the other N - support_size are the query.
  """
  source, target_view = pairs[:, 0], pairs[:, 1]
  heatmaps = np.stack([frames["heatmaps"][:, source], frames["heatmaps"][:, target_view]],
                      axis=2)  # [N, T, 2, H, W, J]
  heatmaps = np.moveaxis(heatmaps, 1, 0)  # [T, N, 2, H, W, J]
  target = np.moveaxis(frames["target"][:, target_view], 1, 0)  # [T, N, H, W, J]
  weights = np.moveaxis(frames["weights"][:, target_view], 1, 0)  # [T, N, J]

  def split(part):
    return maml.TaskSplit(*(tf.constant(x[:, part]) for x in (heatmaps, target, weights)))

  return split(slice(0, support_size)), split(slice(support_size, None))


Item = tuple[Callable[[], object], str]  # (timed call, warp backend it runs on)


def backbone_item(image_size: int, num_joints: int, num_images: int) -> Item:
  """Backbone forward over `num_images` images, as `--mode=precompute` runs it (`predict`)."""
  backbone = backbone_lib.build_backbone(BACKBONE, image_size, num_joints)
  images = tf.constant(np.random.default_rng(1).uniform(
      0, 255, (num_images, image_size, image_size, 3)).astype(np.float32))
  return (lambda: backbone.predict_on_batch(images)), "no warp"


def fusion_item(batch: dict, num_views: int, heatmap_size: int,
                settings: FusionSettings) -> Item:
  """Forward + backward of the V-view `AffineFusion` on one batch (omega_base and theta)."""
  fusion = layers.AffineFusion(num_views, heatmap_size, settings.temperature)
  fusion.build(batch["heatmaps"].shape)

  def step(heatmaps, target, weights):
    with tf.GradientTape() as tape:
      loss = ops.fusion_loss(fusion(heatmaps), target, weights, settings.loss_temperature,
                             settings.loss)
    return loss, tape.gradient(loss, fusion.trainable_variables)

  step = tf.function(step, jit_compile=warp_kernel.xla_for_warps())
  return (lambda: step(batch["heatmaps"], batch["target"], batch["weights"]),
          warp_kernel.backend_summary())


def maml_item(frames: dict, num_views: int, heatmap_size: int,
              settings: metatrain.MamlSettings) -> Item:
  """One second-order outer step of `MetaLearner` on the first `tasks_per_step` ordered pairs,
  half of the frames as support, the rest as query (it picks XLA by `xla_for_warps`)."""
  settings = dataclasses.replace(settings, first_order=False)
  pairs = ordered_pairs(num_views)[:settings.tasks_per_step]
  support, query = pair_tasks(frames, pairs, len(frames["heatmaps"]) // 2)
  learner = metatrain.MetaLearner(metatrain.default_meta_params(heatmap_size), settings)
  return (lambda: learner.train_step(support, query)), warp_kernel.backend_summary()


def finetune_item(frames: dict, batch: dict, rig, heatmap_size: int, sigma: float,
                  learning_rate: float, settings: FusionSettings) -> Item:
  """One MetaFuse^K finetuning step (theta per pixel, omega_base frozen) on `batch`.

  `finetune_fusion` builds and compiles the step (one epoch on `frames`, the batch plus
  `FINETUNE_VALIDATION_FRAMES` held out); the step is then `train_on_batch` of that model.
  """
  layer = fusion_starts.make_fusion_layer(
      "metafuse", rig, heatmap_size, init=metatrain.default_meta_params(heatmap_size),
      temperature=settings.temperature)
  compiled = {}
  count = len(frames["heatmaps"])
  finetune.finetune_fusion(
      layer, frames["heatmaps"], frames["joints2d"], target_sigma=sigma,
      learning_rate=learning_rate, epochs=1, batch_size=count - FINETUNE_VALIDATION_FRAMES,
      validation_fraction=FINETUNE_VALIDATION_FRAMES / count, progress=False,
      jit_compile=True,  # As every caller of finetune_fusion runs it.
      loss_temperature=settings.loss_temperature, loss=settings.loss, selection="val_loss",
      compiled=compiled)
  model = compiled["model"]
  return ((lambda: model.train_on_batch(batch["heatmaps"], (batch["target"], batch["weights"]))),
          "TensorFlow ops under XLA (finetune_fusion's jit_compile=True)")


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--device", choices=("cpu", "gpu"), default=None,
                      help="default: gpu when TensorFlow sees one, else cpu")
  parser.add_argument("--repeats", type=int, default=10, help="timed calls per item")
  parser.add_argument("--batch", type=int, default=8, help="frames per step (paper: 8)")
  parser.add_argument("--scale", type=float, default=1.0,
                      help="image and heatmap side relative to the paper's 256 -> 64")
  args = parser.parse_args(argv)
  if args.repeats < 1 or args.batch < 2:
    raise SystemExit(f"--repeats={args.repeats}, --batch={args.batch}: expected repeats >= 1 "
                     "and batch >= 2")
  device = select_device(args.device)
  image_size = image_side(args.scale)
  heatmap_size = image_size // 4
  config = default_config.get_config()
  fusion_settings = mode_common.fusion_settings(config)
  sigma = mode_common.target_sigma(config, heatmap_size)
  maml_settings = dataclasses.replace(metatrain_mode.settings_from_config(config),
                                      target_sigma=sigma)
  rig = rigs.get_rig(RIG)
  num_views, num_joints = rig.num_views, joints.get_joint_set(config.joint_set).num_joints

  with tf.device("/GPU:0" if device == "gpu" else "/CPU:0"):
    print(f"device: {device} ({device_description(device)}); TF {tf.__version__}; visible "
          f"{[d.name for d in tf.config.list_logical_devices()]}")
    print(f"shapes: {BACKBONE} {image_size} -> {heatmap_size}, {num_joints} joints, rig {RIG} "
          f"({num_views} views), batch {args.batch}; per item one warm-up call, then "
          f"{args.repeats} timed")
    print(f"warp backend: {warp_kernel.backend_summary()}")
    frames = synthetic_frames(args.batch + FINETUNE_VALIDATION_FRAMES, num_views, heatmap_size,
                              num_joints, sigma)
    batch = {key: value[:args.batch] for key, value in frames.items()}
    tensors = {key: tf.constant(value) for key, value in batch.items()}
    items = {
        "backbone": backbone_item(image_size, num_joints, args.batch * num_views),
        "fusion": fusion_item(tensors, num_views, heatmap_size, fusion_settings),
        "maml": maml_item(batch, num_views, heatmap_size, maml_settings),
        "finetune": finetune_item(frames, tensors, rig, heatmap_size, sigma,
                                  float(config.finetune.learning_rate), fusion_settings),
    }
    results = {name: timing.measure(fn, args.repeats) for name, (fn, _) in items.items()}

  print(f"{'item':10s} {'median ms':>10s} {'first s':>8s}  timing; warp backend")
  for name, result in results.items():
    print(f"{name:10s} {1e3 * result.median:10.1f} {result.first:8.2f}  "
          f"{result.summary('ms')}; {items[name][1]}")


if __name__ == "__main__":
  main()
