"""Folders mf_tf writes as a whole: temporary folders, stale ones of killed writers, permissions."""

import os
import stat
import subprocess
import sys
import time

from mf_tf import files


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
  removed = files.remove_stale_temporaries(str(model_dir))
  assert sorted(removed) == sorted([str(model_dir / ".tmp-x"), str(model_dir / dead)])
  assert sorted(os.listdir(model_dir)) == sorted([".tmp-fresh", live, "1", "notes", ".tmp-file"])
  assert files.remove_stale_temporaries(str(tmp_path / "missing")) == []


def test_temporary_folder_names_its_writer(tmp_path):
  folder = files.make_temporary_folder(str(tmp_path), 7)
  name = os.path.basename(folder)
  assert os.path.isdir(folder) and os.path.dirname(folder) == str(tmp_path)
  assert name.startswith(f"{files.TEMP_PREFIX}7-{os.getpid()}-") and not name.isdigit()
  # Its writer (this process) runs: kept however old; once the pid is gone, removed.
  os.utime(folder, (0.0, 0.0))
  assert files.remove_stale_temporaries(str(tmp_path)) == []
  orphan = os.path.join(str(tmp_path), name.replace(f"-{os.getpid()}-", f"-{_dead_pid()}-"))
  os.rename(folder, orphan)
  assert files.remove_stale_temporaries(str(tmp_path), now=time.time()) == [orphan]
  assert os.listdir(tmp_path) == []


def test_folders_and_files_are_made_readable_whatever_the_umask(tmp_path):
  umask = os.umask(0o077)
  try:
    files.make_dirs_readable(str(tmp_path / "a" / "b"))
    root = files.make_temporary_folder(str(tmp_path / "a" / "b"), 1)  # mkdtemp: 0700.
    os.makedirs(os.path.join(root, "variables"))
    with open(os.path.join(root, "variables", "data"), "w") as stream:
      stream.write("weights")
    os.symlink("variables/data", os.path.join(root, "link"))
    files.make_tree_readable(root)
  finally:
    os.umask(umask)
  assert _mode(tmp_path / "a") == _mode(tmp_path / "a" / "b") == files.DIR_MODE == 0o755
  assert _mode(root) == _mode(os.path.join(root, "variables")) == 0o755
  assert _mode(os.path.join(root, "variables", "data")) == files.FILE_MODE == 0o644
  assert os.path.islink(os.path.join(root, "link"))
