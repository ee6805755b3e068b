r"""Pictorial structure model speed and accuracy: XLA vs eager messages, coarse grid sizes.

  python -m benchmarks.rpsm_bench                   # 64x64 heatmaps, Human3.6M rig, 8 frames
  python -m benchmarks.rpsm_bench --frames=4 --reps=2 --coarse=8,10   # quick look

Cases (ratios measured within this one run; absolute times are medians with p95 and min..max
over --reps repetitions after one warm-up call that includes tracing / XLA compilation;
`benchmarks.timing`):
  1. One tree level's limb messages ([1, 5, G, G] with G = 16^3, the widest h36m17 level of the
     coarse stage): the XLA-compiled `_limb_messages` vs the same function run eagerly,
     interleaved; the ratio is the median of the per-repetition ratios.
  2. Whole `rpsm` per frame for each --coarse bin count, with its MPJPE on noise-free Gaussian
     heatmaps (the discretization error alone) and on the simulated detector's heatmaps.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks import timing  # noqa: E402
from mf_tf.data import world  # noqa: E402
from mf_tf.data.codec import HeatmapCodec  # noqa: E402
from mf_tf.evaluation import metrics  # noqa: E402
from mf_tf.evaluation import pictorial  # noqa: E402
from mf_tf.evaluation import triangulate  # noqa: E402
from mf_tf.geometry import rigs  # noqa: E402


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--frames", type=int, default=8)
  parser.add_argument("--size", type=int, default=64)
  parser.add_argument("--reps", type=int, default=3)
  parser.add_argument("--coarse", default="10,16")
  parser.add_argument("--rig", default="h36m")
  args = parser.parse_args()
  print(f"devices: {[d.device_type for d in tf.config.list_logical_devices()]}")

  cells, limbs = 16 ** 3, 5
  rng = np.random.default_rng(0)
  score = tf.constant(rng.normal(size=(1, limbs, cells)), tf.float32)
  grid = pictorial._cube(16)  # pylint: disable=protected-access
  points = tf.constant(grid[None, None] * 125.0, tf.float32)  # 2000 mm cube, 125 mm cells
  lengths, slack = tf.fill([limbs], 400.0), tf.fill([limbs], 205.0)
  sigma = tf.constant(125.0)
  messages = pictorial._limb_messages  # pylint: disable=protected-access
  comparison = timing.compare(
      lambda: messages(score, points, points, lengths, slack, sigma),
      lambda: messages.python_function(score, points, points, lengths, slack, sigma), args.reps)
  print(f"1. limb messages [1, {limbs}, {cells}, {cells}]: XLA {comparison.a.summary()}; eager "
        f"{comparison.b.summary()}; eager / XLA = {comparison.ratio:.2f}")

  rig = rigs.get_rig(args.rig)
  frames = world.simulate_frames(rig, args.frames, seed=1, heatmap_size=args.size)
  training = world.simulate_frames(rig, 200, seed=2, heatmap_size=args.size,
                                   return_heatmaps=False)
  limb_lengths = pictorial.mean_limb_lengths(training["joints3d"], "h36m17")
  clean = HeatmapCodec(args.size).encode(frames["joints2d"])[0].numpy()
  for name, heatmaps in (("clean", clean), ("detector", frames["heatmaps"])):
    coords, scores = HeatmapCodec(args.size).decode(heatmaps)
    root = triangulate.triangulate_heatmap_joints(coords.numpy(), scores.numpy(), rig,
                                                  args.size)[:, 0]
    for bins in (int(b) for b in args.coarse.split(",")):
      options = pictorial.PictorialOptions(coarse_bins=bins)
      result = {}

      def solve(options=options, heatmaps=heatmaps, root=root, result=result):
        result["pose"] = pictorial.rpsm(heatmaps, rig, "h36m17", limb_lengths, root, options)
        return result["pose"]

      per_frame = timing.measure(solve, args.reps).per(args.frames)
      print(f"2. rpsm {name} heatmaps {args.frames}x{rig.num_views}x{args.size}x{args.size}x17, "
            f"coarse {bins}^3: per frame {per_frame.summary()}; MPJPE "
            f"{metrics.mpjpe(result['pose'], frames['joints3d']):.1f} mm")


if __name__ == "__main__":
  main()
