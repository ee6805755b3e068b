r"""--mode=video: a synchronized multi-camera recording in, 3D motion of every person out.

  python -m mf_tf.main --mode=video --workdir=runs/w \
      --config.video.session=../shared/data/pose2sim/Demo_MultiPerson

The recording is one of (`mf_tf.reconstruct.recording`):
  --config.video.session=DIR     a session laid out as Pose2Sim lays it out: DIR/videos/<camera>.mp4
                                 and DIR/calibration/ (the calibration file found there is used
                                 when config.video.rig is empty);
  --config.video.videos=A,B,...  one video file per camera (camera name = file stem);
  --config.video.frames_dir=DIR  one folder of synchronized images per camera.
The calibration (`config.video.rig`): any file `mf_tf.geometry.calibration_formats` reads
(canonical JSON, Panoptic JSON, OpenCV/anipose/Caliscope/Pose2Sim TOML, Qualisys .qca.txt,
EasyMocap intri.yml + extri.yml) or a built-in rig name; its cameras are taken by the
recording's camera names and fitted to the frames' size (`fit_to_image_size`).

The work is `mf_tf.reconstruct.session.reconstruct_session`, which runs
`mf_tf.reconstruct.pipeline` (detection only where a track is lost, landmarks, association, crop
fusion, robust triangulation, missed views recovered, identities, gap filling, filtering); this
edge reads the config (`session_settings`, shared with --mode=batch), opens the inputs, and
writes under <workdir>/video (or config.video.output_dir) what the pipeline's module docstring
lists: motion/person<N>.trc | .c3d | .csv, overlays/<camera>.mp4, skeleton.mp4, frames.jsonl,
tracks_raw.npz and summary.json.
"""

from __future__ import annotations

import os
import time

from keras.utils import Progbar

from mf_tf.reconstruct import people
from mf_tf.reconstruct import pipeline
from mf_tf.reconstruct import reconstructor
from mf_tf.reconstruct import recording as recording_lib
from mf_tf.reconstruct import session as session_lib

# `--mode=calibrate` and the benchmarks read a session's calibration through this edge.
load_rig = session_lib.load_rig


def open_input(settings) -> recording_lib.Recording:
  """The recording named by exactly one of config.video.session / videos / frames_dir."""
  given = {name: str(getattr(settings, name)).strip()
           for name in ("session", "videos", "frames_dir") if str(getattr(settings, name)).strip()}
  if len(given) != 1:
    raise ValueError(
        f"config.video: {sorted(given) or 'none'} given; expected exactly one of session (a "
        "Pose2Sim session folder), videos (comma-separated files, one per camera) or frames_dir "
        "(one image folder per camera)")
  (name, value), = given.items()
  if name == "videos":
    return recording_lib.open_recording(
        [os.path.expanduser(path.strip()) for path in value.split(",") if path.strip()])
  return recording_lib.open_recording(os.path.expanduser(value))


def models(workers: int) -> list:
  """One BlazePose per worker thread (0: one per CPU core): several workers run the views in
  parallel with one TFLite thread each, one worker runs each model on every core."""
  if workers < 0:
    raise ValueError(f"config.video.workers={workers}, expected >= 0 (0: one per CPU core)")
  return session_lib.load_models(workers)


def _filter_params(text: str) -> tuple:
  """"cutoff_hz=6,order=4" -> (("cutoff_hz", 6.0), ("order", 4))."""
  params = []
  for item in filter(None, (part.strip() for part in str(text).split(","))):
    key, _, value = item.partition("=")
    try:
      number = float(value)
    except ValueError:
      raise ValueError(f"config.video.filter_params item {item!r}: expected NAME=NUMBER") from None
    params.append((key.strip(), int(number) if number.is_integer() and "." not in value
                   else number))
  return tuple(params)


def session_settings(config) -> session_lib.SessionSettings:
  """The SessionSettings of config.video (and config.fusion's line), checked before any work.

  `--mode=video` and `--mode=batch` both build their settings here, so that one recording gives
  the same outputs through either.
  """
  settings = config.video
  instant = people.InstantSettings(
      fusion=settings.fusion, line_width_px=float(config.fusion.line_width_px),
      line_value=float(config.fusion.line_value), max_cost_px=float(settings.max_cost_px),
      min_score=float(settings.min_score), max_error_px=float(settings.max_error_px),
      bone_ratio_range=(float(settings.min_bone_ratio), float(settings.max_bone_ratio)))
  tracking_settings = reconstructor.TrackingSettings(
      redetect_every=int(settings.redetect_every), recover_views=bool(settings.recover_views),
      recovery_max_px=float(settings.recovery_max_px),
      max_distance_mm=float(settings.track_max_distance_mm),
      max_gap_frames=int(settings.max_gap_frames),
      min_track_frames=int(settings.min_track_frames),
      duplicate_distance_mm=float(settings.duplicate_distance_mm))
  output = pipeline.OutputSettings(
      overlays=bool(settings.overlays), overlay_scale=float(settings.overlay_scale),
      animation=bool(settings.animation), filter=str(settings.filter),
      filter_params=_filter_params(settings.filter_params),
      formats=tuple(part.strip() for part in str(settings.formats).split(",") if part.strip()))
  return session_lib.SessionSettings(
      rig=str(settings.rig), units=str(settings.units), start=int(settings.start),
      stop=int(settings.stop), stride=int(settings.stride), offsets=str(settings.offsets),
      fps=float(settings.fps), joint_set=str(settings.joint_set), instant=instant,
      tracking=tracking_settings, output=output)


def run(config, workdir: str) -> None:
  """--mode=video: reads config.video (see configs/default.py) and writes the outputs above."""
  settings = session_settings(config)
  output_dir = config.video.output_dir or os.path.join(workdir, "video")
  bar = None
  started = time.perf_counter()

  def progress(done, total, result):
    nonlocal bar
    bar = bar or Progbar(total, unit_name="frame")
    rate = done / max(time.perf_counter() - started, 1e-9)
    bar.update(done, values=[("people", len(result["people"])), ("frames/s", rate)])

  with open_input(config.video) as recording:
    summary = session_lib.reconstruct_session(
        recording, output_dir, settings, models=lambda: models(int(config.video.workers)),
        progress=progress)
  tracks = ", ".join(f"person{track}: {value['frames_seen']} frames"
                     for track, value in summary["tracks"].items()) or "none"
  print(f"video: {summary['frames']} frames at {summary['frames_per_second']:.2f} frames/s; "
        f"tracks {tracks}; median reprojection {summary['median_reprojection_error_px']} px; "
        f"outputs in {output_dir}")
