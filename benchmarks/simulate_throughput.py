"""Throughput of the synthetic world: four-view frames per second, heatmaps only and rendered.

  python -m benchmarks.simulate_throughput [--frames=500] [--render_frames=8] [--repeats=5]
  python -m benchmarks.simulate_throughput --frames=50 --render_frames=2 --repeats=2  # quick look

Shapes: the Human3.6M rig (4 views), h36m17 (17 joints), 64 x 64 detector heatmaps, 256 x 256
rendered images. Prints the median and spread of absolute times over repeats (each after one
warm-up call), the cost of each stage, and the ratio of the rendered to the heatmap-only cost per
frame; the three `simulate_frames` variants are timed interleaved (`benchmarks.timing`), and the
ratio is the median of the per-repetition ratios of this run.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from benchmarks import timing  # noqa: E402
from mf_tf.data import body, detector, skeleton, world  # noqa: E402
from mf_tf.geometry import rigs  # noqa: E402


def _describe(name: str, result: timing.Timing, frames: int) -> timing.Timing:
  per_frame = result.per(frames)
  print(f"{name:<34s} {1 / per_frame.median:9.1f} frames/s   {per_frame.summary('ms', 3)} "
        "per frame")
  return per_frame


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--frames", type=int, default=500)
  parser.add_argument("--render_frames", type=int, default=8)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--rig", default="h36m")
  parser.add_argument("--heatmap_size", type=int, default=64)
  parser.add_argument("--image_size", type=int, default=256)
  args = parser.parse_args()

  rig = rigs.get_rig(args.rig)
  n, size = args.frames, args.heatmap_size
  print(f"rig {rig.name}: {rig.num_views} views, h36m17 (17 joints), heatmaps {size}x{size}, "
        f"images {args.image_size}x{args.image_size}, {n} frames per heatmap run, "
        f"{args.render_frames} per rendered run, {os.cpu_count()} CPUs")
  seeds = iter(range(1, 10_000))
  m = args.render_frames
  simulations = timing.interleave({
      "heatmaps": lambda: world.simulate_frames(rig, n, seed=next(seeds), heatmap_size=size),
      "compact": lambda: world.simulate_frames(rig, n, seed=next(seeds), heatmap_size=size,
                                               return_heatmaps=False),
      "rendered": lambda: world.simulate_frames(rig, m, seed=next(seeds), heatmap_size=size,
                                                render_images=True, image_size=args.image_size),
  }, {"heatmaps": args.repeats, "compact": args.repeats, "rendered": max(1, args.repeats // 2)})
  heatmap = _describe("simulate_frames (heatmaps)", simulations["heatmaps"], n)
  _describe("simulate_frames (compact state)", simulations["compact"], n)

  # Stages, on one draw.
  rng = np.random.default_rng(0)
  center, half, up, floor = world.rig_volume(rig)
  poses = skeleton.sample_poses(rng, n, center, half, up, floor)
  _describe("  stage: sample_poses", timing.measure(
      lambda: skeleton.sample_poses(rng, n, center, half, up, floor), args.repeats), n)
  _describe("  stage: visibility (all views)", timing.measure(
      lambda: [body.visibility(camera, poses) for camera in rig.cameras], args.repeats), n)
  joints2d = world.project_to_heatmap(rig, poses, size)
  visible = np.stack([body.visibility(camera, poses) for camera in rig.cameras], axis=1)
  params = detector.DetectorParams().scaled(size)
  _describe("  stage: sample_detections", timing.measure(
      lambda: detector.sample_detections(rng, joints2d, visible, "h36m17", params), args.repeats),
      n)
  state = detector.sample_detections(rng, joints2d, visible, "h36m17", params)
  _describe("  stage: render_heatmaps (TF)", timing.measure(
      lambda: world.render_detector_heatmaps(state["peaks"], state["amplitudes"],
                                             state["noise_seed"], size, params), args.repeats), n)

  rendered = _describe(f"simulate_frames (+ images {args.image_size})", simulations["rendered"],
                       m)
  print(f"ratio rendered / heatmap-only cost per frame (paired): "
        f"{timing.paired_ratio(rendered, heatmap):.1f}x")


if __name__ == "__main__":
  main()
