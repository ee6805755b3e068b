"""Export folder hygiene: stale temporary folders of killed exports, permissions for a server."""

import os
import stat
import subprocess
import sys
import time

from serving_test_helpers import distorted_rig

from mf_tf.serving import export, model_config


def _dead_pid() -> int:
  """The pid of a process that has exited (reaped, so no such process exists)."""
  process = subprocess.Popen([sys.executable, "-c", "pass"])
  process.wait()
  return process.pid


def _mode(path) -> int:
  return stat.S_IMODE(os.stat(path).st_mode)


def test_stale_temporaries_are_removed_and_live_ones_kept(tmp_path):
  model_dir = tmp_path / "rig"
  dead, live = f".tmp-1-{_dead_pid()}-abc", f".tmp-2-{os.getpid()}-abc"
  for name in (".tmp-x", ".tmp-fresh", dead, live, "1", "notes"):
    (model_dir / name).mkdir(parents=True)
  (model_dir / ".tmp-file").write_text("not a folder")
  hour_ago = time.time() - 3600.0
  for name in (".tmp-x", live, ".tmp-file"):  # Old; only .tmp-x has no owner that still runs.
    os.utime(model_dir / name, (hour_ago, hour_ago))
  removed = export.remove_stale_temporaries(str(model_dir))
  assert sorted(removed) == sorted([str(model_dir / ".tmp-x"), str(model_dir / dead)])
  assert sorted(os.listdir(model_dir)) == sorted([".tmp-fresh", live, "1", "notes", ".tmp-file"])


def test_export_writes_readable_version_and_clears_stale_temporary(exported, tmp_path):
  export_dir = str(tmp_path / "export")
  rig = distorted_rig("readable")
  stale = os.path.join(export_dir, rig.name, ".tmp-x")
  os.makedirs(stale)
  hour_ago = time.time() - 3600.0
  os.utime(stale, (hour_ago, hour_ago))
  umask = os.umask(0o077)  # A restrictive umask must not leak into the served files.
  try:
    path = export.export_rig(exported["backbone"], exported["sparse"], rig, export_dir,
                             warmup=False)
  finally:
    os.umask(umask)
  assert not os.path.exists(stale)
  assert os.listdir(os.path.join(export_dir, rig.name)) == ["1"]
  assert _mode(path) == 0o755
  assert _mode(os.path.join(export_dir, rig.name)) == 0o755
  assert _mode(os.path.join(path, "saved_model.pb")) == 0o644
  assert _mode(os.path.join(path, "variables")) == 0o755
  assert _mode(os.path.join(path, model_config.ASSETS_EXTRA, export.EXPORT_CONFIG_FILE)) == 0o644
  assert _mode(os.path.join(export_dir, model_config.MODELS_CONFIG)) == 0o644
  for folder, dirs, files in os.walk(path):
    assert all(_mode(os.path.join(folder, d)) == 0o755 for d in dirs), folder
    assert all(_mode(os.path.join(folder, f)) == 0o644 for f in files), folder
