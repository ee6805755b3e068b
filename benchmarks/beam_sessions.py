r"""Many sessions: the Beam pipeline (--mode=batch) against the one-session command, one by one.

  pip install -e ".[beam]"
  python -m benchmarks.beam_sessions --copies=1,4,8 [--frames=6] [--workers=2]

N copies of a short session (tests/fixtures/pose2sim_clips, 4 views 1088 x 1920, 60 fps; its
first --frames frames) are reconstructed with --mode=video's default outputs (motion files,
overlays, skeleton animation; tracks of 3 frames and more written) three ways, each a command
in a fresh process tree:
  cli    `python -m mf_tf.main --mode=video` once per session, one after another (every run
         imports TensorFlow and loads BlazePose; each uses every core on the views);
  loop   one process reconstructing the sessions in turn (`reconstruct_session` in a loop, the
         models loaded once): the same work without the start-up of each command;
  beam   `python -m mf_tf.main --mode=batch` with config.batch.workers processes on the
         DirectRunner (each loads BlazePose once and takes sessions one at a time).
Printed per N and way: wall time of the command, the time spent reconstructing (the sum of the
sessions' summary.json "seconds": frame loop, filtering and writing; the rest of the wall time
is start-up: imports, models, Beam), sessions per minute, speed-up over cli, peak resident
memory of the process tree (the sum over the process and its children, sampled every 0.1 s with
psutil) and whether every session's files are byte for byte those of cli (summary.json without
its timings; the batch's completion markers aside). The machine's other load shows in every
figure: compare the ways within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import psutil  # Installed with tensorflow-datasets.

_REPO = pathlib.Path(__file__).resolve().parent.parent
_SESSION = _REPO / "tests" / "fixtures" / "pose2sim_clips"
_TIMINGS = ("seconds", "frames_per_second", "stage_seconds")
_MARKERS = (".mf_tf_output", ".mf_tf_session_done.json")


def _video_overrides(frames: int) -> list[str]:
  return [f"--config.video.stop={frames}", "--config.video.min_track_frames=3"]


def _run_measured(command: list[str]) -> tuple[float, int]:
  """Runs `command`; returns (wall seconds, peak RSS bytes of its process tree)."""
  started = time.perf_counter()
  process = subprocess.Popen(command, cwd=_REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
  peak = 0
  done = threading.Event()

  def sample():
    nonlocal peak
    root = psutil.Process(process.pid)
    while not done.is_set():
      total = 0
      try:
        for member in [root, *root.children(recursive=True)]:
          try:
            total += member.memory_info().rss
          except psutil.Error:
            pass
      except psutil.Error:
        pass
      peak = max(peak, total)
      done.wait(0.1)

  sampler = threading.Thread(target=sample, daemon=True)
  sampler.start()
  _, stderr = process.communicate()
  seconds = time.perf_counter() - started
  done.set()
  sampler.join()
  if process.returncode != 0:
    raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}):\n{stderr[-3000:]}")
  return seconds, peak


def _outputs(folder: pathlib.Path) -> dict[str, bytes]:
  """A session's files, summary.json without its timings, markers left out."""
  files = {}
  for path in sorted(folder.rglob("*")):
    name = str(path.relative_to(folder))
    if not path.is_file() or name in _MARKERS:
      continue
    data = path.read_bytes()
    if name == "summary.json":
      summary = json.loads(data)
      for key in _TIMINGS:
        summary.pop(key)
      data = json.dumps(summary, sort_keys=True).encode()
    files[name] = data
  return files


def _loop(sessions_root: str, output_root: str, frames: int) -> None:
  """The loop way, in its own process: each session through `reconstruct_session` in turn."""
  # pylint: disable=import-outside-toplevel  (TensorFlow only in this child)
  from configs import default
  from mf_tf.modes import video
  from mf_tf.pipelines import sessions as sessions_lib
  from mf_tf.reconstruct import recording as recording_lib
  from mf_tf.reconstruct import session as session_lib

  config = default.get_config()
  config.video.stop = frames
  config.video.min_track_frames = 3
  settings = video.session_settings(config)
  models = session_lib.load_models(0)  # As the command: every core on the views.
  for name, path in sessions_lib.find_sessions(sessions_root):
    with recording_lib.open_recording(path) as recording:
      session_lib.reconstruct_session(recording, os.path.join(output_root, name), settings,
                                      models=models)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--copies", default="1,4,8", help="Comma-separated session counts.")
  parser.add_argument("--frames", type=int, default=6, help="Frames of each session.")
  parser.add_argument("--workers", type=int, default=2, help="Beam worker processes.")
  parser.add_argument("--ways", default="cli,loop,beam", help="Which of cli, loop, beam to run.")
  parser.add_argument("--loop", nargs=2, metavar=("SESSIONS", "OUTPUT"), help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.loop:
    _loop(*args.loop, args.frames)
    return
  ways = [way for way in ("cli", "loop", "beam") if way in args.ways.split(",")]
  python = sys.executable
  print(f"{_SESSION.name}: first {args.frames} frames x 4 views per session; {os.cpu_count()} "
        f"cores; beam: {args.workers} workers\n")
  print("| sessions | way | wall s | reconstructing s | sessions/min | speed-up vs cli | "
        "peak RSS (MiB) | outputs identical |\n|---:|---|---:|---:|---:|---:|---:|---|")
  for copies in [int(value) for value in args.copies.split(",")]:
    with tempfile.TemporaryDirectory(prefix="beam_sessions_") as scratch:
      scratch = pathlib.Path(scratch)
      names = [f"session{index:02d}" for index in range(copies)]
      for name in names:
        shutil.copytree(_SESSION, scratch / "sessions" / name)
      folders, measured = {}, {}
      for way in ways:
        if way == "cli":
          seconds = peak = 0
          for name in names:
            run_seconds, run_peak = _run_measured(
                [python, "-m", "mf_tf.main", "--mode=video", f"--workdir={scratch / 'cli' / name}",
                 f"--config.video.session={scratch / 'sessions' / name}",
                 *_video_overrides(args.frames)])
            seconds, peak = seconds + run_seconds, max(peak, run_peak)
          folders[way] = {name: scratch / "cli" / name / "video" for name in names}
        elif way == "loop":
          seconds, peak = _run_measured(
              [python, "-m", "benchmarks.beam_sessions", f"--frames={args.frames}", "--loop",
               str(scratch / "sessions"), str(scratch / "loop")])
          folders[way] = {name: scratch / "loop" / name for name in names}
        else:
          seconds, peak = _run_measured(
              [python, "-m", "mf_tf.main", "--mode=batch", f"--workdir={scratch / 'beam'}",
               f"--config.batch.sessions_root={scratch / 'sessions'}",
               f"--config.batch.workers={args.workers}", *_video_overrides(args.frames)])
          folders[way] = {name: scratch / "beam" / "batch" / name for name in names}
        measured[way] = (seconds, peak)
      reference = folders.get("cli")
      for way in ways:
        seconds, peak = measured[way]
        speedup = (f"{measured['cli'][0] / seconds:.2f}x" if "cli" in measured else "-")
        same = ("(reference)" if way == "cli" else "-" if reference is None else
                "yes" if all(_outputs(folders[way][name]) == _outputs(reference[name])
                             for name in names) else "NO")
        working = sum(json.loads((folders[way][name] / "summary.json").read_text())["seconds"]
                      for name in names)
        print(f"| {copies} | {way} | {seconds:.1f} | {working:.1f} | {copies / seconds * 60:.1f} | "
              f"{speedup} | {peak / 2**20:.0f} | {same} |", flush=True)


if __name__ == "__main__":
  main()
