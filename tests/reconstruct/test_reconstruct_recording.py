"""Recordings: real Pose2Sim clips against PyAV's decoding, frame ranges, offsets, bad input."""

import os
import re
import shutil
import tracemalloc

import cv2
import numpy as np
import pytest

from mf_tf.models import blazepose
from mf_tf.reconstruct import recording as recording_lib

_CLIPS = os.path.join(os.path.dirname(__file__), "..", "fixtures", "pose2sim_clips")
_PANOPTIC = os.path.join(os.path.dirname(__file__), "..", "fixtures", "panoptic_demo")
_CAMERAS = ["cam01", "cam02", "cam03", "cam04"]
_NUM_FRAMES = 12
_WIDTH, _HEIGHT = 1088, 1920  # portrait phone videos


def _clip(camera: str) -> str:
  return os.path.join(_CLIPS, "videos", f"{camera}.mp4")


def _pyav_frames(path: str, indices) -> dict[int, np.ndarray]:
  """Frames of a video at the given indices, decoded by PyAV (FFmpeg's converter to RGB)."""
  av = pytest.importorskip("av")
  wanted = set(indices)
  frames = {}
  with av.open(path) as container:
    for index, frame in enumerate(container.decode(video=0)):
      if index in wanted:
        frames[index] = frame.to_ndarray(format="rgb24")
  assert set(frames) == wanted, f"PyAV decoded {sorted(frames)} of {sorted(wanted)} in {path}"
  return frames


def _assert_same_pixels(actual: np.ndarray, expected: np.ndarray, what: str):
  assert actual.shape == expected.shape == (_HEIGHT, _WIDTH, 3), what
  assert actual.dtype == np.uint8, what
  difference = np.abs(actual.astype(np.int16) - expected.astype(np.int16))
  assert difference.mean() < 1.0, f"{what}: mean |difference| {difference.mean():.3f} grey levels"


def _write_video(path: str, values, fps: float = 10.0, size=(64, 48)):
  """A video whose frame k is uniformly grey at values[k] (MJPG, close to lossless on flat grey)."""
  writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
  assert writer.isOpened(), path
  for value in values:
    writer.write(np.full((size[1], size[0], 3), value, np.uint8))
  writer.release()
  return path


def _grey_values(count: int) -> list[int]:
  return [10 + 20 * k for k in range(count)]


# ------------------------------------------------------------------------------------------------
# The real clips.


def test_session_folder_reads_its_container_properties():
  recording = recording_lib.open_recording(_CLIPS)
  assert recording.camera_names == _CAMERAS
  assert recording.fps == pytest.approx(60.0)
  assert recording.num_frames == _NUM_FRAMES
  assert recording.frame_counts == {camera: _NUM_FRAMES for camera in _CAMERAS}
  assert recording.frame_sizes == {camera: (_WIDTH, _HEIGHT) for camera in _CAMERAS}
  assert recording.keys == [f"{index:06d}" for index in range(_NUM_FRAMES)]
  assert recording.calibration_path == os.path.join(_CLIPS, "calibration", "Calib.qca.txt")
  assert recording.paths == {camera: _clip(camera) for camera in _CAMERAS}


def test_video_list_names_cameras_by_stem_in_sorted_order():
  recording = recording_lib.open_recording([_clip("cam03"), _clip("cam01")])
  assert recording.camera_names == ["cam01", "cam03"]
  assert recording.calibration_path is None


def test_frames_equal_pyav_decoding():
  av = pytest.importorskip("av")
  containers = [av.open(_clip(camera)) for camera in _CAMERAS]
  try:
    references = [container.decode(video=0) for container in containers]
    indices = []
    for index, key, images in recording_lib.open_recording(_CLIPS).frames():
      indices.append(index)
      assert key == f"{index:06d}"
      for camera, image, reference in zip(_CAMERAS, images, references):
        _assert_same_pixels(image, next(reference).to_ndarray(format="rgb24"),
                            f"{camera} frame {index}")
    assert indices == list(range(_NUM_FRAMES))
  finally:
    for container in containers:
      container.close()


def test_start_stop_stride_give_those_frames():
  recording = recording_lib.open_recording(_CLIPS)
  read = list(recording.frames(start=1, stop=11, stride=4))
  assert [index for index, _, _ in read] == [1, 5, 9]
  assert [key for _, key, _ in read] == ["000001", "000005", "000009"]
  for position, camera in enumerate(_CAMERAS):
    expected = _pyav_frames(_clip(camera), [1, 5, 9])
    for index, _, images in read:
      _assert_same_pixels(images[position], expected[index], f"{camera} frame {index}")


def test_offsets_shift_the_frames_of_their_cameras():
  recording = recording_lib.open_recording(_CLIPS)
  offsets = {"cam02": 3, "cam04": -1}
  shifted = list(recording.frames(start=1, stop=9, stride=3, offsets=offsets))
  assert [index for index, _, _ in shifted] == [1, 4, 7]
  wanted = {camera: {index + offset for index in (1, 4, 7)
                     for offset in {0, offsets.get(camera, 0)}} for camera in _CAMERAS}
  unshifted = {camera: {} for camera in _CAMERAS}
  for index, _, images in recording.frames():
    for camera, image in zip(_CAMERAS, images):
      if index in wanted[camera]:
        unshifted[camera][index] = image
  for index, _, images in shifted:
    for camera, image in zip(_CAMERAS, images):
      source = index + offsets.get(camera, 0)
      np.testing.assert_array_equal(image, unshifted[camera][source], f"{camera} frame {index}")
      if camera in offsets:  # people move between frames: the shift is visible
        assert not np.array_equal(image, unshifted[camera][index]), f"{camera} frame {index}"


def test_offsets_and_ranges_out_of_bounds_name_the_camera():
  recording = recording_lib.open_recording(_CLIPS)
  with pytest.raises(recording_lib.RecordingError, match=r"cam02: 12 frames, offset 3"):
    next(recording.frames(stop=_NUM_FRAMES, offsets={"cam02": 3}))
  with pytest.raises(recording_lib.RecordingError, match=r"expected 1 <= start"):
    next(recording.frames(offsets={"cam03": -1}))
  with pytest.raises(recording_lib.RecordingError, match=r"\[0, 13\).*expected 0 <= start < stop "
                     r"<= 12"):
    next(recording.frames(stop=13))
  with pytest.raises(recording_lib.RecordingError, match=r"\['cam9'\].*expected some of"):
    next(recording.frames(offsets={"cam9": 1}))
  with pytest.raises(recording_lib.RecordingError, match="stride = 0; expected >= 1"):
    next(recording.frames(stride=0))
  assert [index for index, _, _ in recording.frames(offsets={"cam02": 3})] == list(range(9))


def test_streaming_keeps_python_allocations_to_a_few_frames():
  recording = recording_lib.open_recording(_CLIPS)
  frame_bytes = _WIDTH * _HEIGHT * 3
  tracemalloc.start()
  try:
    count = sum(len(images) for _, _, images in recording.frames())
    _, peak = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  assert count == len(_CAMERAS) * _NUM_FRAMES
  # The frames of 2 instants (the one held while the next is decoded) and a BGR frame; all 48
  # frames would be 16 times one instant's.
  assert frame_bytes < peak < 3 * len(_CAMERAS) * frame_bytes, f"peak {peak / 1e6:.1f} MB"


def test_close_ends_an_unfinished_iteration():
  with recording_lib.open_recording(_CLIPS) as recording:
    frames = recording.frames()
    next(frames)
  with pytest.raises(recording_lib.RecordingError, match="closed"):
    next(frames)


# ------------------------------------------------------------------------------------------------
# Damaged and inconsistent videos.


def test_truncated_video_names_the_file(tmp_path):
  # The clip's index (moov) follows the frames: half the file cannot be opened.
  truncated = str(tmp_path / "cam01.mp4")
  with open(_clip("cam01"), "rb") as source:
    data = source.read()
  with open(truncated, "wb") as target:
    target.write(data[:len(data) // 2])
  with pytest.raises(recording_lib.RecordingError, match=re.escape(repr(truncated))):
    list(recording_lib.open_recording([truncated, _clip("cam02")]).frames())


def test_video_ending_before_its_declared_count_raises_while_streaming(tmp_path):
  av = pytest.importorskip("av")
  # The same clip with its index first (as phones and `-movflags faststart` write), cut in half:
  # it opens, declares 12 frames and runs out of data.
  complete = str(tmp_path / "complete.mp4")
  with av.open(_clip("cam01")) as source, av.open(complete, "w",
                                                  options={"movflags": "faststart"}) as target:
    stream = target.add_stream_from_template(source.streams.video[0])
    for packet in source.demux(video=0):
      if packet.dts is not None:
        packet.stream = stream
        target.mux(packet)
  truncated = str(tmp_path / "cam01.mp4")
  with open(complete, "rb") as source:
    data = source.read()
  with open(truncated, "wb") as target:
    target.write(data[:len(data) // 2])
  recording = recording_lib.open_recording([truncated, _clip("cam02")])
  assert recording.frame_counts["cam01"] == _NUM_FRAMES
  with pytest.raises(recording_lib.RecordingError,
                     match=rf"camera 'cam01': video {re.escape(repr(truncated))} ended .* at "
                     rf"frame \d+ .*declares {_NUM_FRAMES} frames"):
    list(recording.frames())


def test_different_frame_counts_name_the_cameras(tmp_path):
  long = _write_video(str(tmp_path / "left.avi"), _grey_values(8))
  short = _write_video(str(tmp_path / "right.avi"), _grey_values(6))
  recording = recording_lib.open_recording([long, short])
  assert recording.frame_counts == {"left": 8, "right": 6}
  assert recording.num_frames == 6
  with pytest.raises(recording_lib.RecordingError,
                     match=r"different frame counts \(left: 8, right: 6\); pass stop <= 6.*"
                     r"offsets"):
    recording.frames()
  assert [index for index, _, _ in recording.frames(stop=6)] == list(range(6))


def test_offsets_read_the_shifted_frame_of_synthetic_videos(tmp_path):
  values = _grey_values(8)
  recording = recording_lib.open_recording([_write_video(str(tmp_path / "a.avi"), values),
                                            _write_video(str(tmp_path / "b.avi"), values)])
  means = [(index, [float(image.mean()) for image in images])
           for index, _, images in recording.frames(offsets={"b": 2})]
  assert [index for index, _ in means] == list(range(6))
  for index, (mean_a, mean_b) in means:
    assert mean_a == pytest.approx(values[index], abs=2)
    assert mean_b == pytest.approx(values[index + 2], abs=2)


def test_different_frame_rates_name_the_cameras(tmp_path):
  slow = _write_video(str(tmp_path / "slow.avi"), _grey_values(4), fps=10.0)
  fast = _write_video(str(tmp_path / "fast.avi"), _grey_values(4), fps=15.0)
  with pytest.raises(recording_lib.RecordingError,
                     match=r"different frame rates \(fast: 15 fps, slow: 10 fps\)"):
    recording_lib.open_recording([slow, fast])


def test_a_file_that_is_not_a_video_is_named(tmp_path):
  fake = tmp_path / "cam01.mp4"
  fake.write_text("not a video")
  with pytest.raises(recording_lib.RecordingError,
                     match=rf"video {re.escape(repr(str(fake)))} cannot be opened.*re-encode"):
    recording_lib.open_recording([str(fake), _clip("cam02")])


def test_unsupported_extension_lists_the_supported_ones(tmp_path):
  clip = tmp_path / "cam01.wmv"
  clip.write_bytes(b"")
  with pytest.raises(recording_lib.RecordingError,
                     match=r"unsupported extension; expected one of \.mp4, \.mov, \.avi, \.mkv"):
    recording_lib.open_recording([str(clip), _clip("cam02")])


def test_fewer_than_two_cameras(tmp_path):
  with pytest.raises(recording_lib.RecordingError, match="1 camera.*expected at least 2"):
    recording_lib.open_recording([_clip("cam01")])
  with pytest.raises(recording_lib.RecordingError, match="expected at least 2"):
    recording_lib.open_recording(_clip("cam01"))
  session = tmp_path / "session"
  (session / "videos").mkdir(parents=True)
  shutil.copy(_clip("cam01"), session / "videos")
  with pytest.raises(recording_lib.RecordingError, match="expected at least 2"):
    recording_lib.open_recording(str(session))


def test_session_folder_without_videos(tmp_path):
  (tmp_path / "calibration").mkdir()
  shutil.copy(_clip("cam01"), tmp_path)
  with pytest.raises(recording_lib.RecordingNotFoundError,
                     match=r"no videos/ subfolder.*cam01\.mp4.*move them into"):
    recording_lib.open_recording(str(tmp_path))
  with pytest.raises(FileNotFoundError, match="does not exist"):
    recording_lib.open_recording(str(tmp_path / "missing"))


def test_session_calibration_preference(tmp_path):
  (tmp_path / "videos").mkdir()
  for name in ("a", "b"):
    _write_video(str(tmp_path / "videos" / f"{name}.mp4"), _grey_values(3))
  calibration = tmp_path / "calibration"
  calibration.mkdir()
  assert recording_lib.open_recording(str(tmp_path)).calibration_path is None
  for name in ("intri.yml", "extri.yml"):
    (calibration / name).write_text("%YAML:1.0\n")
  assert recording_lib.open_recording(str(tmp_path)).calibration_path == str(calibration)
  (calibration / "Calib.qca.txt").write_text("<calibration/>")
  (calibration / "Calib.toml").write_text("")
  assert recording_lib.open_recording(str(tmp_path)).calibration_path == str(
      calibration / "Calib.toml")
  (calibration / "Other.toml").write_text("")
  with pytest.raises(recording_lib.RecordingError, match=r"several \.toml files"):
    recording_lib.open_recording(str(tmp_path))


# ------------------------------------------------------------------------------------------------
# Frames folders (the layout of --mode=video).


def test_frames_folder_keys_sizes_and_images():
  recording = recording_lib.open_recording(_PANOPTIC)
  cameras = ["00_03", "00_06", "00_12", "00_13", "00_23"]
  keys = ["00004500", "00005514", "00006859", "00009348", "00013007"]  # "<camera>_" stripped
  assert recording.camera_names == cameras
  assert recording.keys == keys
  assert recording.fps is None
  assert recording.num_frames == 5
  assert recording.frame_sizes == {camera: (1920, 1080) for camera in cameras}
  assert recording.calibration_path is None
  assert recording.paths == {
      camera: [os.path.join(_PANOPTIC, camera, f"{camera}_{key}.jpg") for key in keys]
      for camera in cameras}
  read = list(recording.frames(start=1, stride=2))
  assert [(index, key) for index, key, _ in read] == [(1, keys[1]), (3, keys[3])]
  for index, key, images in read:
    for camera, image in zip(cameras, images):
      np.testing.assert_array_equal(
          image, blazepose.read_image(os.path.join(_PANOPTIC, camera, f"{camera}_{key}.jpg")))


def test_frames_folder_missing_instant_keeps_its_message(tmp_path):
  for camera in ("00_03", "00_06"):
    (tmp_path / camera).mkdir()
    for key in ("00004500", "00005514"):
      shutil.copy(os.path.join(_PANOPTIC, "00_03", f"00_03_{key}.jpg"),
                  tmp_path / camera / f"{camera}_{key}.jpg")
  (tmp_path / "00_06" / "00_06_00005514.jpg").unlink()
  with pytest.raises(FileNotFoundError, match=r"00_06'.*lacks the frames of instants "
                     r"\['00005514'\]"):
    recording_lib.open_recording(str(tmp_path))


def test_undecodable_image_is_named(tmp_path):
  for camera in ("00_03", "00_06"):
    (tmp_path / camera).mkdir()
    for key in ("00004500", "00005514"):
      shutil.copy(os.path.join(_PANOPTIC, camera, f"{camera}_{key}.jpg"), tmp_path / camera)
  broken = tmp_path / "00_06" / "00_06_00005514.jpg"
  broken.write_bytes(b"not an image")
  recording = recording_lib.open_recording(str(tmp_path))
  with pytest.raises(recording_lib.RecordingError,
                     match=rf"image {re.escape(repr(str(broken)))} cannot be decoded"):
    list(recording.frames())
