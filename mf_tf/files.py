"""Atomic file writes and file safety: a reader sees the old file or the new one, never a partial
one; mf_tf replaces or removes only what it wrote; what it serves is readable by other users.

Files are written under a temporary name beside their destination and renamed onto it
(`PendingFile`, and through it `atomic_path`, `write_atomic`, `write_json_atomic`,
`AtomicTextFile`). Folders written as a whole are staged under a temporary name and renamed into
place (`make_temporary_folder`, `replace_folder`); temporary folders left by a killed process are
removed by the next writer (`remove_stale_temporaries`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time

from absl import logging

FILE_MODE = 0o644  # Readable by all: a server or container running as another user reads it.
DIR_MODE = 0o755  # Readable and searchable by all, likewise.


class PendingFile:
  """A temporary file beside `path` that replaces `path` on `commit`, or goes on `discard`.

  For a writer that takes a file name and stays open across calls (OpenCV's VideoWriter, say):
  it writes `temporary`, then `commit()` renames it onto `path`; `discard()` removes it and
  leaves an existing `path` as it was. The temporary is hidden (`.<name>.<random><suffix>`) and in
  the same folder, so the rename is atomic.

  Args:
    path: Destination file; its folder is created if missing.
    suffix: The temporary's extension (some writers choose their format by it).
    mode: Permission bits of the result (mkstemp creates 0600).

  Attributes:
    path: The destination.
    temporary: The file to write.
  """

  def __init__(self, path, *, suffix: str = ".tmp", mode: int = FILE_MODE):
    self.path = os.fspath(path)
    self.mode = mode
    folder = os.path.dirname(os.path.abspath(self.path))
    os.makedirs(folder, exist_ok=True)
    handle, self.temporary = tempfile.mkstemp(dir=folder, suffix=suffix,
                                              prefix=f".{os.path.basename(self.path)}.")
    os.close(handle)

  def commit(self) -> str:
    """Renames the temporary onto `path` (removing it if that fails); returns `path`."""
    try:
      os.chmod(self.temporary, self.mode)
      os.replace(self.temporary, self.path)
    except BaseException:
      self.discard()
      raise
    return self.path

  def discard(self) -> None:
    """Removes the temporary, if it is still there; `path` is left as it was."""
    if os.path.exists(self.temporary):
      os.remove(self.temporary)


@contextlib.contextmanager
def atomic_path(path: str, *, suffix: str = ".tmp", mode: int = FILE_MODE):
  """A temporary file name beside `path` that becomes `path` on a clean exit (`PendingFile`).

  For writers that take a file name (OpenCV's FileStorage, ezc3d, numpy): `with
  atomic_path("a.c3d", suffix=".c3d") as temporary: c3d.write(temporary)`. On an exception the
  temporary is removed and an existing `path` stays as it was.

  Args:
    path: Destination file; its folder is created if missing.
    suffix: The temporary's extension (some writers choose their format by it).
    mode: Permission bits of the result (mkstemp creates 0600; shared outputs are 0644).
  """
  pending = PendingFile(path, suffix=suffix, mode=mode)
  try:
    yield pending.temporary
  except BaseException:
    pending.discard()
    raise
  pending.commit()


def write_atomic(path: str, data: bytes | str, *, mode: int = FILE_MODE) -> str:
  """Writes `data` to `path` through a temporary file in the same folder, flushed to disk, and a
  rename (`atomic_path`).

  Args:
    path: Destination file; its folder is created if missing.
    data: Bytes, or text (written as UTF-8).
    mode: Permission bits of the result.

  Returns:
    `path`.
  """
  with atomic_path(path, mode=mode) as temporary:
    with open(temporary, "wb") as stream:
      stream.write(data.encode("utf-8") if isinstance(data, str) else data)
      stream.flush()
      os.fsync(stream.fileno())
  return os.fspath(path)


def write_json_atomic(path: str, value, *, indent: int = 1, newline: bool = True,
                      mode: int = FILE_MODE) -> str:
  """Writes `value` as JSON to `path` atomically (`write_atomic`), in mf_tf's JSON layout.

  The text is made in memory first, so a value JSON cannot encode raises before anything is
  written.

  Args:
    path: Destination file; its folder is created if missing.
    value: Anything `json.dumps` takes (convert NumPy values first).
    indent: Spaces per nesting level (mf_tf's JSON files use 1).
    newline: End the file with a newline.
    mode: Permission bits of the result.

  Returns:
    `path`.
  """
  text = json.dumps(value, indent=indent)
  return write_atomic(path, text + "\n" if newline else text, mode=mode)


class AtomicTextFile:
  """A text file written line by line that appears at `path` only when closed without error.

  `with AtomicTextFile(path) as stream: stream.write(...)`: the lines go to a temporary file in
  the same folder (`PendingFile`), renamed onto `path` on a clean exit and removed on an
  exception (a long run that stops half way leaves no half-written file, and the previous one
  stays).
  """

  def __init__(self, path: str, *, mode: int = FILE_MODE):
    self.path = os.fspath(path)
    self.mode = mode
    self._stream = None
    self._pending = None

  def __enter__(self):
    self._pending = PendingFile(self.path, mode=self.mode)
    self._stream = open(self._pending.temporary, "w", encoding="utf-8")
    return self._stream

  def __exit__(self, kind, value, traceback):
    try:
      self._stream.close()
    except BaseException:
      self._pending.discard()
      raise
    if kind is None:
      self._pending.commit()
    else:
      self._pending.discard()
    return False


# ------------------------------------------------------------------------------------------------
# Folders: staged under a temporary name, readable by other users.

TEMP_PREFIX = ".tmp-"  # Hidden, and never a number (TF Serving ignores such a version folder).
# `.tmp-<number>-<pid>-<random>`: the pid of the process writing it.
_TEMP_OWNER = re.compile(r"^\.tmp-[0-9]+-([0-9]+)-")
# A temporary folder whose name holds no pid is left by a killed writer once it is this old.
STALE_TEMP_AGE_S = 600.0


def make_temporary_folder(parent: str, number: int) -> str:
  """Creates an empty folder `<parent>/.tmp-<number>-<pid>-<random>` (mode 0700) to fill, then
  rename into place.

  The name holds this process's pid, so that a later `remove_stale_temporaries` can tell
  whether its writer still runs.

  Args:
    parent: An existing folder, where the result will be renamed.
    number: What the folder will become (a version number, say).

  Returns:
    The new folder.
  """
  return tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{int(number)}-{os.getpid()}-", dir=parent)


def _pid_alive(pid: int) -> bool:
  """Whether a process `pid` exists on this host."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # It exists, owned by another user.
    return True
  return True


def remove_stale_temporaries(parent: str, max_age_s: float = STALE_TEMP_AGE_S,
                             now: float | None = None) -> list[str]:
  """Removes the temporary folders of `parent` that no running process owns.

  A `.tmp-*` folder is stale when the pid in its name (`.tmp-<number>-<pid>-...`, as
  `make_temporary_folder` names it) is not a running process on this host, or, for a name
  without a pid, when it was last modified more than `max_age_s` ago. A folder of a running
  writer is kept however old it is.

  Args:
    parent: The folder holding the temporaries (an export's `<export_dir>/<rig_name>`).
    max_age_s: Age in seconds past which a folder without a pid is stale.
    now: Current time (seconds since the epoch); None: `time.time()`.

  Returns:
    The folders removed.
  """
  if not os.path.isdir(parent):
    return []
  now = time.time() if now is None else float(now)
  removed = []
  for entry in sorted(os.listdir(parent)):
    path = os.path.join(parent, entry)
    if not entry.startswith(TEMP_PREFIX) or not os.path.isdir(path) or os.path.islink(path):
      continue
    owner = _TEMP_OWNER.match(entry)
    if owner:
      pid = int(owner.group(1))
      if _pid_alive(pid):
        continue
      reason = f"its writer (pid {pid}) is no longer running"
    else:
      try:
        age = now - os.stat(path).st_mtime
      except FileNotFoundError:  # Renamed into place or removed meanwhile.
        continue
      if age <= max_age_s:
        continue
      reason = f"no pid in its name and last modified {age:.0f} s ago (> {max_age_s:.0f} s)"
    shutil.rmtree(path, ignore_errors=True)
    logging.warning("removed stale temporary folder %s: %s", path, reason)
    removed.append(path)
  return removed


def make_dirs_readable(path: str) -> None:
  """Creates `path` and its missing parents with mode 0755 (`DIR_MODE`), whatever the umask."""
  missing = []
  folder = os.path.abspath(path)
  while not os.path.isdir(folder):
    missing.append(folder)
    folder = os.path.dirname(folder)
  os.makedirs(path, exist_ok=True)
  for folder in missing:
    os.chmod(folder, DIR_MODE)


def make_tree_readable(root: str) -> None:
  """Sets folders under `root` (itself included) to 0755 and files to 0644; links are left."""
  os.chmod(root, DIR_MODE)
  for folder, dirs, names in os.walk(root):
    for name in dirs:
      if not os.path.islink(os.path.join(folder, name)):
        os.chmod(os.path.join(folder, name), DIR_MODE)
    for name in names:
      if not os.path.islink(os.path.join(folder, name)):
        os.chmod(os.path.join(folder, name), FILE_MODE)


# ------------------------------------------------------------------------------------------------
# Names, containment, and removing only what mf_tf wrote.

# Every folder mf_tf writes as a whole (datasets, checkpoints, exports, converted annotations)
# holds this file; `replace_folder` and `remove_own_folder` refuse a folder without it.
MARKER = ".mf_tf_output"
# A name that becomes one path component (rig, model, output folder): letters, digits, ".", "_",
# "-"; starting with a letter or digit (so never ".", ".." or hidden); at most 100 characters
# (TF Serving model names and every file system take that).
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


class UnsafePathError(ValueError):
  """A name or path that would make mf_tf write or remove outside where it may."""


def check_name(name, what: str = "name") -> str:
  """Returns `name` when it is a safe single path component (NAME_PATTERN), else raises.

  Args:
    name: The candidate (a rig's, a model's, an output folder's name).
    what: What it names, for the message (e.g. "rig name in 'my_rig.json'").

  Raises:
    UnsafePathError: naming the value and the rule.
  """
  if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
    shown = repr(name) if not isinstance(name, str) or len(name) <= 60 else repr(name[:60] + "...")
    raise UnsafePathError(
        f"{what} {shown} is not a safe name: expected 1-100 characters of letters, digits, '.', "
        "'_' or '-', starting with a letter or digit (it becomes a folder and a served model name)")
  return name


def inside(root: str, *parts: str) -> str:
  """The real path of `root/parts...`, proved to lie inside `root` (or to be root).

  Symbolic links are resolved on both sides, so neither "..", an absolute part nor a link can
  take the result out of `root`.

  Raises:
    UnsafePathError: the path escapes `root`.
  """
  base = os.path.realpath(os.fspath(root))
  path = os.path.realpath(os.path.join(base, *[os.fspath(part) for part in parts]))
  if path != base and not path.startswith(base.rstrip(os.sep) + os.sep):
    raise UnsafePathError(f"path {os.path.join(*map(os.fspath, parts))!r} resolves to {path!r}, "
                          f"outside {base!r}; expected a path inside it")
  return path


def mark(folder: str) -> None:
  """Marks a folder as written by mf_tf (`MARKER`), so that a later run may replace it."""
  write_atomic(os.path.join(folder, MARKER), "written by mf_tf; replaced or removed by it only\n")


def is_own(folder: str) -> bool:
  """Whether a folder holds mf_tf's `MARKER`."""
  return os.path.isfile(os.path.join(folder, MARKER))


def check_replaceable(folder: str, what: str = "output folder") -> None:
  """Raises unless `folder` is absent, empty, or written by mf_tf (`MARKER`).

  Raises:
    UnsafePathError: a non-empty folder (or a file) that mf_tf did not write.
  """
  if not os.path.lexists(folder):
    return
  if os.path.islink(folder) or not os.path.isdir(folder):
    raise UnsafePathError(f"{what} {folder!r} exists and is not a folder mf_tf wrote; expected a "
                          "new path (mf_tf replaces only folders it wrote)")
  if os.listdir(folder) and not is_own(folder):
    raise UnsafePathError(f"{what} {folder!r} is a non-empty folder that mf_tf did not write; "
                          "expected a new or empty path (mf_tf replaces only folders it wrote)")


def replace_folder(staging: str, folder: str, what: str = "output folder") -> str:
  """Moves a completed staging folder onto `folder` in one rename; an old `folder` goes aside
  first and is removed after, and only when mf_tf wrote it.

  `staging` gets the marker before the move. A reader sees the old folder or the new one; an
  interruption between the two renames leaves the old one beside under "<folder>.old-*".

  Raises:
    UnsafePathError: `folder` exists and mf_tf did not write it (`check_replaceable`).
  """
  check_replaceable(folder, what)
  mark(staging)
  old = None
  if os.path.lexists(folder):
    old = tempfile.mkdtemp(prefix=f".{os.path.basename(folder)}.old-",
                           dir=os.path.dirname(os.path.abspath(folder)))
    os.rmdir(old)
    os.rename(folder, old)
  os.rename(staging, folder)
  if old is not None:
    remove_own_folder(old)
  return folder


def remove_own_folder(folder: str) -> None:
  """Removes a folder mf_tf wrote (it holds `MARKER`, or is empty); refuses anything else.

  Raises:
    UnsafePathError: the folder is not mf_tf's.
  """
  if not os.path.lexists(folder):
    return
  if os.path.islink(folder) or not os.path.isdir(folder) or (
      os.listdir(folder) and not is_own(folder)):
    raise UnsafePathError(f"refusing to remove {folder!r}: mf_tf did not write it (no {MARKER})")
  shutil.rmtree(folder)
