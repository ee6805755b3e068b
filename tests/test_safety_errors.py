"""Bad input from the command line ends in one `error:` line naming it, exit status 2, and no
traceback: unknown config keys with a config file, unwritable workdirs, detector parameters that
cannot be rendered. Also: a calibrated camera without a video or image folder is warned about.
"""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
import types

import pytest

from mf_tf import main as main_lib

SMOKE = "--config=configs/default.py:smoke"


def run_cli(repo_root, *args, timeout=120):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
  return subprocess.run([sys.executable, "-m", "mf_tf.main", *args], cwd=repo_root, env=env,
                        capture_output=True, text=True, timeout=timeout, check=False)


def one_error_line(result, *words) -> str:
  """Exit status 2, no traceback, and exactly one `error:` line (the last of stderr) holding
  every one of `words`."""
  assert result.returncode == 2, result.stderr[-3000:]
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  lines = result.stderr.strip().splitlines()
  errors = [line for line in lines if line.startswith("error:")]
  assert len(errors) == 1 and lines[-1] == errors[0], result.stderr[-3000:]
  for word in words:
    assert word in errors[0], errors[0]
  return errors[0]


# ------------------------------------------------------------------------------------------------
# Unknown config keys: with or without a config file, one line naming the key and a close match.


@pytest.mark.parametrize("config", [[SMOKE], []], ids=["with_config_file", "default_config"])
@pytest.mark.parametrize("override, key, match", [
    ("--config.metatrain.num_stepz=3", "num_stepz", "num_steps"),
    ("--config.metatrainz.num_steps=3", "metatrainz", "metatrain"),
])
def test_unknown_config_key_is_one_line_with_a_suggestion(repo_root, tmp_path, config, override,
                                                          key, match):
  result = run_cli(repo_root, "--mode=simulate", *config, override, f"--workdir={tmp_path / 'w'}")
  line = one_error_line(result, f"--{override.split('=')[0][2:]}",
                        f"unknown config key {key!r}", f"did you mean {match!r}")
  assert "\\" not in line and "\n" not in line
  assert not (tmp_path / "w").exists()  # Refused while parsing flags: nothing created.


def test_unknown_config_key_without_a_close_match(repo_root, tmp_path):
  result = run_cli(repo_root, "--mode=simulate", SMOKE, "--config.zzzqqq=1",
                   f"--workdir={tmp_path / 'w'}")
  line = one_error_line(result, "--config.zzzqqq", "unknown config key 'zzzqqq'")
  assert "did you mean" not in line


# ------------------------------------------------------------------------------------------------
# A workdir that cannot be written fails before any work, naming the path.


def test_workdir_below_a_file_is_one_line(repo_root, tmp_path):
  # A path below a regular file cannot be created by anyone, root included.
  afile = tmp_path / "afile"
  afile.write_text("not a folder")
  workdir = afile / "work"
  result = run_cli(repo_root, "--mode=simulate", SMOKE, f"--workdir={workdir}")
  one_error_line(result, f"--workdir={workdir}", "not writable", "Not a directory")


def _read_only_folder(tmp_path) -> str | None:
  """A folder path this process cannot create or write in, or None when there is none.

  chmod is no obstacle to root, so root gets a path in sysfs (the kernel refuses mkdir there to
  everyone); another user gets a 0500 folder.
  """
  if os.geteuid() != 0:
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o500)
    return str(folder / "work")
  candidate = "/sys/mf_tf_workdir_test"
  if not os.path.isdir("/sys") or os.path.exists(candidate):
    return None
  try:
    os.mkdir(candidate)
  except OSError:
    return candidate
  os.rmdir(candidate)
  return None


def test_read_only_workdir_is_one_line_before_any_work(repo_root, tmp_path):
  workdir = _read_only_folder(tmp_path)
  if workdir is None:
    pytest.skip("no folder this process cannot write")
  try:
    result = run_cli(repo_root, "--mode=simulate", SMOKE, f"--workdir={workdir}")
  finally:
    if os.geteuid() != 0:
      os.chmod(os.path.dirname(workdir), 0o700)
  one_error_line(result, f"--workdir={workdir}", "not writable")
  assert "simulate:" not in result.stderr  # Refused before the mode started.


def test_check_workdir_leaves_only_the_folder(tmp_path):
  workdir = tmp_path / "new" / "work"
  main_lib.check_workdir(str(workdir), "new/work")
  assert workdir.is_dir() and not os.listdir(workdir)  # The probe file is gone.
  (workdir / "kept.txt").write_text("x")
  main_lib.check_workdir(str(workdir), "new/work")
  assert os.listdir(workdir) == ["kept.txt"]


def _cli(mode, workdir):
  value = types.SimpleNamespace
  return value(mode=value(value=mode), workdir=value(value=workdir), config=value(value=None),
               server=value(value=None), rig=value(value=None), images=value(value=[]))


def test_os_error_after_the_work_is_one_line_naming_the_path(tmp_path, monkeypatch, capsys):
  # A disk that fills up while a mode writes (after the early check passed): one line with the
  # path and the reason, exit 2.
  from configs import default

  full = str(tmp_path / "w" / "simulate" / "h36m" / "shard-00000.tfrecord")

  def run(config, workdir):
    raise OSError(errno.ENOSPC, "No space left on device", full)

  monkeypatch.setattr(main_lib, "resolve_mode", lambda mode: run)
  monkeypatch.setattr(sys, "argv", ["mf_tf.main", "--mode=simulate"])
  cli = _cli("simulate", str(tmp_path / "w"))
  cli.config.value = default.get_config("smoke")
  with pytest.raises(SystemExit) as info:
    main_lib.main(["mf_tf.main"], cli)
  assert info.value.code == main_lib.USER_ERROR_EXIT_CODE
  lines = capsys.readouterr().err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), lines
  assert full in lines[0] and "No space left on device" in lines[0] and "ENOSPC" in lines[0]


# ------------------------------------------------------------------------------------------------
# Detector parameters: checked where they are built, naming the parameter and its range.


@pytest.mark.parametrize("sigma", ["0", "1e-200", "1e300", "0.01", "inf"])
def test_detector_sigma_out_of_range_is_one_line_before_any_work(repo_root, tmp_path, sigma):
  workdir = tmp_path / "w"
  result = run_cli(repo_root, "--mode=simulate", SMOKE, f"--config.detector.sigma={sigma}",
                   f"--workdir={workdir}")
  one_error_line(result, "config.detector", "sigma=", "expected")
  assert not (workdir / "simulate").exists()


def test_detector_params_name_the_parameter_and_range():
  from mf_tf.data import detector

  with pytest.raises(ValueError, match=r"sigma=1e-200, expected a finite number of px > 0"):
    detector.DetectorParams(sigma=1e-200)
  with pytest.raises(ValueError, match=r"sigma=0.01 px, expected 0.1 <= sigma <= 64.0 px"):
    detector.detector_params_from_config({"sigma": 0.01})
  with pytest.raises(ValueError, match=r"noise_level=inf, expected a finite number >= 0"):
    detector.DetectorParams(noise_level=float("inf"))
  with pytest.raises(ValueError, match=r"distractor_amplitude=\(0.5, inf\), expected finite"):
    detector.DetectorParams(distractor_amplitude=(0.5, float("inf")))
  with pytest.raises(ValueError, match=r"sigma=0.0, expected a finite number of px > 0"):
    detector.splat_peaks([[[0.0, 0.0]]], [[1.0]], 8, 0.0)  # A sigma read from a dataset.
  assert detector.DetectorParams(sigma=0.1).scaled(16).sigma == pytest.approx(0.025)


# ------------------------------------------------------------------------------------------------
# --mode=video: a calibrated camera with no video or image folder is warned about by name.


def test_video_warns_naming_a_calibrated_camera_without_a_folder(tmp_path, caplog):
  from mf_tf.geometry import calibration
  from mf_tf.geometry.rigs import ring_rig
  from mf_tf.modes import video

  rig = ring_rig(3, seed=3, image_size=(640, 480), name="session")
  path = str(tmp_path / "calibration.json")
  calibration.save_rig_file(rig, path)
  recorded = rig.camera_names[:2]  # The third camera's folder is missing.
  recording = types.SimpleNamespace(camera_names=list(recorded), calibration_path=path,
                                    source=str(tmp_path / "frames"),
                                    frame_sizes={name: (640, 480) for name in recorded})
  with caplog.at_level(logging.WARNING):
    loaded = video.load_rig("", recording)
  assert list(loaded.camera_names) == list(recorded)
  warnings = [record.getMessage() for record in caplog.records
              if record.levelno >= logging.WARNING]
  assert any(rig.camera_names[2] in message for message in warnings), warnings
