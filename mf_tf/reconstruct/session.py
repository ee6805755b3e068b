"""One recording in, its outputs out: the settings and the run shared by every way in.

`reconstruct_session` is the whole work of one recording: its calibration loaded and fitted to
the frames (`load_rig`), the frames streamed (start, stop, stride, per-camera offsets), one
`reconstructor.Reconstructor` run through `pipeline.reconstruct_recording`, which writes the files
of `pipeline`'s module docstring under the output folder. `--mode=video` runs it on one recording;
`mf_tf.pipelines.batch` runs it on every session of a folder, each in a worker; both build the
same `SessionSettings` from config.video (`mf_tf.modes.video.session_settings`), so a session
gives the same files either way. Messages name the config.video key behind a bad value.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Sequence

import numpy as np
from absl import logging

from mf_tf.geometry import calibration_formats
from mf_tf.geometry import rigs
from mf_tf.geometry.camera import CalibrationError
from mf_tf.geometry.rig import Rig
from mf_tf.models import blazepose
from mf_tf.reconstruct import filtering
from mf_tf.reconstruct import people
from mf_tf.reconstruct import pipeline
from mf_tf.reconstruct import reconstructor as reconstructor_lib
from mf_tf.reconstruct import recording as recording_lib

# Frame rate assumed for image folders, which carry none (SessionSettings.fps overrides).
DEFAULT_FOLDER_FPS = 30.0


@dataclasses.dataclass(frozen=True)
class SessionSettings:
  """Everything that turns one recording into motion files, besides the inputs and the output
  folder (the fields of config.video of the same names; `mf_tf.modes.video.session_settings`
  builds them).

  Attributes:
    rig: Calibration file (any format `calibration_formats` reads) or built-in rig name; empty:
      the recording's own calibration file (a session's calibration/ folder).
    units: Unit of a TOML/EasyMocap file's translations when it cannot be told ("": told).
    start: First frame read.
    stop: Frame to stop before; 0: the end of the shortest camera.
    stride: Every n-th frame (the outputs' frame rate is fps / stride).
    offsets: "cam01:2,cam03:-1": camera c's frame i + k shows instant i.
    fps: Frame rate of image folders (they carry none); 0: DEFAULT_FOLDER_FPS. Videos: theirs.
    joint_set: Joint set of the outputs (name, `mf_tf.data.joints`).
    instant: `people.InstantSettings` (association, fusion, triangulation).
    tracking: `reconstructor.TrackingSettings`.
    output: `pipeline.OutputSettings` (files written, filter).
  """

  rig: str
  units: str
  start: int
  stop: int
  stride: int
  offsets: str
  fps: float
  joint_set: str
  instant: people.InstantSettings
  tracking: reconstructor_lib.TrackingSettings
  output: pipeline.OutputSettings

  def __post_init__(self):
    if self.output.filter_params:  # Bad names or values fail here, before any decoding.
      filtering.filter_track(np.zeros((64, 1, 3)), 60.0, self.output.filter,
                             **dict(self.output.filter_params))
    if self.stride < 1 or self.start < 0 or self.stop < 0:
      raise ValueError(f"config.video start={self.start}, stop={self.stop}, stride={self.stride}: "
                       "expected start >= 0, stop >= 0 (0: to the end) and stride >= 1")


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
  # EasyMocap files carry no image size: the frames give it. Other formats are fitted to the
  # frames below, once their camera names are checked.
  easymocap = (os.path.exists(spec)
               and calibration_formats.detect_format(spec) == "easymocap")
  full = rigs.get_rig(spec, image_sizes=recording.frame_sizes if easymocap else None,
                      units=units or None)
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


def load_models(workers: int, cores: int | None = None) -> list[blazepose.BlazePose]:
  """One BlazePose per worker thread of a `reconstructor.Reconstructor`.

  Several workers run the views in parallel with one TFLite thread each; one worker runs its
  model on every core.

  Args:
    workers: Worker threads (>= 0); 0: one per core.
    cores: CPU cores the reconstruction may use; None: all of the machine's.
  """
  cores = cores or os.cpu_count() or 1
  if workers < 0:
    raise ValueError(f"workers={workers}, expected >= 0 (0: one per CPU core)")
  workers = workers or cores
  if workers == 1:
    return [blazepose.BlazePose(num_threads=cores)]
  return [blazepose.BlazePose(num_threads=1) for _ in range(workers)]


def parse_offsets(text: str, cameras: Sequence[str]) -> dict[str, int]:
  """"cam01:2,cam03:-1" -> {"cam01": 2, "cam03": -1}, each camera one of `cameras`."""
  offsets = {}
  for item in filter(None, (part.strip() for part in str(text).split(","))):
    camera, _, value = item.partition(":")
    if camera not in cameras or not value.strip().lstrip("-").isdigit():
      raise ValueError(f"config.video.offsets item {item!r}: expected CAMERA:FRAMES with a camera "
                       f"of {list(cameras)} and an integer")
    offsets[camera] = int(value)
  return offsets


def reconstruct_session(recording: recording_lib.Recording, output_dir: str,
                        settings: SessionSettings, *,
                        models: Sequence[blazepose.BlazePose] | Callable[[], Sequence],
                        progress: Callable[[int, int, dict], None] | None = None) -> dict:
  """Reconstructs one recording and writes its outputs (`pipeline.reconstruct_recording`).

  Args:
    recording: The opened recording (`recording.open_recording`).
    output_dir: Folder of the outputs (created).
    settings: SessionSettings.
    models: The BlazePose models of the reconstructor's workers (`load_models`), or a callable
      returning them, called once the calibration and offsets are checked (a bad input fails
      before any model loads).
    progress: Optional callback(frames done, frames in all, the frame's result).

  Returns:
    The summary (also written as summary.json).

  Raises:
    ValueError (CalibrationError, RecordingError): inputs that cannot be read as given.
  """
  rig = load_rig(settings.rig, recording, settings.units)
  fps = recording.fps or float(settings.fps) or DEFAULT_FOLDER_FPS
  offsets = parse_offsets(settings.offsets, recording.camera_names)
  stop = settings.stop or None
  frames = recording.frames(start=settings.start, stop=stop, stride=settings.stride,
                            offsets=offsets)
  last = stop if stop is not None else recording.num_frames - max([0, *offsets.values()])
  num_frames = len(range(settings.start, min(last, recording.num_frames), settings.stride))
  logging.info("video: %s, %d frames x %d cameras %s at %.3g fps, fusion=%s -> %s", recording,
               num_frames, len(rig.cameras), rig.camera_names, fps / settings.stride,
               settings.instant.fusion, output_dir)
  reconstructor = reconstructor_lib.Reconstructor(
      models() if callable(models) else models, rig, settings.joint_set, settings.instant,
      settings.tracking)
  try:
    return pipeline.reconstruct_recording(
        frames, rig, reconstructor, output_dir, fps=fps / settings.stride, num_frames=num_frames,
        output=settings.output,
        progress=None if progress is None else
        lambda done, result: progress(done, num_frames, result))
  finally:
    reconstructor.close()
