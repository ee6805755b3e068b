"""--mode=calibrate: a real Qualisys calibration converted to TOML and EasyMocap and read back."""

import pathlib

import cv2
import numpy as np
import pytest

from configs import default
from mf_tf.geometry import calibration
from mf_tf.geometry import calibration_formats
from mf_tf.geometry import rig_comparison
from mf_tf.geometry.camera import CalibrationError
from mf_tf.modes import calibrate


@pytest.fixture(scope="module")
def qualisys(repo_root):
  return (pathlib.Path(repo_root) / "tests" / "fixtures" / "pose2sim_multiperson" / "calibration"
          / "Calib.qca.txt")


def _config(**overrides):
  config = default.get_config()
  for key, value in overrides.items():
    setattr(config.calibrate, key, value)
  return config


@pytest.mark.parametrize("output", ["calibration.toml", "easymocap", "rig.json"])
def test_conversion_keeps_every_projection(qualisys, tmp_path, capsys, output):
  calibrate.run(_config(calibration=str(qualisys), convert=output), str(tmp_path))
  assert "4 cameras" in capsys.readouterr().out
  original = calibration_formats.read_calibration(str(qualisys))
  sizes = {camera.name: (camera.width, camera.height) for camera in original.cameras}
  converted = calibration_formats.read_calibration(str(tmp_path / "calibrate" / output),
                                                   image_sizes=sizes)
  assert converted.camera_names == original.camera_names
  # Points around the lab's floor centre, up to 2 m high (the Qualisys world is in mm, z up).
  grid = np.stack(np.meshgrid(np.linspace(-1500, 1500, 4), np.linspace(-1500, 1500, 4),
                              np.linspace(0, 2000, 3)), -1).reshape(-1, 3)
  for camera, other in zip(original.cameras, converted.cameras):
    uv, depth = camera.project(grid)
    assert (depth > 0).all()
    np.testing.assert_allclose(other.project(grid)[0], uv, atol=1e-6)


def test_missing_settings_and_files_are_named(tmp_path):
  with pytest.raises(ValueError, match="are both required"):
    calibrate.run(_config(calibration="x.toml"), str(tmp_path))
  with pytest.raises(FileNotFoundError, match="calibration file 'absent.qca.txt' not found"):
    calibrate.run(_config(calibration="absent.qca.txt", convert="out.toml"), str(tmp_path))


# ------------------------------------------------------------------- calibration from people


def _people_config(**overrides):
  config = default.get_config()
  for key, value in overrides.items():
    setattr(config.calibrate, key, value)
  return config


@pytest.fixture(scope="module")
def multiperson(repo_root):
  return pathlib.Path(repo_root) / "tests" / "fixtures" / "pose2sim_multiperson"


@pytest.mark.large
def test_people_calibration_of_the_pose2sim_demo(multiperson, qualisys, tmp_path, capsys):
  reference = calibration_formats.read_calibration(str(qualisys))
  distance = np.linalg.norm(reference.cameras[0].center - reference.cameras[1].center)
  config = _people_config(session=str(multiperson), intrinsics=str(qualisys),
                          camera_distance=f"cam01,cam02,{distance:.1f}", max_frames=50,
                          reference=str(qualisys))
  result = calibrate.calibrate_from_people(config.calibrate, str(tmp_path))
  out = capsys.readouterr().out
  assert "2 people matched across views" in out and "MPJPE" in out
  written = calibration.load_rig_file(tmp_path / "calibrate" / "people.json")
  assert written.camera_names == reference.camera_names
  errors = rig_comparison.compare_rigs(result.rig, reference)
  # The benchmark's worst rotation on 50 frames of this recording is 3.0 deg (cam03) and its
  # centres stay within 1.5% of the 6.7 m rig; the detector's keypoints themselves disagree with
  # this reference on cam03 (BUILD.md), so 2 deg is out of reach of any rig fitted to them.
  assert errors["max_center_percent"] < 5
  assert errors["max_rotation_deg"] < 3.5


def test_no_scale_is_an_error(multiperson, qualisys, tmp_path):
  with pytest.raises(ValueError, match="no metric scale: give person_height_mm"):
    calibrate.run(_people_config(session=str(multiperson), intrinsics=str(qualisys)),
                  str(tmp_path))
  with pytest.raises(ValueError, match="camera_distance='cam01,cam09,100'"):
    calibrate.run(_people_config(session=str(multiperson), intrinsics=str(qualisys),
                                 camera_distance="cam01,cam09,100"), str(tmp_path))


def test_checkerboard_folder_without_boards_is_an_error(multiperson, tmp_path):
  for camera in ("cam01", "cam02", "cam03", "cam04"):
    (tmp_path / "boards" / camera).mkdir(parents=True)
    for k in range(3):
      cv2.imwrite(str(tmp_path / "boards" / camera / f"{k}.png"), np.full((96, 54), 128, np.uint8))
  with pytest.raises(CalibrationError, match=r"camera cam01: a 4x7 checkerboard .* found in 0 of 3"):
    calibrate.run(_people_config(session=str(multiperson), checkerboard=str(tmp_path / "boards"),
                                 person_height_mm=1750.0), str(tmp_path))


def test_camera_seeing_nobody_is_an_error(repo_root, tmp_path):
  panoptic = pathlib.Path(repo_root) / "tests" / "fixtures" / "panoptic_demo"
  cameras = ["00_03", "00_06", "00_12", "00_13"]
  (tmp_path / "frames").mkdir()
  for camera in cameras[:3]:
    (tmp_path / "frames" / camera).symlink_to(panoptic / camera)
  (tmp_path / "frames" / "00_13").mkdir()
  for image in sorted((panoptic / "00_13").iterdir()):
    cv2.imwrite(str(tmp_path / "frames" / "00_13" / image.name), np.zeros((1080, 1920, 3),
                                                                          np.uint8))
  with pytest.raises(ValueError, match="00_13"):
    calibrate.run(_people_config(frames_dir=str(tmp_path / "frames"),
                                 intrinsics=str(panoptic / "camera_parameters.json"),
                                 person_height_mm=1700.0), str(tmp_path))
