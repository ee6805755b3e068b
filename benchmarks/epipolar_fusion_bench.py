r"""Epipolar-line fusion (per-frame geometry) against the dense materialized calibrated fusion.

  python -m benchmarks.epipolar_fusion_bench                # 4 views (H36M rig), 64x64, 17 joints
  python -m benchmarks.epipolar_fusion_bench --size=32 --reps=10

Both paths compute the calibrated MetaFuse^0 fusion (line base, line_width_px 1, value 0.3):
  epipolar: `epipolar_fusion.epipolar_fuse`, build (line plan from the fundamental matrices) +
    apply, per call: what a person crop with new geometry every frame costs.
  dense: `AffineFusion` with `calibrated.calibrated_parameters`, materialized once to
    [P, HW, HW] (build time printed separately) and applied by `ops.fuse` (apply only, compiled).
Times are medians (and min) over --reps calls after a warm-up call (tracing, XLA compilation); the
ratio is dense apply / epipolar build + apply, measured in this run. Also printed: the largest
message difference relative to the dense message peak, and the share of equal argmaxes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from mf_tf.fusion import calibrated  # noqa: E402
from mf_tf.fusion import epipolar_fusion  # noqa: E402
from mf_tf.fusion import layers  # noqa: E402
from mf_tf.fusion import ops  # noqa: E402
from mf_tf.geometry import epipolar  # noqa: E402
from mf_tf.geometry import rigs  # noqa: E402


def _times(function, reps: int) -> list[float]:
  function()  # Warm-up: tracing and compilation.
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    function()
    times.append(time.perf_counter() - start)
  return times


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", type=int, default=64, help="Heatmap side in pixels.")
  parser.add_argument("--joints", type=int, default=17)
  parser.add_argument("--reps", type=int, default=30)
  parser.add_argument("--num_lines", type=int, default=None,
                      help="Pencil lines per pair (default: epipolar_fusion.default_num_lines).")
  args = parser.parse_args()
  rig = rigs.get_rig("h36m")
  size, num_views = args.size, rig.num_views
  fundamental = epipolar.pair_fundamental_matrices(rig, size)
  rng = np.random.default_rng(0)
  grid = np.arange(size)
  points = rng.uniform(4, size - 5, (num_views, args.joints, 2))
  heatmaps = np.exp(-((grid[None, None, :, None] - points[:, None, None, :, 0]) ** 2
                      + (grid[None, :, None, None] - points[:, None, None, :, 1]) ** 2) / 4.5)
  heatmaps = tf.constant(heatmaps.astype(np.float32))  # [V, H, W, J]
  num_lines = epipolar_fusion.default_num_lines(size, args.num_lines)

  def run_epipolar():
    return epipolar_fusion.epipolar_fuse(heatmaps, fundamental, num_lines=num_lines).numpy()

  epipolar_times = _times(run_epipolar, args.reps)

  start = time.perf_counter()
  layer = layers.AffineFusion(num_views, size)
  layer.assign_parameters(*calibrated.calibrated_parameters(rig, size, 1.0, 0.3))
  matrices = tf.constant(layer.materialize().matrices)
  dense_build = time.perf_counter() - start
  dense_apply = tf.function(lambda h: ops.fuse(h[None], matrices)[0], jit_compile=True)
  dense_times = _times(lambda: dense_apply(heatmaps).numpy(), max(3, args.reps // 3))

  fused, dense = run_epipolar(), dense_apply(heatmaps).numpy()
  message, dense_message = fused - heatmaps.numpy(), dense - heatmaps.numpy()
  error = np.abs(message - dense_message).max() / np.abs(dense_message).max()
  flat = lambda x: x.reshape(num_views, -1, args.joints)  # noqa: E731
  same = np.mean(flat(fused).argmax(1) == flat(dense).argmax(1))
  median_epipolar, median_dense = statistics.median(epipolar_times), statistics.median(
      dense_times)
  print(f"{num_views} views, {size}x{size}, {args.joints} joints, {num_lines} lines per pair")
  print(f"epipolar build + apply: median {1e3 * median_epipolar:.2f} ms "
        f"(min {1e3 * min(epipolar_times):.2f}) over {len(epipolar_times)} calls")
  print(f"dense apply (materialized): median {1e3 * median_dense:.2f} ms "
        f"(min {1e3 * min(dense_times):.2f}); materializing took {dense_build:.1f} s and "
        f"{matrices.shape.num_elements() * 4 / 2 ** 20:.0f} MiB")
  print(f"ratio dense apply / epipolar build + apply: {median_dense / median_epipolar:.2f}")
  print(f"largest message difference: {100 * error:.2f} % of the dense peak; "
        f"equal argmax: {100 * same:.1f} % of channels")


if __name__ == "__main__":
  main()
