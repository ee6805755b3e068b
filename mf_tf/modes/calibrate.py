r"""--mode=calibrate: a rig calibrated from the people in a recording, or a calibration converted.

From people:

  python -m mf_tf.main --mode=calibrate --workdir=runs/w \
      --config.calibrate.session=../shared/data/pose2sim/Demo_MultiPerson \
      --config.calibrate.intrinsics=../shared/data/pose2sim/Demo_MultiPerson/calibration/Calib.qca.txt \
      --config.calibrate.person_height_mm=1750 \
      --config.calibrate.reference=../shared/data/pose2sim/Demo_MultiPerson/calibration/Calib.qca.txt

The recording is named as in --mode=video (exactly one of config.calibrate.session / videos /
frames_dir, opened by `modes.video.open_input`). The intrinsics come from a calibration file
(config.calibrate.intrinsics: only each camera's K, distortion and image size are used) or from
checkerboard images (config.calibrate.checkerboard=DIR, one subfolder per camera, with
config.calibrate.board=COLSxROWS inner corners and square_mm; `geometry.checkerboard`). Frames
start:stop:stride (stride 0: max_frames spread over the range) go through BlazePose per view;
`reconstruct.people_matching` matches the people across views by their epipolar agreement (no
extrinsics needed): whole tracks of consecutive frames (`reconstruct.people_tracks`), or frame by
frame for instants far apart (config.calibrate.association: auto, tracks, frames); `geometry.people_calibration.estimate_extrinsics`
places the cameras (scale from config.calibrate.person_height_mm or camera_distance=camA,camB,MM).
The rig is written to <workdir>/calibrate/<name>.json (canonical JSON, read by every mode, e.g.
--config.video.rig=...), each camera's final reprojection error printed. With
config.calibrate.reference=FILE it also prints, per camera, the rotation error (degrees) and the
centre error (mm and % of the rig's size) after the best similarity (rigid when the scale came
from a stated height: the scale is then judged too), and the MPJPE between the people
triangulated with the estimated and with the reference rig.

Conversion (no recording given):

  python -m mf_tf.main --mode=calibrate --workdir=runs/w \
      --config.calibrate.calibration=session/calibration/Calib.qca.txt \
      --config.calibrate.convert=runs/w/calibration.toml

Reads any format `mf_tf.geometry.calibration_formats` reads (canonical JSON, Panoptic JSON,
OpenCV / anipose / Caliscope / Pose2Sim TOML, Qualisys .qca.txt, EasyMocap intri.yml +
extri.yml) and writes it as canonical JSON (.json), TOML (.toml, the Pose2Sim / anipose layout,
metres) or EasyMocap (a folder: intri.yml + extri.yml), chosen by the output's extension or by
config.calibrate.format. An output given without a folder goes under <workdir>/calibrate/.
Prints each camera's reprojection agreement between the file read and the file written (the
same 3D points projected through both, px), which is 0 up to the formats' precision.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np
from absl import logging

from mf_tf.geometry import calibration
from mf_tf.geometry import calibration_formats
from mf_tf.geometry import checkerboard
from mf_tf.geometry import people_calibration
from mf_tf.geometry import rig_comparison
from mf_tf.geometry.rig import Rig
from mf_tf.modes import video
from mf_tf.reconstruct import people_matching
from mf_tf.reconstruct import people_tracks
from mf_tf.reconstruct import recording as recording_lib

_RECORDING_KEYS = ("session", "videos", "frames_dir")


def run(config, workdir: str) -> None:
  """--mode=calibrate: reads config.calibrate (see configs/default.py)."""
  settings = config.calibrate
  given = [key for key in _RECORDING_KEYS if str(getattr(settings, key)).strip()]
  if given:
    if len(given) > 1:
      raise ValueError(f"config.calibrate: {given} given; expected exactly one of session, videos "
                       "or frames_dir")
    calibrate_from_people(settings, workdir)
    return
  convert(settings, workdir)


def parse_camera_distance(text: str, camera_names) -> tuple[str, str, float] | None:
  """"cam01,cam02,2850" -> ("cam01", "cam02", 2850.0); "" -> None."""
  if not str(text).strip():
    return None
  parts = [part.strip() for part in str(text).split(",")]
  try:
    distance = float(parts[2]) if len(parts) == 3 else float("nan")
  except ValueError:
    distance = float("nan")
  if (len(parts) != 3 or not all(part in camera_names for part in parts[:2])
      or parts[0] == parts[1] or not distance > 0):
    raise ValueError(f"config.calibrate.camera_distance={text!r}: expected CAMERA_A,CAMERA_B,MM "
                     f"with two different cameras of {list(camera_names)} and a distance > 0 mm")
  return parts[0], parts[1], distance


def load_intrinsics(settings, recording: recording_lib.Recording) -> Rig:
  """The recording's cameras with known intrinsics (R = I, t = 0 where none are known).

  From config.calibrate.intrinsics (a calibration file: K, distortion, size) or from
  config.calibrate.checkerboard (board images per camera), fitted to the frames' sizes.
  """
  intrinsics, boards = str(settings.intrinsics).strip(), str(settings.checkerboard).strip()
  if bool(intrinsics) == bool(boards):
    raise ValueError("config.calibrate: give the cameras' intrinsics as exactly one of "
                     "intrinsics (a calibration file) or checkerboard (a folder of board images "
                     f"per camera); got intrinsics={intrinsics!r}, checkerboard={boards!r}")
  if intrinsics:
    return video.load_rig(intrinsics, recording, str(settings.units))
  results = checkerboard.calibrate_folder(boards, checkerboard.parse_board(settings.board),
                                          float(settings.square_mm), recording.camera_names)
  for camera, result in results.items():
    print(f"calibrate: camera {camera}: checkerboard intrinsics from {len(result.images_used)} of "
          f"{len(result.images_used) + len(result.images_rejected)} images, RMS "
          f"{result.rms_px:.3f} px, f = {result.camera.K[0, 0]:.1f}, {result.camera.K[1, 1]:.1f} "
          f"px, principal point {result.camera.K[0, 2]:.1f}, {result.camera.K[1, 2]:.1f} px")
  rig = Rig("checkerboard", [result.camera for result in results.values()])
  return calibration_formats.fit_to_image_size(rig, recording.frame_sizes)


def frame_range(settings, num_frames: int) -> tuple[int, int, int]:
  """(start, stop, stride) of the frames to read; stride 0 spreads max_frames over the range."""
  start, stop, stride = int(settings.start), int(settings.stop), int(settings.stride)
  max_frames = int(settings.max_frames)
  stop = min(stop or num_frames, num_frames)
  if start < 0 or stride < 0 or max_frames < 1 or start >= stop:
    raise ValueError(f"config.calibrate start={start}, stop={settings.stop}, stride={stride}, "
                     f"max_frames={max_frames} for a recording of {num_frames} frames: expected "
                     "0 <= start < stop (0: the end), stride >= 0 (0: spread max_frames) and "
                     "max_frames >= 1")
  return start, stop, stride or max(1, math.ceil((stop - start) / max_frames))


def calibrate_from_people(settings, workdir: str) -> people_calibration.CalibrationResult:
  """The rig from the people of the recording named by config.calibrate; see the docstring."""
  height = float(settings.person_height_mm)
  if height < 0:
    raise ValueError(f"config.calibrate.person_height_mm={height}, expected > 0 (0: not given)")
  with video.open_input(settings) as recording:
    distance = parse_camera_distance(settings.camera_distance, recording.camera_names)
    if distance is None and not height:
      raise ValueError("config.calibrate: no metric scale: give person_height_mm (the people's "
                       "stature, mm) or camera_distance=CAMERA_A,CAMERA_B,MM (a measured distance "
                       f"between two of the cameras {recording.camera_names})")
    intrinsics = load_intrinsics(settings, recording)
    start, stop, stride = frame_range(settings, recording.num_frames)
    frames = (images for _, _, images in recording.frames(start=start, stop=stop, stride=stride))
    count = len(range(start, stop, stride))
    logging.info("calibrate: %s, %d frames (%d:%d:%d)", recording, count, start, stop, stride)
    started = time.perf_counter()
    detections = people_tracks.detect(video.models(int(settings.workers)), frames,
                                      intrinsics.cameras, str(settings.joint_set))
    detected = time.perf_counter()
  observations = people_matching.match_people(
      detections, intrinsics.cameras, str(settings.joint_set),
      association=str(settings.association), min_score=float(settings.min_score),
      max_people=int(settings.max_people) or None)
  num_people = observations.scores.shape[2]
  print(f"calibrate: {count} frames x {len(intrinsics.cameras)} cameras, {num_people} people "
        f"matched across views (detection {detected - started:.1f} s, matching "
        f"{time.perf_counter() - detected:.1f} s)")
  result = people_calibration.estimate_extrinsics(
      observations, intrinsics.cameras, min_score=float(settings.min_score),
      person_height_mm=height or None, camera_distance=distance,
      refine_focal=bool(settings.refine_focal), name=str(settings.name))
  target = os.path.join(workdir, "calibrate", f"{settings.name}.json")
  os.makedirs(os.path.dirname(target), exist_ok=True)
  calibration.save_rig_file(result.rig, target)
  for camera in result.rig.cameras:
    print(f"calibrate: camera {camera.name}: reprojection error "
          f"{result.reprojection_error_px[camera.name]:.2f} px (median), inliers "
          f"{100 * result.inlier_fraction[camera.name]:.0f}%")
  print(f"calibrate: rig {result.rig.name!r} ({len(result.rig.cameras)} cameras, "
        f"{result.num_points} 3D points) written to {target}")
  if str(settings.reference).strip():
    with video.open_input(settings) as recording:
      reference = video.load_rig(str(settings.reference).strip(), recording, str(settings.units))
    report_against_reference(result.rig, reference, observations, with_scale=distance is not None,
                             min_score=float(settings.min_score))
  return result


def report_against_reference(estimated: Rig, reference: Rig, observations, *, with_scale: bool,
                             min_score: float) -> dict:
  """Prints and returns `compare_rigs` and `compare_reconstructions` of the two rigs."""
  errors = rig_comparison.compare_rigs(estimated, reference, with_scale=with_scale)
  alignment = "similarity" if with_scale else "rigid, scale judged"
  for name in reference.camera_names:
    print(f"calibrate: camera {name} against the reference: rotation "
          f"{errors['rotation_deg'][name]:.2f} deg, centre {errors['center_mm'][name]:.0f} mm "
          f"({errors['center_percent'][name]:.2f}% of the rig's {errors['rig_size_mm']:.0f} mm, "
          f"after {alignment})")
  reconstruction = rig_comparison.compare_reconstructions(
      observations, estimated, reference, with_scale=with_scale, min_score=min_score)
  print(f"calibrate: MPJPE between the people triangulated with the estimated and the reference "
        f"rig: {reconstruction['mpjpe_mm']:.1f} mm (median {reconstruction['median_mm']:.1f} mm, "
        f"{reconstruction['joints']} joints); scale estimated / reference {errors['scale']:.4f}")
  return {**errors, **reconstruction}


def convert(settings, workdir: str) -> None:
  """Conversion of config.calibrate.calibration into config.calibrate.convert."""
  source, target = str(settings.calibration).strip(), str(settings.convert).strip()
  if not source or not target:
    raise ValueError("config.calibrate.calibration (the file to read) and config.calibrate.convert "
                     "(the file or folder to write) are both required")
  if not os.path.exists(os.path.expanduser(source)):
    raise FileNotFoundError(f"calibration file {source!r} not found")
  rig = calibration_formats.read_calibration(os.path.expanduser(source),
                                             units=str(settings.units) or None)
  if not os.path.dirname(target):
    target = os.path.join(workdir, "calibrate", target)
  target = os.path.expanduser(target)
  calibration_formats.write_calibration(rig, target, format=str(settings.format) or None)
  image_sizes = {camera.name: (camera.width, camera.height) for camera in rig.cameras}
  again = calibration_formats.read_calibration(target, image_sizes=image_sizes)
  # A grid of points in front of every camera: 2 m around the point nearest to every optical axis.
  centers = np.stack([-camera.R.T @ camera.t for camera in rig.cameras])
  middle = centers.mean(axis=0)
  grid = middle + np.stack(np.meshgrid(*[np.linspace(-1000, 1000, 5)] * 3), -1).reshape(-1, 3)
  for camera, other in zip(rig.cameras, again.cameras):
    uv, depth = camera.project(grid)
    uv_again, _ = other.project(grid)
    seen = depth > 0
    difference = float(np.abs(uv[seen] - uv_again[seen]).max()) if seen.any() else 0.0
    print(f"calibrate: camera {camera.name}: {camera.width}x{camera.height}, largest projection "
          f"difference after the round trip {difference:.2e} px")
  print(f"calibrate: {len(rig.cameras)} cameras of {source} written to {target}")
