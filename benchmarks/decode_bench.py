r"""Video decoding speed and memory: OpenCV against PyAV, on real multi-camera recordings.

  python -m benchmarks.decode_bench [--videos_dir=/path/to/Demo_MultiPerson/videos] [--reps=2]

Every video of `--videos_dir` (default: Pose2Sim's Demo_MultiPerson, 4 cameras x 100 frames of
1088 x 1920 H.264 at 60 fps) is decoded to [H, W, 3] uint8 RGB arrays, one camera after the
other, each frame dropped once decoded (as `mf_tf.reconstruct.recording` streams them):
  opencv      `cv2.VideoCapture.read` and `cv2.cvtColor(BGR -> RGB)`.
  pyav        `av.open`, `container.decode(video=0)`, `frame.to_ndarray(format="rgb24")`, the
              stream's default threading.
  pyav_auto   the same with `stream.thread_type = "AUTO"` (frame and slice threads).
Each case runs in a fresh subprocess (no case sees another's allocations, threads or caches).
Printed per case: frames decoded, frames/s (the best of --reps passes over all videos) and the
peak resident-set growth during the first pass (VmHWM minus the RSS just before it, from
/proc/self/status, in MB); then each PyAV case's speed over OpenCV's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

_DEFAULT_VIDEOS = "/work/shared/data/pose2sim/Demo_MultiPerson/videos"
_CASES = ("opencv", "pyav", "pyav_auto")
_VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv")


def _status(field: str) -> int:
  """A /proc/self/status memory field in bytes."""
  with open("/proc/self/status") as status:
    for line in status:
      if line.startswith(field + ":"):
        return int(line.split()[1]) * 1024
  raise KeyError(field)


def _reset_peak():
  """Resets VmHWM to the current RSS (Linux >= 4.0)."""
  with open("/proc/self/clear_refs", "w") as clear_refs:
    clear_refs.write("5")


def _decode_opencv(path: str) -> int:
  import cv2  # pylint: disable=g-import-not-at-top
  capture = cv2.VideoCapture(path)
  if not capture.isOpened():
    raise ValueError(f"OpenCV cannot open {path!r}")
  count = 0
  while True:
    ok, frame = capture.read()
    if not ok:
      break
    cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    count += 1
  capture.release()
  return count


def _decode_pyav(path: str, thread_type: str | None) -> int:
  import av  # pylint: disable=g-import-not-at-top
  count = 0
  with av.open(path) as container:
    stream = container.streams.video[0]
    if thread_type is not None:
      stream.thread_type = thread_type
    for frame in container.decode(stream):
      frame.to_ndarray(format="rgb24")
      count += 1
  return count


def _run_case(case: str, paths: list[str], reps: int) -> dict:
  """Decodes every video `reps` times in this process; speed and peak memory growth."""
  import av  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  import cv2  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  decode = {"opencv": _decode_opencv,
            "pyav": lambda path: _decode_pyav(path, None),
            "pyav_auto": lambda path: _decode_pyav(path, "AUTO")}[case]
  rss_before = _status("VmRSS")
  _reset_peak()
  best = float("inf")
  frames = 0
  peak_growth = 0
  for rep in range(reps):
    start = time.perf_counter()
    frames = sum(decode(path) for path in paths)
    best = min(best, time.perf_counter() - start)
    if rep == 0:
      peak_growth = _status("VmHWM") - rss_before
  return {"case": case, "frames": frames, "fps": frames / best, "peak_growth_mb": peak_growth / 1e6}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--videos_dir", default=_DEFAULT_VIDEOS)
  parser.add_argument("--reps", type=int, default=2)
  parser.add_argument("--case", choices=_CASES, help=argparse.SUPPRESS)  # the child's role
  args = parser.parse_args(argv)
  if not os.path.isdir(args.videos_dir):
    raise SystemExit(f"--videos_dir {args.videos_dir!r} is not a folder; expected a folder of "
                     f"videos ({', '.join(_VIDEO_EXTENSIONS)})")
  paths = sorted(os.path.join(args.videos_dir, name) for name in os.listdir(args.videos_dir)
                 if os.path.splitext(name)[1].lower() in _VIDEO_EXTENSIONS)
  if not paths:
    raise SystemExit(f"--videos_dir {args.videos_dir!r} holds no video ({_VIDEO_EXTENSIONS})")
  if args.case:
    print(json.dumps(_run_case(args.case, paths, args.reps)))
    return
  results = {}
  for case in _CASES:
    output = subprocess.run(
        [sys.executable, "-m", "benchmarks.decode_bench", f"--videos_dir={args.videos_dir}",
         f"--reps={args.reps}", f"--case={case}"],
        check=True, capture_output=True, text=True).stdout
    results[case] = json.loads(output.strip().splitlines()[-1])
  print(f"{len(paths)} videos in {args.videos_dir}, best of {args.reps} passes, "
        f"{os.cpu_count()} CPU cores")
  print(f"{'case':<10} {'frames':>7} {'frames/s':>9} {'peak RSS growth MB':>19}")
  for case, result in results.items():
    print(f"{case:<10} {result['frames']:>7} {result['fps']:>9.1f} "
          f"{result['peak_growth_mb']:>19.1f}")
  for case in ("pyav", "pyav_auto"):
    print(f"{case} / opencv speed: {results[case]['fps'] / results['opencv']['fps']:.2f}")


if __name__ == "__main__":
  main()
