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

from test_data_h36m import _crossview_items  # noqa: E402  (same tests/data folder)


@pytest.fixture()
def annotation_pickle(tmp_path):
  _, items = _crossview_items(subject=11, image_ids=(5,))
  path = tmp_path / "h36m_train.pkl"
  with open(path, "wb") as f:
    pickle.dump(items, f)
  return path, items


def test_module_cli(tmp_path, annotation_pickle, repo_root):
  path, items = annotation_pickle
  out = tmp_path / "safe"
  result = subprocess.run(
      [sys.executable, "-m", "mf_tf.data.convert", "--format=h36m_pickle", f"--input={path}",
       f"--output={out}"], cwd=repo_root, capture_output=True, text=True, timeout=300,
      env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
  assert result.returncode == 0, result.stderr
  assert "executes any code" in result.stderr  # the warning is logged on every conversion
  data = h36m.read_h36m_multiview(str(out), subject=11)
  np.testing.assert_allclose(data["joints3d"][0], items[0]["joints_3d"])
  np.testing.assert_allclose(data["joints2d"][0, 2], items[2]["joints_2d"])
  helped = subprocess.run([sys.executable, "-m", "mf_tf.data.convert", "--help"], cwd=repo_root,
                          capture_output=True, text=True, timeout=300)
  assert "TRUSTED" in helped.stdout + helped.stderr


def test_mode_convert(tmp_path, annotation_pickle):
  path, _ = annotation_pickle
  config = default.get_config("smoke")
  config.convert.input = str(path)
  convert.run(config, str(tmp_path), args=None)
  data = h36m.read_h36m_annotations(str(tmp_path / "converted" / "h36m"))
  assert data["image"].shape == (4,) and sorted(data["cameras"]) == [
      "S11/0", "S11/1", "S11/2", "S11/3"]
  config.convert.input = ""
  with pytest.raises(ValueError, match="needs --config.convert.input"):
    convert.run(config, str(tmp_path), args=None)
  config.convert.input = str(tmp_path / "absent.pkl")
  with pytest.raises(FileNotFoundError, match="absent.pkl"):
    convert.run(config, str(tmp_path), args=None)


def test_pickle_is_confined_to_the_converter(repo_root):
  users = []
  for folder, _, files in os.walk(repo_root / "mf_tf"):
    for name in files:
      if name.endswith(".py"):
        text = open(os.path.join(folder, name)).read()
        if "import pickle" in text or "allow_pickle=True" in text:
          users.append(os.path.relpath(os.path.join(folder, name), repo_root))
  assert users == [os.path.join("mf_tf", "data", "convert.py")]
