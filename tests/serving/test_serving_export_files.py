"""Export folder hygiene: stale temporary folders of killed exports, permissions for a server.

The folder helpers themselves (`mf_tf.files`) are tested in tests/test_files_folders.py.
"""

import os
import stat
import time

from config_settings import batching_settings
from serving_test_helpers import distorted_rig

from mf_tf.serving import export, model_config


def _mode(path) -> int:
  return stat.S_IMODE(os.stat(path).st_mode)


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
                             warmup=False, batching=batching_settings())
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
  for folder, dirs, names in os.walk(path):
    assert all(_mode(os.path.join(folder, d)) == 0o755 for d in dirs), folder
    assert all(_mode(os.path.join(folder, f)) == 0o644 for f in names), folder
