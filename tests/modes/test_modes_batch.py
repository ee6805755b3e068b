"""--mode=batch's edge and one session's work, without Beam: one clear error for a bad sessions
root or a missing Beam, a failing session reported and not raised, the completion marker.

The pipeline itself runs in tests/pipelines/test_batch_beam.py."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest

from configs import default
from mf_tf.modes import batch as batch_mode
from mf_tf.pipelines import sessions as sessions_lib

from video_settings import session_settings  # pylint: disable=wrong-import-order


def _config(sessions_root):
  config = default.get_config()
  config.batch.sessions_root = str(sessions_root)
  return config


def test_a_bad_sessions_root_is_one_clear_error(tmp_path):
  with pytest.raises(ValueError, match="config.batch.sessions_root is empty"):
    batch_mode.run(_config(""), str(tmp_path))
  with pytest.raises(ValueError, match="sessions root .*absent' does not exist"):
    batch_mode.run(_config(tmp_path / "absent"), str(tmp_path))
  (tmp_path / "file").write_text("x")
  with pytest.raises(ValueError, match="sessions root .*file' is not a folder"):
    batch_mode.run(_config(tmp_path / "file"), str(tmp_path))
  (tmp_path / "root" / "notes").mkdir(parents=True)
  with pytest.raises(ValueError, match=r"holds no session \(entries: \['notes'\]\)"):
    batch_mode.run(_config(tmp_path / "root"), str(tmp_path))
  assert not (tmp_path / "batch").exists()


def test_without_beam_the_error_names_the_install_command(tmp_path, monkeypatch):
  (tmp_path / "root" / "trial" / "videos").mkdir(parents=True)
  find_spec = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec",
                      lambda name, *args: None if name == "apache_beam" else find_spec(name, *args))
  with pytest.raises(ValueError, match=r'needs Apache Beam.*pip install -e "\.\[beam\]"'):
    batch_mode.run(_config(tmp_path / "root"), str(tmp_path))


def test_the_command_line_gives_one_error_line(repo_root, tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "mf_tf.main", "--mode=batch", f"--workdir={tmp_path}",
       f"--config.batch.sessions_root={tmp_path / 'absent'}", "--", "--runner=DirectRunner"],
      cwd=repo_root, capture_output=True, text=True, timeout=300,
      env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
  assert result.returncode == 2, result.stderr
  lines = result.stderr.strip().splitlines()
  assert lines[-1].startswith("error: sessions root") and "does not exist" in lines[-1], lines
  assert "Traceback" not in result.stderr


def test_a_failing_session_is_reported_and_leaves_nothing(repo_root, tmp_path):
  bare = tmp_path / "sessions" / "bare"
  shutil.copytree(repo_root / "tests" / "fixtures" / "pose2sim_clips" / "videos", bare / "videos")
  output = tmp_path / "out"
  output.mkdir()

  def models():
    raise AssertionError("models loaded before the inputs were checked")

  result = sessions_lib.process_session("bare", str(bare), str(output),
                                        session_settings(), models)
  assert result["status"] == "failed"
  assert result["error"].startswith("CalibrationError: no calibration for the recording"), result
  assert os.listdir(output) == []  # No output folder, no staging folder.
  result = sessions_lib.process_session("../escape", str(bare), str(output),
                                        session_settings(), models)
  assert result["status"] == "failed" and "not a safe name" in result["error"]


def test_the_completion_marker_holds_the_settings(tmp_path):
  settings = session_settings()
  assert not sessions_lib.is_done(str(tmp_path), settings)
  (tmp_path / sessions_lib.DONE_MARKER).write_text(
      json.dumps({"settings": sessions_lib.settings_record(settings)}))
  assert sessions_lib.is_done(str(tmp_path), session_settings())
  assert not sessions_lib.is_done(str(tmp_path), session_settings(stride=2))
  (tmp_path / sessions_lib.DONE_MARKER).write_text("{")
  assert not sessions_lib.is_done(str(tmp_path), settings)
