"""The command line: mode lookup, help, and one-line user errors with exit status 2."""

import os
import subprocess
import sys

import pytest

from mf_tf import main as main_lib


def run_cli(repo_root, *args, timeout=120):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
  return subprocess.run([sys.executable, "-m", "mf_tf.main", *args], cwd=repo_root, env=env,
                        capture_output=True, text=True, timeout=timeout, check=False)


def assert_one_error_line(result, *words):
  """Exit status 2, no traceback, and exactly one `error:` line: the last one of stderr."""
  assert result.returncode == 2, result.stderr
  assert "Traceback" not in result.stderr, result.stderr
  lines = result.stderr.strip().splitlines()
  errors = [line for line in lines if line.startswith("error: ")]
  assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
  for word in words:
    assert word in errors[0], errors[0]
  return errors[0]


@pytest.mark.parametrize("mode", sorted(main_lib.MODES))
def test_every_mode_resolves_to_a_callable(mode):
  assert callable(main_lib.resolve_mode(mode))


def test_resolve_rejects_unknown_mode():
  with pytest.raises(ValueError, match="unknown mode 'nope'.*simulate"):
    main_lib.resolve_mode("nope")


def test_importing_the_entry_point_does_not_import_tensorflow(repo_root):
  # A mode's module (and TensorFlow) is imported only when the mode runs, so --helpfull and flag
  # errors answer without it.
  code = ("import sys; from mf_tf import main; "
          "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
  result = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True,
                          text=True, timeout=60, check=True)
  assert result.stdout.split() == ["False", "False"], result.stdout + result.stderr


def test_helpfull_lists_every_mode(repo_root):
  result = run_cli(repo_root, "--helpfull")
  for mode in main_lib.MODES:
    assert f"  {mode}: " in result.stdout + result.stderr, mode


def test_unknown_mode_is_one_line(repo_root):
  assert_one_error_line(run_cli(repo_root, "--mode=nope"), "--mode=nope", "simulate")


def test_missing_mode_is_one_line(repo_root):
  assert_one_error_line(run_cli(repo_root), "--mode is required")


@pytest.mark.parametrize("override, words", [
    ("--config.metatrain.bogus=1", ("--config.metatrain.bogus", "unknown config key 'bogus'")),
    ("--config.seed=abc", ("--config.seed=abc", "invalid literal")),
])
def test_bad_override_is_one_line(repo_root, tmp_path, override, words):
  result = run_cli(repo_root, "--mode=metatrain", f"--workdir={tmp_path}", override)
  assert_one_error_line(result, *words)


def test_bad_config_variant_is_one_line(repo_root, tmp_path):
  result = run_cli(repo_root, "--mode=metatrain", f"--workdir={tmp_path}",
                   "--config=configs/default.py:nope")
  assert_one_error_line(result, "unknown config variant 'nope'")


def test_error_of_a_mode_is_one_line_and_traceback_with_verbosity(repo_root, tmp_path):
  args = ("--mode=simulate", f"--workdir={tmp_path}", "--config.rig.target=/no/such/rig.json")
  assert_one_error_line(run_cli(repo_root, *args), "/no/such/rig.json")
  verbose = run_cli(repo_root, *args, "--verbosity=1")
  assert verbose.returncode == 2
  assert "Traceback" in verbose.stderr
  assert verbose.stderr.strip().splitlines()[-1].startswith("error: ")


@pytest.mark.parametrize("extra, words", [
    (["--config.heatmap_size=0"], "config.heatmap_size=0, expected an integer >= 2"),
    (["--config.rig.target={binary}", "--mode=finetune"], "not a UTF-8 JSON text file"),
    (["--workdir={file}"], "is a file; expected a folder"),
    (["--config.fusion.loss=mse", "--mode=metatrain"],
     "--config.fusion.loss: config.fusion.loss was replaced by config.recipe"),
    (["--config.finetune.theta_grid=0", "--mode=finetune"],
     "config.finetune.theta_grid was replaced by config.recipe"),
    (["--config.recipe=bogus", "--mode=metatrain"], "config.recipe: unknown recipe 'bogus'"),
    (["--config.fusion.temperature=-1", "--mode=demo"], "fusion.temperature=-1.0, expected"),
    (["--config.rig.pretrain=no_such_rig", "--mode=metatrain"],
     "config.rig.pretrain='no_such_rig': unknown rig 'no_such_rig'"),
])
def test_bad_common_inputs_are_one_line_before_any_work(repo_root, tmp_path, extra, words):
  binary = tmp_path / "rig.json"
  binary.write_bytes(b"\x89PNG\x00\xff\xfe")
  afile = tmp_path / "afile"
  afile.write_text("not a folder")
  extra = [arg.format(binary=binary, file=afile) for arg in extra]
  mode = [] if any(arg.startswith("--mode=") for arg in extra) else ["--mode=simulate"]
  workdir = [] if any(arg.startswith("--workdir=") for arg in extra) else [
      f"--workdir={tmp_path / 'w'}"]
  result = run_cli(repo_root, "--config=configs/default.py:smoke", *mode, *workdir, *extra)
  assert result.returncode == 2, result.stderr[-2000:]
  lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert len(lines) == 1 and words in lines[0], result.stderr[-2000:]
  assert "Traceback" not in result.stderr
  assert not (tmp_path / "w" / "metatrain").exists()  # Refused before any step.
