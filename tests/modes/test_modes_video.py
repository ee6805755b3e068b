"""--mode=video: input checks, an empty instant, and an end-to-end run on real Panoptic frames."""

import json
import os
import pathlib
import shutil

import numpy as np
import pytest
import tensorflow as tf

from configs import default
from mf_tf.data import joints as joints_lib
from mf_tf.models import fetch_blazepose
from mf_tf.modes import video

_CAMERAS = ("00_03", "00_06", "00_12", "00_13", "00_23")


@pytest.fixture(scope="module")
def demo(repo_root):
  return pathlib.Path(repo_root) / "tests" / "fixtures" / "panoptic_demo"  # In the repository.


@pytest.fixture(scope="module")
def blazepose_cache():
  try:
    return fetch_blazepose.verified_model_paths()
  except FileNotFoundError as error:
    pytest.skip(f"BlazePose models not cached (python -m mf_tf.models.fetch_blazepose): {error}")


def _config(frames_dir, rig, **overrides):
  config = default.get_config()
  config.video.frames_dir = str(frames_dir)
  config.video.rig = str(rig)
  for key, value in overrides.items():
    setattr(config.video, key, value)
  return config


def _write_png(path, width, height, value=128):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  image = tf.fill([height, width, 3], tf.constant(value, tf.uint8))
  tf.io.write_file(str(path), tf.io.encode_png(image))


def _copy_demo(demo, tmp_path, cameras=_CAMERAS, instants=("00004500",)):
  for camera in cameras:
    os.makedirs(tmp_path / "frames" / camera)
    for instant in instants:
      name = f"{camera}_{instant}.jpg"
      shutil.copy(demo / camera / name, tmp_path / "frames" / camera / name)
  return tmp_path / "frames"


def test_bad_inputs_raise_one_clear_error(demo, tmp_path):
  rig = demo / "camera_parameters.json"
  with pytest.raises(FileNotFoundError, match="is not a folder"):
    video.run(_config(tmp_path / "absent", rig), str(tmp_path))
  frames = _copy_demo(demo, tmp_path, cameras=("00_03", "00_06"))
  # A camera folder missing an instant the others have.
  shutil.copy(demo / "00_03" / "00_03_00005514.jpg", frames / "00_03")
  with pytest.raises(FileNotFoundError,
                     match=r"00_06'? lacks the frames of instants \['00005514'\]"):
    video.run(_config(frames, rig), str(tmp_path))
  os.remove(frames / "00_03" / "00_03_00005514.jpg")
  # A folder that names no camera of the rig (the rig has fewer cameras than folders).
  os.makedirs(frames / "99_99")
  shutil.copy(demo / "00_03" / "00_03_00004500.jpg", frames / "99_99" / "99_99_00004500.jpg")
  with pytest.raises(ValueError, match=r"camera folders \['99_99'\] have no camera in rig"):
    video.run(_config(frames, rig), str(tmp_path))
  shutil.rmtree(frames / "99_99")
  # A frame of another size than its camera's.
  os.remove(frames / "00_06" / "00_06_00004500.jpg")
  _write_png(frames / "00_06" / "00_06_00004500.png", 960, 540)
  with pytest.raises(ValueError, match=r"00_06_00004500.png' is 960x540, expected 1920x1080"):
    video.run(_config(frames, rig), str(tmp_path))
  with pytest.raises(ValueError, match="fusion='dense', expected one of"):
    video.run(_config(frames, rig, fusion="dense"), str(tmp_path))


def test_no_person_gives_an_empty_well_formed_json(demo, blazepose_cache, tmp_path):
  for camera in ("00_03", "00_06"):
    _write_png(tmp_path / "frames" / camera / "000001.png", 1920, 1080)
  video.run(_config(tmp_path / "frames", demo / "camera_parameters.json", overlays=False),
            str(tmp_path))
  with open(tmp_path / "video" / "frames" / "000001.json") as stream:
    record = json.load(stream)
  assert record["people"] == [] and record["detections"] == {"00_03": 0, "00_06": 0}
  assert record["cameras"] == ["00_03", "00_06"] and record["instant"] == "000001"
  assert len(record["joint_names"]) == 17


def test_end_to_end_on_a_real_panoptic_instant(demo, blazepose_cache, tmp_path):
  frames = _copy_demo(demo, tmp_path)
  video.run(_config(frames, demo / "camera_parameters.json"), str(tmp_path))
  with open(tmp_path / "video" / "frames" / "00004500.json") as stream:
    record = json.load(stream)
  assert record["fusion"] == "epipolar" and len(record["people"]) >= 1
  h36m = joints_lib.get_joint_set("h36m17")
  thighs = []
  for person in record["people"]:
    assert len(person["views"]) >= 2
    for camera in person["views"]:
      assert np.asarray(person["joints2d_after"][camera]).shape == (17, 2)
    points = np.array([np.nan * np.ones(3) if p is None else p for p in person["joints3d_mm"]])
    for hip, knee in (("lhip", "lknee"), ("rhip", "rknee")):
      length = np.linalg.norm(points[h36m.index(hip)] - points[h36m.index(knee)])
      if np.isfinite(length):
        thighs.append(length)
  # The person seen by all 5 views has plausible thighs; most thighs are plausible.
  best = record["people"][0]
  assert len(best["views"]) == 5
  assert thighs and np.mean([300 <= t <= 600 for t in thighs]) >= 0.5, thighs
  overlays = sorted(os.listdir(tmp_path / "video" / "overlays"))
  assert overlays == [f"00004500_{camera}.png" for camera in _CAMERAS]
  with open(tmp_path / "video" / "summary.json") as stream:
    assert json.load(stream)[0]["people"] == len(record["people"])
