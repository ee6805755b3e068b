"""--mode=calibrate: a real Qualisys calibration converted to TOML and EasyMocap and read back."""

import pathlib

import numpy as np
import pytest

from configs import default
from mf_tf.geometry import calibration_formats
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
