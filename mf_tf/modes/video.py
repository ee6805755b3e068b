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

The work is `mf_tf.reconstruct.pipeline` (detection only where a track is lost, landmarks,
association, crop fusion, robust triangulation, missed views recovered, identities, gap filling,
filtering); this edge reads the config, opens the inputs, and writes under <workdir>/video (or
config.video.output_dir) what the pipeline's module docstring lists: motion/person<N>.trc | .c3d
| .csv, overlays/<camera>.mp4, skeleton.mp4, frames.jsonl and summary.json.
"""

from __future__ import annotations

import os
import time

import numpy as np
from absl import logging
from keras.utils import Progbar

from mf_tf.geometry import calibration_formats
from mf_tf.geometry import rigs
from mf_tf.geometry.camera import CalibrationError
from mf_tf.geometry.rig import Rig
from mf_tf.models import blazepose
from mf_tf.reconstruct import filtering
from mf_tf.reconstruct import people
from mf_tf.reconstruct import pipeline
from mf_tf.reconstruct import recording as recording_lib

# Frame rate assumed for image folders, which carry none (config.video.fps overrides).
DEFAULT_FOLDER_FPS = 30.0


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


def load_rig(spec: str, recording: recording_lib.Recording, units: str = "") -> Rig:
  """The calibrated cameras of the recording, in its camera order, fitted to its frame sizes.

  Args:
    spec: A calibration file (any supported format), a built-in rig name, or empty for the
      session's calibration file.
    recording: The recording.
    units: Unit of a TOML/EasyMocap file's translations when it cannot be told ("" : told).

  Raises:
    ValueError (CalibrationError): no calibration, cameras missing from it, a size that no crop
      or resize explains.
  """
  cameras = recording.camera_names
  spec = os.path.expanduser(spec) if spec else recording.calibration_path
  if not spec:
    raise CalibrationError(
        f"no calibration for the recording {recording.source!r}: set config.video.rig to a "
        "calibration file (canonical JSON, Panoptic JSON, TOML, Qualisys .qca.txt, EasyMocap "
        "intri.yml/extri.yml) or put one in the session's calibration/ folder")
  if os.path.exists(spec):
    # EasyMocap files carry no image size: the frames give it. Other formats are fitted to the
    # frames below, once their camera names are checked.
    easymocap = calibration_formats.detect_format(spec) == "easymocap"
    full = calibration_formats.read_calibration(
        spec, image_sizes=recording.frame_sizes if easymocap else None, units=units or None)
  elif os.sep in spec or "." in os.path.basename(spec):
    raise FileNotFoundError(f"calibration file {spec!r} not found")
  else:
    full = rigs.get_rig(spec)
  available = list(full.camera_names)
  missing = [camera for camera in cameras if camera not in available]
  if missing:
    raise CalibrationError(
        f"cameras {missing} of the recording {recording.source!r} are not in calibration {spec!r} "
        f"(its cameras: "
        f"{available[:8]}{' ...' if len(available) > 8 else ''}); expected one calibrated camera "
        "per video or image folder, with the same name")
  rig = full.subset([available.index(camera) for camera in cameras], name=full.name)
  unrecorded = [camera for camera in available if camera not in cameras]
  if unrecorded:
    logging.warning("calibration %r: cameras %s have no video or image folder in %r; "
                    "reconstructing from the other %d cameras %s", spec, unrecorded,
                    recording.source, len(cameras), list(cameras))
  return calibration_formats.fit_to_image_size(rig, recording.frame_sizes)


def models(workers: int) -> list[blazepose.BlazePose]:
  """One BlazePose per worker thread (0: one per CPU core): several workers run the views in
  parallel with one TFLite thread each, one worker runs each model on every core."""
  cores = os.cpu_count() or 1
  if workers < 0:
    raise ValueError(f"config.video.workers={workers}, expected >= 0 (0: one per CPU core)")
  workers = workers or cores
  if workers == 1:
    return [blazepose.BlazePose(num_threads=cores)]
  return [blazepose.BlazePose(num_threads=1) for _ in range(workers)]


def _offsets(text: str, cameras) -> dict[str, int]:
  """"cam01:2,cam03:-1" -> {"cam01": 2, "cam03": -1}."""
  offsets = {}
  for item in filter(None, (part.strip() for part in str(text).split(","))):
    camera, _, value = item.partition(":")
    if camera not in cameras or not value.strip().lstrip("-").isdigit():
      raise ValueError(f"config.video.offsets item {item!r}: expected CAMERA:FRAMES with a camera "
                       f"of {list(cameras)} and an integer")
    offsets[camera] = int(value)
  return offsets


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


def run(config, workdir: str) -> None:
  """--mode=video: reads config.video (see configs/default.py) and writes the outputs above."""
  settings = config.video
  instant = people.InstantSettings(
      fusion=settings.fusion, line_width_px=float(config.fusion.line_width_px),
      line_value=float(config.fusion.line_value), max_cost_px=float(settings.max_cost_px),
      min_score=float(settings.min_score), max_error_px=float(settings.max_error_px),
      bone_ratio_range=(float(settings.min_bone_ratio), float(settings.max_bone_ratio)))
  tracking_settings = pipeline.TrackingSettings(
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
  if output.filter_params:  # Bad names or values fail here, before any decoding.
    filtering.filter_track(np.zeros((64, 1, 3)), 60.0, output.filter,
                           **dict(output.filter_params))
  stride, start = int(settings.stride), int(settings.start)
  if stride < 1 or start < 0 or int(settings.stop) < 0:
    raise ValueError(f"config.video start={start}, stop={settings.stop}, stride={stride}: "
                     "expected start >= 0, stop >= 0 (0: to the end) and stride >= 1")
  with open_input(settings) as recording:
    rig = load_rig(str(settings.rig), recording, str(settings.units))
    fps = recording.fps or float(settings.fps) or DEFAULT_FOLDER_FPS
    offsets = _offsets(settings.offsets, recording.camera_names)
    stop = int(settings.stop) or None
    frames = recording.frames(start=start, stop=stop, stride=stride, offsets=offsets)
    last = stop if stop is not None else recording.num_frames - max([0, *offsets.values()])
    num_frames = len(range(start, min(last, recording.num_frames), stride))
    output_dir = settings.output_dir or os.path.join(workdir, "video")
    logging.info("video: %s, %d frames x %d cameras %s at %.3g fps, fusion=%s -> %s", recording,
                 num_frames, len(rig.cameras), rig.camera_names, fps / stride, instant.fusion,
                 output_dir)
    reconstructor = pipeline.Reconstructor(models(int(settings.workers)), rig,
                                           settings.joint_set, instant, tracking_settings)
    bar = Progbar(num_frames, unit_name="frame")
    started = time.perf_counter()

    def progress(done, result):
      rate = done / max(time.perf_counter() - started, 1e-9)
      bar.update(done, values=[("people", len(result["people"])), ("frames/s", rate)])

    try:
      summary = pipeline.reconstruct_recording(
          frames, rig, reconstructor, output_dir, fps=fps / stride, num_frames=num_frames,
          output=output, progress=progress)
    finally:
      reconstructor.close()
  tracks = ", ".join(f"person{track}: {value['frames_seen']} frames"
                     for track, value in summary["tracks"].items()) or "none"
  print(f"video: {summary['frames']} frames at {summary['frames_per_second']:.2f} frames/s; "
        f"tracks {tracks}; median reprojection {summary['median_reprojection_error_px']} px; "
        f"outputs in {output_dir}")
