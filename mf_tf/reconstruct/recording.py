r"""Synchronized multi-camera recordings, read frame by frame.

`open_recording` accepts three layouts and returns a `Recording`:
  video files  a list of paths (.mp4, .mov, .avi, .mkv), one per camera; a camera's name is its
               file's stem (videos/cam01.mp4 -> "cam01").
  session      a folder laid out as a Pose2Sim session: `DIR/videos/<camera>.<ext>` and,
               optionally, `DIR/calibration/` holding one calibration file (its path becomes
               `Recording.calibration_path`; the file is not read here).
  frames       a folder with one subfolder of images (.jpg, .jpeg, .png) per camera, the layout
               of `--mode=video`: an instant's key is the file name without its extension and
               without a leading "<camera>_" (00_03/00_03_00004500.jpg -> "00004500"), and every
               folder holds the same keys.

Frames are numbered from 0 in each camera. Cameras are synchronized frame by frame, unless
`Recording.frames` is given per-camera offsets: with `offsets[c] = k`, frame i + k of camera c
shows the instant of frame i of the cameras without an offset. Images come out as [H, W, 3]
uint8 RGB, the camera's full frame (no resizing, no undistortion).

`Recording.frames` streams: each camera's decoder reads forward only, one frame at a time (frames
before `start` and between strides are skipped with `grab`, demuxed and decoded by FFmpeg but
never converted to RGB), and nothing is kept once yielded, so memory does not grow with the
recording's length. Input errors raise `RecordingError` (a ValueError; `RecordingNotFoundError`,
also a FileNotFoundError, for missing files and folders) naming the file or camera at fault and
the expected input.

Videos are decoded with OpenCV (`cv2.VideoCapture`, FFmpeg underneath), which mf_tf already uses
to draw and write videos; PyAV decodes the same frames no faster (`benchmarks/decode_bench.py`,
measured in BUILD.md).
"""

from __future__ import annotations

import os
import re
from typing import Iterator, Mapping, Sequence

import cv2
import numpy as np
import tensorflow as tf

from mf_tf.models import blazepose

VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
# Calibration files of a session's calibration/ folder, most preferred first: Pose2Sim's own
# format (written by its calibration step, beside the file it converted), Qualisys, then JSON.
# An OpenCV/EasyMocap pair intri.yml + extri.yml is returned as the folder that holds it.
CALIBRATION_PATTERNS = (".toml", ".qca.txt", ".json")
_YML_PAIR = ("intri.yml", "extri.yml")
# Frame rates closer than this (relative) are the same rate (29.97 written as 30000/1001 or as a
# rounded float).
_FPS_RTOL = 1e-3
# Video keys are zero-padded frame indices, at least this many digits (so they sort as numbers).
_MIN_KEY_DIGITS = 6


class RecordingError(ValueError):
  """A recording that cannot be read as given; the message names the file and the fix."""


class RecordingNotFoundError(RecordingError, FileNotFoundError):
  """A file or folder of a recording that does not exist or holds nothing to read."""


class Recording:
  """A synchronized multi-camera recording (videos or image folders), read by `frames`.

  Made by `open_recording`. Holds paths and container properties only; decoders are opened by
  `frames` (one per camera) and closed when its iteration ends, by `close`, or on leaving a
  `with` block.

  Attributes:
    camera_names: [V] camera names, sorted; the order of `frames`' images.
    fps: Frame rate (frames/s) shared by the videos; None for image folders.
    num_frames: Frames every camera has (without offsets): the shortest camera's frame count.
    frame_counts: {camera: frames} as the container declares them (number of images for
      folders).
    frame_sizes: {camera: (width, height)} pixels.
    keys: [num_frames] one string per frame: the image key for folders, the zero-padded frame
      index for videos ("000012").
    paths: {camera: video file} for videos, {camera: [num_frames] image files} for folders.
    calibration_path: The session's calibration file (or the folder of intri.yml + extri.yml);
      None when none was found or for other layouts.
    source: What was opened (the folder, or the list of video files).
  """

  def __init__(self, *, camera_names: Sequence[str], fps: float | None,
               frame_counts: Mapping[str, int], frame_sizes: Mapping[str, tuple[int, int]],
               keys: Sequence[str], paths: Mapping[str, str | Sequence[str]],
               calibration_path: str | None = None, source=None):
    self.camera_names = list(camera_names)
    self.fps = fps
    self.frame_counts = dict(frame_counts)
    self.frame_sizes = dict(frame_sizes)
    self.num_frames = min(self.frame_counts.values())
    self.keys = list(keys)
    self.paths = dict(paths)
    self.calibration_path = calibration_path
    self.source = source
    self._open_streams: set = set()

  @property
  def is_video(self) -> bool:
    """Whether the cameras are video files (else image folders)."""
    return self.fps is not None

  def __repr__(self):
    return (f"Recording({len(self.camera_names)} cameras {self.camera_names}, "
            f"{self.num_frames} frames, fps={self.fps}, source={self.source!r})")

  def __enter__(self) -> Recording:
    return self

  def __exit__(self, *exc_info):
    self.close()

  def close(self):
    """Closes the decoders of unfinished `frames` iterations (they end at their next step)."""
    for stream in list(self._open_streams):
      stream.close()
    self._open_streams.clear()

  def frames(self, start: int = 0, stop: int | None = None, stride: int = 1,
             offsets: Mapping[str, int] | None = None
             ) -> Iterator[tuple[int, str, list[np.ndarray]]]:
    """Streams the synchronized frames start, start + stride, ... (< stop).

    Args:
      start: First frame index.
      stop: Frame index to stop before. None: the last frame every camera has (after offsets);
        when the cameras' frame counts differ and no offsets are given, stop must be given.
      stride: Step between the frames read (>= 1).
      offsets: {camera: frames} per-camera offset: camera c's frame i + offsets[c] is read as
        frame i. Cameras left out have offset 0. May be negative when `start` leaves room.

    Yields:
      index: The frame index i (before offsets).
      key: `keys[i]` for image folders, i zero-padded for videos.
      images: [V] [H, W, 3] uint8 RGB arrays, in `camera_names` order, each camera's frame
        i + offsets[c].

    Raises:
      RecordingError: bad range, stride or offsets (which camera, what it has); frame counts
        that differ with neither `stop` nor `offsets` given; a video that ends before the frame
        count its container declares, or a frame or image that cannot be decoded (the file).
    """
    # Checked here, not at the first step of the iteration: a bad range fails where it is given.
    offsets = self._check_offsets(offsets)
    start, stop, stride = self._check_range(start, stop, stride, offsets)
    return self._stream(range(start, stop, stride), offsets)

  def _stream(self, indices: range, offsets: Mapping[str, int]
              ) -> Iterator[tuple[int, str, list[np.ndarray]]]:
    streams = [self._open_stream(camera) for camera in self.camera_names]
    try:
      for index in indices:
        images = [stream.read(index + offsets[stream.camera]) for stream in streams]
        yield index, self._key(index), images
    finally:
      for stream in streams:
        stream.close()
        self._open_streams.discard(stream)

  def _key(self, index: int) -> str:
    if self.is_video:
      digits = max(_MIN_KEY_DIGITS, len(str(max(self.frame_counts.values()))))
      return f"{index:0{digits}d}"
    return self.keys[index]

  def _open_stream(self, camera: str):
    if self.is_video:
      stream = _VideoStream(camera, self.paths[camera], self.frame_counts[camera],
                            self.frame_sizes[camera])
    else:
      stream = _ImageStream(camera, self.paths[camera], self.frame_sizes[camera])
    self._open_streams.add(stream)
    return stream

  def _check_offsets(self, offsets: Mapping[str, int] | None) -> dict[str, int]:
    offsets = dict(offsets or {})
    unknown = sorted(set(offsets) - set(self.camera_names))
    if unknown:
      raise RecordingError(f"offsets name cameras {unknown} that the recording {self.source!r} "
                           f"lacks; expected some of {self.camera_names}")
    for camera, offset in offsets.items():
      if not isinstance(offset, (int, np.integer)) or isinstance(offset, bool):
        raise RecordingError(f"offsets[{camera!r}] = {offset!r}; expected an integer number of "
                             "frames")
    return {camera: int(offsets.get(camera, 0)) for camera in self.camera_names}

  def _check_range(self, start: int, stop: int | None, stride: int,
                   offsets: Mapping[str, int]) -> tuple[int, int, int]:
    counts = self.frame_counts
    for name, value in (("start", start), ("stride", stride)) + ((("stop", stop),)
                                                                  if stop is not None else ()):
      if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise RecordingError(f"{name} = {value!r}; expected an integer frame index")
    if stride < 1:
      raise RecordingError(f"stride = {stride}; expected >= 1")
    # Frames every camera has once shifted by its offset: i in [lowest, available).
    available = min(counts[camera] - offsets[camera] for camera in self.camera_names)
    lowest = max(-offsets[camera] for camera in self.camera_names)
    if stop is None:
      if len(set(counts.values())) > 1 and not any(offsets.values()):
        raise RecordingError(
            f"the cameras of {self.source!r} have different frame counts "
            f"({', '.join(f'{camera}: {count}' for camera, count in counts.items())}); pass "
            f"stop <= {self.num_frames} to read the frames they all have, or offsets "
            "{camera: frames} if the cameras started recording at different times (frame i + "
            "offsets[c] of camera c is synchronized with frame i of the others)")
      stop = available
    if not lowest <= start < available or not start < stop <= available:
      limits = ", ".join(f"{camera}: {counts[camera]} frames, offset {offsets[camera]}"
                         for camera in self.camera_names)
      raise RecordingError(
          f"frames [{start}, {stop}) are out of the range every camera of {self.source!r} has "
          f"({limits}); expected {lowest} <= start < stop <= {available}")
    return int(start), int(stop), int(stride)


class _VideoStream:
  """One camera's video, decoded forward only (OpenCV)."""

  def __init__(self, camera: str, path: str, count: int, size: tuple[int, int]):
    self.camera = camera
    self.path = path
    self.count = count
    self.size = size
    self.capture = _open_capture(path)
    self.position = 0  # index of the frame the next grab returns

  def _fail(self, action: str):
    raise RecordingError(
        f"camera {self.camera!r}: video {self.path!r} ended (or could not be decoded) at frame "
        f"{self.position} while {action}; its container declares {self.count} frames. The file "
        "is truncated or damaged: copy it again, or read only frames < "
        f"{self.position} (stop={self.position})")

  def read(self, index: int) -> np.ndarray:
    if self.capture is None:
      raise RecordingError(f"camera {self.camera!r}: the recording was closed while reading "
                           f"{self.path!r}")
    if index < self.position:
      raise RecordingError(f"camera {self.camera!r}: frame {index} requested after frame "
                           f"{self.position - 1}; frames are read forward only")
    while self.position < index:
      if not self.capture.grab():
        self._fail(f"skipping to frame {index}")
      self.position += 1
    ok, bgr = self.capture.read()
    if not ok:
      self._fail(f"reading frame {index}")
    self.position += 1
    if (bgr.shape[1], bgr.shape[0]) != tuple(self.size) or bgr.ndim != 3:
      raise RecordingError(f"camera {self.camera!r}: frame {index} of {self.path!r} has shape "
                           f"{bgr.shape}; expected {self.size[1]} x {self.size[0]} x 3 as its "
                           "container declares")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

  def close(self):
    if self.capture is not None:
      self.capture.release()
      self.capture = None


class _ImageStream:
  """One camera's image folder (`mf_tf.models.blazepose.read_image`: TensorFlow's decoders)."""

  def __init__(self, camera: str, paths: Sequence[str], size: tuple[int, int]):
    self.camera = camera
    self.paths = paths
    self.size = size

  def read(self, index: int) -> np.ndarray:
    image = read_image_file(self.paths[index])
    if (image.shape[1], image.shape[0]) != tuple(self.size):
      raise RecordingError(
          f"camera {self.camera!r}: image {self.paths[index]!r} is {image.shape[1]} x "
          f"{image.shape[0]} px; expected {self.size[0]} x {self.size[1]} as the camera's first "
          "image (one camera, one image size)")
    return image

  def close(self):
    pass


def read_image_file(path: str) -> np.ndarray:
  """Reads a JPEG or PNG file as [H, W, 3] uint8 RGB.

  Raises:
    RecordingNotFoundError: the file does not exist.
    RecordingError: the file is not a JPEG or PNG image, or is damaged (named).
  """
  if not os.path.isfile(path):
    raise RecordingNotFoundError(f"image {path!r} does not exist")
  try:
    return blazepose.read_image(path)
  except tf.errors.InvalidArgumentError as error:
    raise RecordingError(f"image {path!r} cannot be decoded ({error.message.splitlines()[0]}); "
                         f"expected a JPEG or PNG file ({', '.join(IMAGE_EXTENSIONS)}): "
                         "replace or remove it") from None


def _open_capture(path: str) -> cv2.VideoCapture:
  capture = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
  if not capture.isOpened():
    capture.release()
    raise RecordingError(
        f"video {path!r} cannot be opened: it is not a video, it is truncated or damaged, or its "
        "codec is not supported by OpenCV's FFmpeg; re-encode it (e.g. `ffmpeg -i IN -c:v "
        "libx264 -pix_fmt yuv420p OUT.mp4`) or copy it again")
  return capture


def _probe_video(path: str) -> tuple[float, int, tuple[int, int]]:
  """(fps, frame count, (width, height)) of a video, from its container, nothing decoded."""
  capture = _open_capture(path)
  try:
    fps = capture.get(cv2.CAP_PROP_FPS)
    count = int(round(capture.get(cv2.CAP_PROP_FRAME_COUNT)))
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
  finally:
    capture.release()
  if not fps > 0 or count <= 0 or min(size) <= 0:
    raise RecordingError(
        f"video {path!r} declares {fps} frames/s, {count} frames of {size[0]} x {size[1]} px; "
        "expected a positive frame rate, frame count and size: re-encode it (e.g. `ffmpeg -i IN "
        "-c:v libx264 -pix_fmt yuv420p OUT.mp4`)")
  return fps, count, size


def _camera_name(path: str) -> str:
  return os.path.splitext(os.path.basename(path))[0]


def _open_videos(paths: Sequence[str], source, calibration_path: str | None = None) -> Recording:
  paths = [os.fspath(path) for path in paths]
  for path in paths:
    if os.path.splitext(path)[1].lower() not in VIDEO_EXTENSIONS:
      raise RecordingError(f"video {path!r} has an unsupported extension; expected one of "
                           f"{', '.join(VIDEO_EXTENSIONS)}")
    if not os.path.isfile(path):
      raise RecordingNotFoundError(f"video {path!r} does not exist")
  if len(paths) < 2:
    raise RecordingError(f"{source!r} gives {len(paths)} camera(s) ({paths}); expected at least "
                         "2 synchronized videos, one per camera")
  by_camera: dict[str, str] = {}
  for path in paths:
    camera = _camera_name(path)
    if camera in by_camera:
      raise RecordingError(f"videos {by_camera[camera]!r} and {path!r} have the same camera name "
                           f"{camera!r} (the file stem); expected one video per camera")
    by_camera[camera] = path
  cameras = sorted(by_camera)
  probes = {camera: _probe_video(by_camera[camera]) for camera in cameras}
  rates = {camera: probe[0] for camera, probe in probes.items()}
  reference = rates[cameras[0]]
  if any(abs(fps - reference) > _FPS_RTOL * reference for fps in rates.values()):
    raise RecordingError(
        f"the cameras of {source!r} have different frame rates "
        f"({', '.join(f'{camera}: {fps:g} fps' for camera, fps in rates.items())}); expected "
        "one frame rate: re-encode the videos to a common rate (e.g. `ffmpeg -i IN -r FPS OUT`)")
  counts = {camera: probe[1] for camera, probe in probes.items()}
  digits = max(_MIN_KEY_DIGITS, len(str(max(counts.values()))))
  return Recording(camera_names=cameras, fps=float(reference), frame_counts=counts,
                   frame_sizes={camera: probe[2] for camera, probe in probes.items()},
                   keys=[f"{index:0{digits}d}" for index in range(min(counts.values()))],
                   paths=by_camera, calibration_path=calibration_path, source=source)


def find_calibration(folder: str) -> str | None:
  """The calibration file of a session's calibration folder (not read).

  Args:
    folder: The session's `calibration/` folder.

  Returns:
    The path of its only file of the most preferred kind (`CALIBRATION_PATTERNS` order: .toml,
    .qca.txt, .json), else the folder itself when it holds intri.yml and extri.yml, else None
    (also when the folder does not exist).

  Raises:
    RecordingError: several files of the preferred kind (named; keep one).
  """
  if not os.path.isdir(folder):
    return None
  names = sorted(os.listdir(folder))
  for suffix in CALIBRATION_PATTERNS:
    found = [name for name in names if name.lower().endswith(suffix)
             and os.path.isfile(os.path.join(folder, name))]
    if len(found) > 1:
      raise RecordingError(f"calibration folder {folder!r} holds several {suffix} files {found}; "
                           "expected one calibration file: move the others away")
    if found:
      return os.path.join(folder, found[0])
  if all(name in names for name in _YML_PAIR):
    return folder
  return None


def _list_frames(frames_dir: str) -> tuple[list[str], list[str], dict[str, list[str]]]:
  """Cameras, sorted keys and {camera: [image per key]} of a frames folder."""
  cameras = sorted(name for name in os.listdir(frames_dir)
                   if os.path.isdir(os.path.join(frames_dir, name)))
  if len(cameras) < 2:
    raise RecordingNotFoundError(
        f"frames_dir {frames_dir!r} has camera folders {cameras}; expected at least 2 (one per "
        "camera, named as the rig's cameras)")
  frames = {}
  for camera in cameras:
    folder = os.path.join(frames_dir, camera)
    files = {}
    for name in sorted(os.listdir(folder)):
      stem, extension = os.path.splitext(name)
      if extension.lower() in IMAGE_EXTENSIONS:
        files[re.sub(f"^{re.escape(camera)}_", "", stem)] = os.path.join(folder, name)
    if not files:
      raise RecordingNotFoundError(f"camera folder {folder!r} holds no image ({IMAGE_EXTENSIONS})")
    frames[camera] = files
  keys = sorted(set().union(*(files.keys() for files in frames.values())))
  for camera, files in frames.items():
    missing = [key for key in keys if key not in files]
    if missing:
      raise RecordingNotFoundError(
          f"camera folder {os.path.join(frames_dir, camera)!r} lacks the frames of instants "
          f"{missing[:5]}{' ...' if len(missing) > 5 else ''} that other cameras have; expected "
          "synchronized frames in every folder")
  return cameras, keys, {camera: [frames[camera][key] for key in keys] for camera in cameras}


def _open_frames(frames_dir: str) -> Recording:
  cameras, keys, paths = _list_frames(frames_dir)
  sizes = {}
  for camera in cameras:
    image = read_image_file(paths[camera][0])
    sizes[camera] = (image.shape[1], image.shape[0])
  return Recording(camera_names=cameras, fps=None,
                   frame_counts={camera: len(keys) for camera in cameras}, frame_sizes=sizes,
                   keys=keys, paths=paths, source=frames_dir)


def _has_images(folder: str) -> bool:
  return any(os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS for name in os.listdir(folder))


def open_recording(source: str | os.PathLike | Sequence[str | os.PathLike]) -> Recording:
  """Opens a synchronized multi-camera recording (see the module docstring for the layouts).

  Args:
    source: A list of video files (one per camera); a session folder holding `videos/` (and
      optionally `calibration/`); or a folder of per-camera image folders.

  Returns:
    The recording: cameras, frame rate, counts and sizes read from the containers (or each
    camera's first image); nothing else is decoded.

  Raises:
    RecordingNotFoundError: a path that does not exist, or a folder with nothing to read.
    RecordingError: an unsupported extension (the supported ones listed), a file that is not a
      video, fewer than 2 cameras, cameras with different frame rates (named with their fps), a
      first image that cannot be decoded.
  """
  if isinstance(source, (str, os.PathLike)):
    path = os.fspath(source)
    if os.path.isfile(path):
      return _open_videos([path], path)
    if not os.path.isdir(path):
      raise RecordingNotFoundError(
          f"recording {path!r} does not exist; expected a session folder (videos/<camera>.mp4, "
          "calibration/), a folder of per-camera image folders, or a list of video files")
    videos_dir = os.path.join(path, "videos")
    if os.path.isdir(videos_dir):
      names = sorted(os.listdir(videos_dir))
      videos = [os.path.join(videos_dir, name) for name in names
                if os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS
                and os.path.isfile(os.path.join(videos_dir, name))]
      if not videos:
        raise RecordingNotFoundError(
            f"session folder {videos_dir!r} holds no video (found {names[:10]}); expected one "
            f"file per camera with one of the extensions {', '.join(VIDEO_EXTENSIONS)}")
      return _open_videos(videos, path,
                          calibration_path=find_calibration(os.path.join(path, "calibration")))
    subfolders = [name for name in sorted(os.listdir(path))
                  if os.path.isdir(os.path.join(path, name))]
    if any(_has_images(os.path.join(path, name)) for name in subfolders):
      return _open_frames(path)
    loose_videos = [name for name in os.listdir(path)
                    if os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS]
    hint = (f" (it holds the videos {sorted(loose_videos)[:5]}: move them into {videos_dir!r} or "
            "pass them as a list)" if loose_videos else "")
    raise RecordingNotFoundError(
        f"folder {path!r} has no videos/ subfolder and no camera folder of images{hint}; "
        "expected a session folder (videos/<camera>.mp4, calibration/) or one image folder per "
        f"camera ({', '.join(IMAGE_EXTENSIONS)})")
  paths = list(source)
  if not all(isinstance(path, (str, os.PathLike)) for path in paths):
    raise RecordingError(f"source {source!r}: expected a folder or a list of video file paths")
  return _open_videos(paths, [os.fspath(path) for path in paths])
