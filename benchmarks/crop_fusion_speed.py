r"""Time per call of the per-person crop fusion (`epipolar_fusion.epipolar_fuse`, NumPy).

  python -m benchmarks.crop_fusion_speed                   # h36m_S9, V = 2, 3, 4, 50 calls each
  python -m benchmarks.crop_fusion_speed --rig=h36m_S9 --reps=100 --views=4

The case the real-recording pipeline runs once per person and frame
(`mf_tf.reconstruct.people.fuse_person`): one person, 17 joints, seen by the first V cameras
of a rig, each view a 64 x 64 heatmap of its own square crop. The person is a random body-sized
cloud of joints (1.8 m tall) at the rig's axes meeting point; each crop is the box around its
projected joints grown by a quarter (`crops.roi_affine`), each heatmap a Gaussian peak of std
1.5 px per joint at the projected joint, and the fundamental matrices are the rig's composed
with the crop affines (`crops.crop_fundamental_matrix`, `ordered_pairs` order).

Printed per V: the median time per call and its spread (p95, min, max) over --reps calls after
one warm-up call, the calls in a row as the pipeline makes them (`benchmarks.timing`), and the
process's CPU time per call (warm-up included), which other processes' load on a shared machine
moves less than the wall-clock times (the NumPy path runs on one thread). Between runs a V
can take 3-4 ms longer a call throughout: glibc's malloc then hands the call's freed arrays back
to the system and every call faults them in again (which sizes it keeps depends on the largest
array freed so far). MALLOC_MMAP_THRESHOLD_=268435456 MALLOC_TRIM_THRESHOLD_=268435456 in the
environment remove that; set both, since setting one stops glibc adjusting the other (the trim
threshold alone left every array over 128 KiB to a fresh mapping: 4 views 23 ms a call). The goal
line is the pipeline's: at most 10 ms per person for 4 views (5 four-view instants per second
with 2 people leave the rest of each 200 ms to decoding, detection and triangulation).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from benchmarks import timing  # noqa: E402
from mf_tf.fusion import epipolar_fusion  # noqa: E402
from mf_tf.geometry import crops  # noqa: E402
from mf_tf.geometry import rigs  # noqa: E402
from mf_tf.geometry import volume  # noqa: E402
from mf_tf.geometry.rig import ordered_pairs  # noqa: E402

GOAL_MS = 10.0  # Per person and 4-view instant (module docstring).
HEATMAP_SIZE = 64  # BlazePose crop heatmaps.
CROP_MARGIN = 1.25  # Crop side over the projected joints' larger extent.


def person_case(rig, num_views: int, num_joints: int, rng) -> tuple[np.ndarray, np.ndarray]:
  """One person in the first `num_views` cameras of `rig`, as crop heatmaps.

  Returns:
    heatmaps [V, 64, 64, J] float32 and fundamental [V (V - 1), 3, 3] between the crops.
  """
  cameras = rig.cameras[:num_views]
  joints = volume.axes_meeting_point(rig) + rng.uniform(-1, 1, (num_joints, 3)) * [250, 250, 900]
  affines, peaks = [], []
  for camera in cameras:
    uv, _ = camera.project(joints, distort=False)
    low, high = uv.min(0), uv.max(0)
    affine = crops.roi_affine(0.5 * (low + high), CROP_MARGIN * np.max(high - low), 0.0,
                              HEATMAP_SIZE)
    affines.append(affine)
    peaks.append(crops.apply_affine(affine, uv))
  grid = np.arange(HEATMAP_SIZE)
  peaks = np.stack(peaks)  # [V, J, 2]
  heatmaps = np.exp(-((grid[None, None, :, None] - peaks[:, None, None, :, 0]) ** 2
                      + (grid[None, :, None, None] - peaks[:, None, None, :, 1]) ** 2)
                    / (2 * 1.5 ** 2)).astype(np.float32)
  fundamental = np.stack([crops.crop_fundamental_matrix(cameras[s], cameras[t], affines[s],
                                                        affines[t])
                          for s, t in ordered_pairs(num_views)])
  return heatmaps, fundamental


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rig", default="h36m_S9", help="Built-in rig name or rig file.")
  parser.add_argument("--views", type=int, nargs="+", default=[2, 3, 4])
  parser.add_argument("--joints", type=int, default=17)
  parser.add_argument("--reps", type=int, default=50)
  args = parser.parse_args()
  rig = rigs.get_rig(args.rig)
  if max(args.views) > rig.num_views or min(args.views) < 2:
    raise ValueError(f"--views {args.views}: expected 2 to {rig.num_views} for rig {args.rig}")
  rng = np.random.default_rng(0)
  medians = {}
  for num_views in args.views:
    heatmaps, fundamental = person_case(rig, num_views, args.joints, rng)
    start = time.process_time()
    result = timing.measure(lambda: epipolar_fusion.epipolar_fuse(heatmaps, fundamental),
                            args.reps)
    cpu = (time.process_time() - start) / (args.reps + 1)
    medians[num_views] = result.median
    print(f"{num_views} views, {HEATMAP_SIZE}x{HEATMAP_SIZE}, {args.joints} joints: "
          f"{result.summary(digits=2)}; CPU {1e3 * cpu:.2f} ms per call")
  if 4 in medians:
    timing.report_goal(f"crop fusion, 4 views {HEATMAP_SIZE}x{HEATMAP_SIZE}",
                       1e3 * medians[4], GOAL_MS, "ms")


if __name__ == "__main__":
  main()
