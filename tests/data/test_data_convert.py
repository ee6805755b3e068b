"""The one-time annotation conversion: module CLI and --mode=convert."""

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from configs import default
from mf_tf.data import convert
from mf_tf.data import h36m
from mf_tf.modes import convert as convert_mode

from test_data_h36m import _crossview_items  # noqa: E402  (same tests/data folder)


@pytest.fixture()
def annotation_pickle(tmp_path):
  _, items = _crossview_items(subject=11, image_ids=(5,))
  path = tmp_path / "h36m_train.pkl"
  with open(path, "wb") as f:
    pickle.dump(items, f)
  return path, items


def test_command_line(tmp_path, annotation_pickle, repo_root):
  path, items = annotation_pickle
  out = tmp_path / "safe"
  result = subprocess.run(
      [sys.executable, "-m", "mf_tf.main", "--mode=convert", f"--workdir={tmp_path}",
       f"--config.convert.input={path}", f"--config.convert.output={out}",
       "--config.convert.trust_pickle=True"], cwd=repo_root,
      capture_output=True, text=True, timeout=300,
      env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
  assert result.returncode == 0, result.stderr
  assert "executes any code" in result.stderr  # the warning is logged on every conversion
  data = h36m.read_h36m_multiview(str(out), subject=11)
  np.testing.assert_allclose(data["joints3d"][0], items[0]["joints_3d"])
  np.testing.assert_allclose(data["joints2d"][0, 2], items[2]["joints_2d"])
  helped = subprocess.run([sys.executable, "-m", "mf_tf.main", "--helpfull"], cwd=repo_root,
                          capture_output=True, text=True, timeout=300)
  assert "convert: convert a TRUSTED annotation pickle" in helped.stdout + helped.stderr


def test_mode_convert(tmp_path, annotation_pickle):
  path, _ = annotation_pickle
  config = default.get_config("smoke")
  config.convert.input = str(path)
  config.convert.trust_pickle = True
  convert_mode.run(config, str(tmp_path))
  data = h36m.read_h36m_annotations(str(tmp_path / "converted" / "h36m"))
  assert data["image"].shape == (4,) and sorted(data["cameras"]) == [
      "S11/0", "S11/1", "S11/2", "S11/3"]
  items = annotation_pickle[1]
  np.testing.assert_array_equal(data["image"], [item["image"] for item in items])
  np.testing.assert_array_equal(data["joints_2d"], [item["joints_2d"][:, :2] for item in items])
  np.testing.assert_array_equal(data["joints_3d"], [item["joints_3d"] for item in items])
  np.testing.assert_array_equal(data["camera_id"], [0, 1, 2, 3])
  config.convert.input = ""
  with pytest.raises(ValueError, match="needs --config.convert.input"):
    convert_mode.run(config, str(tmp_path))
  config.convert.input = str(tmp_path / "absent.pkl")
  with pytest.raises(FileNotFoundError, match="absent.pkl"):
    convert_mode.run(config, str(tmp_path))


def test_pickle_is_confined_to_the_converter(repo_root):
  users = []
  for folder, _, files in os.walk(repo_root / "mf_tf"):
    for name in files:
      if name.endswith(".py"):
        text = open(os.path.join(folder, name)).read()
        if "import pickle" in text or "allow_pickle=True" in text:
          users.append(os.path.relpath(os.path.join(folder, name), repo_root))
  assert users == [os.path.join("mf_tf", "data", "convert.py")]


def _tiny_camera(shift):
  return {"R": np.eye(3), "T": np.array([[100.0 + shift], [-50.0], [2000.0]]),
          "fx": 1100.0 + shift, "fy": 1120.0, "cx": 500.0, "cy": 510.0,
          "k": np.array([[-0.2], [0.1], [0.01]]), "p": np.array([[1e-3], [-2e-3]]),
          "w": 640, "h": 480}


def test_tiny_annotation_converts_to_exact_arrays(tmp_path):
  joints = np.arange(17, dtype=np.float64)
  vis = np.zeros((17, 3))
  vis[::2, 0] = 1.0  # Only the first column counts.
  vis[:, 1:] = 7.0
  items = [
      {"image": "s_01_act_03_subact_02_ca_01/s_01_act_03_subact_02_ca_01_000042.jpg",
       "joints_2d": np.stack([joints, 2 * joints, np.full(17, 9.0)], axis=1),  # [17, 3]
       "joints_3d": np.stack([joints, -joints, joints + 1000.0], axis=1),
       "joints_vis": vis, "subject": 1, "action": 3, "subaction": 2, "camera_id": 0,
       "camera": _tiny_camera(0.0), "center": (320.0, 240.0), "scale": (2.0, 2.5),
       "box": np.array([1.0, 2.0, 3.0, 4.0])},
      {"image": "s_01_act_03_subact_02_ca_02/s_01_act_03_subact_02_ca_02_000042.jpg",
       "image_id": 7, "joints_2d": np.stack([joints + 0.5, joints], axis=1),
       "joints_3d": np.zeros((17, 3)), "joints_vis": np.ones(17), "subject": 1, "action": 3,
       "subaction": 2, "camera_id": 1, "camera": _tiny_camera(10.0)},
  ]
  out = convert.convert_h36m_items(items, str(tmp_path / "tiny"), source="tiny.pkl")
  data = h36m.read_h36m_annotations(out)
  np.testing.assert_array_equal(data["image"], [item["image"] for item in items])
  np.testing.assert_array_equal(data["joints_2d"][0], np.stack([joints, 2 * joints], axis=1))
  np.testing.assert_array_equal(data["joints_2d"][1], np.stack([joints + 0.5, joints], axis=1))
  np.testing.assert_array_equal(data["joints_3d"][0], items[0]["joints_3d"])
  np.testing.assert_array_equal(data["joints_3d"][1], 0.0)
  np.testing.assert_array_equal(data["joints_vis"][0], vis[:, 0])
  np.testing.assert_array_equal(data["joints_vis"][1], 1.0)
  np.testing.assert_array_equal(data["center"][0], [320.0, 240.0])
  np.testing.assert_array_equal(data["scale"][0], [2.0, 2.5])
  assert np.isnan(data["center"][1]).all() and np.isnan(data["scale"][1]).all()  # Absent.
  for key, want in (("subject", [1, 1]), ("action", [3, 3]), ("subaction", [2, 2]),
                    ("camera_id", [0, 1]), ("image_id", [42, 7])):  # 42: from the file name.
    np.testing.assert_array_equal(data[key], want, err_msg=key)
    assert data[key].dtype == np.int64, key
  assert "box" not in data  # Optional arrays are kept only when every item has them.
  assert sorted(data["cameras"]) == ["S1/0", "S1/1"]
  for key, shift in (("S1/0", 0.0), ("S1/1", 10.0)):
    camera = data["cameras"][key]
    np.testing.assert_array_equal(camera.K, [[1100.0 + shift, 0, 500.0], [0, 1120.0, 510.0],
                                             [0, 0, 1]])
    np.testing.assert_array_equal(camera.R, np.eye(3))
    np.testing.assert_allclose(camera.t, [-100.0 - shift, 50.0, -2000.0])  # t = -R T.
    np.testing.assert_allclose(camera.dist, [-0.2, 0.1, 1e-3, -2e-3, 0.01])
    assert (camera.width, camera.height) == (640, 480)
