"""The log of `python -m mf_tf.main`: mf_tf's stage lines by default, TensorFlow's from -v 1 on."""

import logging
import os
import re
import subprocess
import sys

import pytest

from mf_tf import main as main_lib

# What TensorFlow prints on its own: C++ log lines (the oneDNN and CPU-feature notices, CUDA probes
# on a machine without a GPU) and the absl records of its SavedModel writer.
CHATTER = (
    re.compile(r"\.cc:\d+\] "),
    re.compile(r"oneDNN custom operations"),
    re.compile(r"absl::InitializeLog"),
    re.compile(r"cuInit|cuDNN|cuFFT|cuBLAS|cuda drivers", re.IGNORECASE),
    re.compile(r"contains input name\(s\)"),
    re.compile(r"Sharding callback|Assets written to|Writing fingerprint"),
)
# An absl log line: severity, date, time, thread, file:line].
ABSL_LINE = re.compile(r"^[IWEF]\d{4} [\d:.]+ +\d+ (?P<file>[\w.]+\.py):\d+\] ")


@pytest.fixture(scope="module")
def backbone_weights(tmp_path_factory):
  from mf_tf.models.backbone import build_backbone  # pylint: disable=import-outside-toplevel

  path = str(tmp_path_factory.mktemp("logs") / "backbone.weights.h5")
  build_backbone("mobilenetv2_035", 64, 17).save_weights(path)
  return path


def run_export(repo_root, workdir, weights, *extra):
  """A small --mode=export (one rig, MetaFuse^0, 16 px maps): TF import and a SavedModel save."""
  env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
  args = ["--mode=export", f"--workdir={workdir}", "--config=configs/default.py:smoke",
          "--config.image_size=64", "--config.heatmap_size=16", "--config.export.top_k=16",
          "--config.export.fusion_source=calibrated", f"--config.export.backbone_weights={weights}"]
  result = subprocess.run([sys.executable, "-m", "mf_tf.main", *args, *extra], cwd=repo_root,
                          env=env, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stderr


def mf_tf_files():
  root = os.path.dirname(main_lib.__file__)
  return {name for _, _, names in os.walk(root) for name in names if name.endswith(".py")}


def test_default_log_is_one_line_per_stage(repo_root, tmp_path, backbone_weights):
  stderr = run_export(repo_root, tmp_path, backbone_weights)
  for pattern in CHATTER:
    assert not pattern.search(stderr), f"{pattern.pattern!r} in:\n{stderr[:3000]}"
  lines = stderr.strip().splitlines()
  own = mf_tf_files()
  for line in lines:
    match = ABSL_LINE.match(line)
    assert match and match.group("file") in own, f"not an mf_tf log line: {line[:300]}"
  assert any("mode=export" in line for line in lines), stderr
  assert any("exported rig 'h36m'" in line for line in lines), stderr
  assert len(lines) <= 4, stderr


@pytest.mark.large
def test_verbosity_1_shows_tensorflows_log(repo_root, tmp_path, backbone_weights):
  stderr = run_export(repo_root, tmp_path, backbone_weights, "--verbosity=1")
  assert re.search(r"\.cc:\d+\] ", stderr), stderr[:3000]  # Its C++ log.
  assert "contains input name(s)" in stderr, stderr[:3000]  # Its SavedModel writer's records.
  assert "exported rig 'h36m'" in stderr


@pytest.mark.parametrize("argv, verbosity", [
    ([], 0),
    (["--mode=export", "--verbosity=1"], 1),
    (["-v", "2"], 2),
    (["--v=1"], 1),
    (["-verbosity", "1"], 1),
    (["--verbosity=1", "--verbosity=0"], 0),  # The last one wins, as in absl.
    (["--mode=batch", "--", "-v=1"], 0),  # After `--`: the pipeline's options.
    (["--config.verbosity=1"], 0),
    (["--verbosity=x"], 0),  # absl refuses it when parsing.
])
def test_argv_verbosity_reads_the_command_line_as_absl(argv, verbosity):
  assert main_lib.argv_verbosity(argv) == verbosity


@pytest.mark.parametrize("env, argv, expected", [
    ({}, [], "3"),
    ({"TF_CPP_MIN_LOG_LEVEL": "0"}, [], "0"),  # The user's setting is kept.
    ({}, ["--verbosity=1"], "unset"),
])
def test_cpp_log_level_is_set_only_by_default(repo_root, env, argv, expected):
  code = ("import os, sys; from mf_tf import main; "
          "main.quiet_tensorflow(main.argv_verbosity(sys.argv[1:])); "
          "print(os.environ.get('TF_CPP_MIN_LOG_LEVEL', 'unset'))")
  clean = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
  result = subprocess.run([sys.executable, "-c", code, *argv], cwd=repo_root,
                          env={**clean, **env}, capture_output=True, text=True, timeout=60,
                          check=True)
  assert result.stdout.split() == [expected], result.stdout + result.stderr


def test_filter_drops_tensorflow_records_below_error_only():
  chatter = main_lib.TensorFlowChatterFilter()
  assert chatter.folders, "TensorFlow's package folder was not found"
  inside = os.path.join(chatter.folders[0], "python", "saved_model", "signature_serialization.py")

  def record(path, level):
    return logging.LogRecord("absl", level, path, 1, "Function contains input name(s)", (), None)

  assert not chatter.filter(record(inside, logging.INFO))
  assert not chatter.filter(record(inside, logging.WARNING))
  assert chatter.filter(record(inside, logging.ERROR))
  assert chatter.filter(record(main_lib.__file__, logging.INFO))
