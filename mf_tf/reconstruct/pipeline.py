"""A recording in, 3D motion out: the per-frame loop and the files it writes.

    frames (streamed, `recording`) -> per view: landmarks in the crops carried from the previous
    frame, the person detector only where needed (`tracking.needs_detection`) -> association,
    crop fusion, robust triangulation (`people`) -> views recovered from 3D
    (`tracking.box_from_projection`) -> 3D identities (`tracking.Tracker`)
    -> after the last frame, per track: gaps filled and filtered (`filtering`) -> motion files

The per-frame part is `reconstructor.Reconstructor`; this module streams the frames through it
and writes the files.

Outputs under `output_dir` (written by `mf_tf.reconstruct.outputs`):
  frames.jsonl: one JSON object per processed frame (`frame_record`).
  motion/person<track>.trc | .c3d | .csv: per track seen in at least `min_track_frames` frames,
    filtered world positions (`motion_files`); TRC in metres with the world up as +Y.
  overlays/<camera>.mp4: each view with the people's fused 2D joints (dots) and their
    reprojected 3D skeleton (lines), one colour and number per track (`render`).
  skeleton.mp4: the filtered 3D skeletons, animated.
  tracks_raw.npz: the written tracks before gap filling and filtering (positions_<track>).
  summary.json: frames, frame rate, tracks (frames seen, gaps filled), detections per view
    before and after recovery, median reprojection error, the time of every stage.
Every file is written to a temporary name and renamed into place when complete.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import os
import queue
import threading
import time
from typing import Callable

import numpy as np

from mf_tf import files
from mf_tf.geometry.rig import Rig
from mf_tf.reconstruct import filtering
from mf_tf.reconstruct import outputs
from mf_tf.reconstruct import reconstructor as reconstructor_lib
from mf_tf.reconstruct import render

# Stages in frame order. "views" and "people" are the wall time of the parallel sections whose
# per-thread work is "detection" + "landmarks" and "fusion" + "triangulation".
STAGES = ("decode", "views", "detection", "landmarks", "association", "people", "fusion",
          "triangulation", "recovery", "tracking", "overlays", "filtering", "writing")
WALL_STAGES = ("decode", "views", "association", "people", "recovery", "tracking", "overlays",
               "filtering", "writing")


@dataclasses.dataclass(frozen=True)
class OutputSettings:
  """What `reconstruct_recording` writes (config.video's values;
  `mf_tf.modes.video.session_settings` builds them).

  Attributes:
    overlays: Write overlays/<camera>.mp4.
    overlay_scale: Overlay video size / image size (smaller encodes faster).
    animation: Write skeleton.mp4.
    filter: `filtering` method of the motion files ("none" writes the triangulated joints).
    filter_params: Its parameters (empty: the method's defaults).
    formats: Motion file formats among ("trc", "c3d", "csv").
  """

  overlays: bool
  overlay_scale: float
  animation: bool
  filter: str
  filter_params: tuple
  formats: tuple[str, ...]

  def __post_init__(self):
    if not 0 < self.overlay_scale <= 1:
      raise ValueError(f"overlay_scale {self.overlay_scale}, expected in (0, 1]")
    unknown = sorted(set(self.formats) - {"trc", "c3d", "csv"})
    if unknown:
      raise ValueError(f"motion formats {unknown}, expected some of ['trc', 'c3d', 'csv']")
    if self.filter not in filtering.FILTERS:
      raise ValueError(f"filter {self.filter!r}, expected one of {sorted(filtering.FILTERS)}")


def reconstruct_recording(frames, rig: Rig, reconstructor: reconstructor_lib.Reconstructor,
                          output_dir: str, *, fps: float, num_frames: int, output: OutputSettings,
                          progress: Callable[[int, dict], None] | None = None) -> dict:
  """Runs a recording through `reconstructor` and writes the outputs of the module docstring.

  Args:
    frames: Iterable of (index, key, [V images]) (`Recording.frames`), synchronized.
    rig: The views' cameras (image sizes checked against the frames).
    reconstructor: A fresh Reconstructor for this rig.
    output_dir: Folder of the outputs (created).
    fps: Frame rate of the frames given (after any stride).
    num_frames: How many frames `frames` yields (the motion arrays' length).
    output: OutputSettings.
    progress: Optional callback(frames done, the frame's result).

  Returns:
    The summary (also written as summary.json).
  """
  os.makedirs(output_dir, exist_ok=True)
  start = time.perf_counter()
  gathered = _process_frames(frames, rig, reconstructor, output_dir, fps=fps,
                             num_frames=num_frames, output=output, progress=progress)
  frames_seconds = time.perf_counter() - start
  return _write_outputs(gathered, rig, reconstructor, output_dir, fps=fps, output=output,
                        frames_seconds=frames_seconds, start=start)


class _Gathered:
  """What the frame loop keeps for the files written after the last frame.

  Args:
    num_frames: Frames announced (the motion arrays' length).
    num_joints: Joints of the output's joint set.
    num_views: Views of the rig.

  Attributes:
    positions: {track: [num_frames, J, 3] world mm, NaN where unseen}.
    errors: Every finite reprojection error of every person, px.
    per_frame: Per frame, {"key", "people", "tracks"}.
    detections: [V] poses found per view before recovery, summed over the frames.
    recovered: [V] poses added by recovery, summed over the frames.
    frames: Frames added so far.
  """

  def __init__(self, num_frames: int, num_joints: int, num_views: int):
    self.num_frames = num_frames
    self.num_joints = num_joints
    self.positions: dict[int, np.ndarray] = {}
    self.errors: list[float] = []
    self.per_frame: list[dict] = []
    self.detections = np.zeros(num_views, np.int64)
    self.recovered = np.zeros(num_views, np.int64)
    self.frames = 0

  def add(self, key: str, result: dict) -> None:
    """Adds one frame's `Reconstructor.step` result."""
    for person in result["people"]:
      track = self.positions.setdefault(
          person["track"], np.full((self.num_frames, self.num_joints, 3), np.nan))
      track[self.frames] = person["joints3d"]
      finite = person["errors"][np.isfinite(person["errors"])]
      self.errors.extend(finite.tolist())
    self.detections += result["detections"]
    self.recovered += result["recovered"]
    self.per_frame.append({"key": key, "people": len(result["people"]),
                           "tracks": [int(person["track"]) for person in result["people"]]})
    self.frames += 1


def _process_frames(frames, rig: Rig, reconstructor: reconstructor_lib.Reconstructor,
                    output_dir: str, *, fps: float, num_frames: int, output: OutputSettings,
                    progress: Callable[[int, dict], None] | None) -> _Gathered:
  """The frame loop: each frame's people, its line of frames.jsonl and its overlays.

  frames.jsonl and the overlay videos appear complete once the last frame is done, or not at
  all when a frame fails (arguments as `reconstruct_recording`'s).

  Returns:
    What the loop gathered for the files written after it.
  """
  timer = reconstructor.timer
  gathered = _Gathered(num_frames, reconstructor.joint_set.num_joints, rig.num_views)
  writers = {}
  pending = None
  with contextlib.ExitStack() as stack:
    lines = stack.enter_context(files.AtomicTextFile(os.path.join(output_dir, "frames.jsonl")))
    iterator = stack.enter_context(contextlib.closing(prefetch(frames)))
    # The overlay writers close after their thread has finished (an exit stack unwinds last in,
    # first out): complete videos on success, none on an error.
    video_writers = stack.enter_context(contextlib.ExitStack())
    overlay_thread = stack.enter_context(
        concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mf_tf_overlays"))
    while True:
      with timer.stage("decode"):
        item = next(iterator, None)
      if item is None:
        break
      index, key, images = item
      _check_sizes(images, rig, key)
      if gathered.frames >= num_frames:
        raise ValueError(f"the recording gave more than the {num_frames} frames announced")
      result = reconstructor.step(images)
      with timer.stage("writing"):
        lines.write(json.dumps(outputs.frame_record(index, key, rig, result)) + "\n")
      if output.overlays:
        # Drawn and encoded on a thread of their own while the next frame is processed (OpenCV
        # releases the interpreter lock); one frame in flight at most.
        with timer.stage("overlays"):
          if pending is not None:
            pending.result()
          pending = overlay_thread.submit(
              outputs.write_overlays, writers, video_writers, output_dir, rig, images, result,
              reconstructor.joint_set, fps, output.overlay_scale)
      gathered.add(key, result)
      if progress is not None:
        progress(gathered.frames, result)
    if pending is not None:
      with timer.stage("overlays"):
        pending.result()
  return gathered


def _write_outputs(gathered: _Gathered, rig: Rig, reconstructor: reconstructor_lib.Reconstructor,
                   output_dir: str, *, fps: float, output: OutputSettings, frames_seconds: float,
                   start: float) -> dict:
  """The files written after the last frame: motion files, tracks_raw.npz, skeleton.mp4 and,
  last, summary.json.

  Args:
    gathered: What the frame loop gathered.
    rig, reconstructor, output_dir, fps, output: As `reconstruct_recording`'s.
    frames_seconds: Wall time of the frame loop.
    start: `time.perf_counter()` when the recording started (the summary's "seconds").

  Returns:
    The summary.
  """
  joint_set, timer = reconstructor.joint_set, reconstructor.timer
  with timer.stage("filtering"):
    tracks = smooth_tracks(gathered.positions, fps, reconstructor.tracking, output)
  with timer.stage("writing"):
    written = outputs.write_motion_files(output_dir, tracks, joint_set, fps, rig, output.formats)
    outputs.write_raw_tracks(os.path.join(output_dir, "tracks_raw.npz"), gathered.positions,
                             tracks, joint_set, fps)
    if output.animation and tracks:
      render.write_skeleton_animation(
          os.path.join(output_dir, "skeleton.mp4"),
          {track: value["positions"] for track, value in tracks.items()}, joint_set.limbs, fps,
          up=rig.up)
  summary = outputs.summary(tracks, written, gathered.positions, rig, joint_set, output.filter,
                            fps, gathered.frames, frames_seconds, time.perf_counter() - start,
                            gathered.detections, gathered.recovered, gathered.errors,
                            {name: timer.seconds.get(name, 0.0) for name in STAGES},
                            gathered.per_frame)
  files.write_atomic(os.path.join(output_dir, "summary.json"), json.dumps(summary, indent=1))
  return summary


def smooth_tracks(positions: dict, fps: float,
                  tracking_settings: reconstructor_lib.TrackingSettings,
                  output: OutputSettings) -> dict:
  """The tracks worth writing, gaps filled and filtered.

  Args:
    positions: {track: [T, J, 3] world mm, NaN where unseen}.
    fps: Their frame rate.
    tracking_settings: `min_track_frames` (shorter tracks are left out) and `max_gap_frames`
      (longer gaps stay NaN).
    output: The filter and its parameters.

  Returns:
    {track: {"positions": [T, J, 3] filtered mm, "seen": [T] bool, "filled": [T, J, 3] bool}}.
  """
  tracks = {}
  for track, track_positions in sorted(positions.items()):
    seen = np.isfinite(track_positions).all(axis=-1).any(axis=-1)
    if seen.sum() < tracking_settings.min_track_frames:
      continue
    filled, filled_mask = filtering.fill_gaps(track_positions, tracking_settings.max_gap_frames)
    smooth = filtering.filter_track(filled, fps, output.filter, **dict(output.filter_params))
    tracks[track] = {"positions": smooth, "seen": seen, "filled": filled_mask}
  return tracks


def prefetch(items, depth: int = 2):
  """Yields `items` while a background thread reads up to `depth` ahead (decoding the next
  frames while this one is processed: OpenCV's decoder releases the interpreter lock). An
  exception of the reader is raised here, at the item it failed on; closing the generator stops
  the reader."""
  buffer = queue.Queue(maxsize=depth)
  stop = threading.Event()
  done = object()

  def read():
    try:
      for item in items:
        while not stop.is_set():
          try:
            buffer.put((item, None), timeout=0.1)
            break
          except queue.Full:
            continue
        if stop.is_set():
          return
      buffer.put((done, None))
    except BaseException as error:  # Handed to the consumer, raised there.
      buffer.put((done, error))

  reader = threading.Thread(target=read, name="mf_tf_decode", daemon=True)
  reader.start()
  try:
    while True:
      item, error = buffer.get()
      if error is not None:
        raise error
      if item is done:
        return
      yield item
  finally:
    stop.set()
    reader.join(timeout=5)


def _check_sizes(images, rig: Rig, key: str) -> None:
  for image, camera in zip(images, rig.cameras):
    height, width = image.shape[:2]
    if (width, height) != (int(camera.width), int(camera.height)):
      raise ValueError(f"frame {key!r} of camera {camera.name!r} is {width}x{height}, expected "
                       f"{int(camera.width)}x{int(camera.height)} (the calibration's image size)")
