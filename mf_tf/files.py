"""Atomic file writes: a reader sees the old file or the new one, never a partial one."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile


@contextlib.contextmanager
def atomic_path(path: str, *, suffix: str = ".tmp", mode: int = 0o644):
  """A temporary file name beside `path` that becomes `path` on a clean exit.

  For writers that take a file name (OpenCV's FileStorage, ezc3d, numpy): `with
  atomic_path("a.c3d", suffix=".c3d") as temporary: c3d.write(temporary)`. On an exception the
  temporary is removed and an existing `path` stays as it was.

  Args:
    path: Destination file; its folder is created if missing.
    suffix: The temporary's extension (some writers choose their format by it).
    mode: Permission bits of the result (mkstemp creates 0600; shared outputs are 0644).
  """
  path = os.fspath(path)
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.",
                                       suffix=suffix)
  os.close(handle)
  try:
    yield temporary
    os.chmod(temporary, mode)
    os.replace(temporary, path)
  except BaseException:
    if os.path.exists(temporary):
      os.remove(temporary)
    raise


def write_atomic(path: str, data: bytes | str, *, mode: int = 0o644) -> str:
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


class AtomicTextFile:
  """A text file written line by line that appears at `path` only when closed without error.

  `with AtomicTextFile(path) as stream: stream.write(...)`: the lines go to a temporary file in
  the same folder, renamed onto `path` on a clean exit and removed on an exception (a long run
  that stops half way leaves no half-written file, and the previous one stays).
  """

  def __init__(self, path: str, *, mode: int = 0o644):
    self.path = os.fspath(path)
    self.mode = mode
    self._stream = None
    self._temporary = None

  def __enter__(self):
    folder = os.path.dirname(os.path.abspath(self.path))
    os.makedirs(folder, exist_ok=True)
    handle, self._temporary = tempfile.mkstemp(
        dir=folder, prefix=f".{os.path.basename(self.path)}.", suffix=".tmp")
    self._stream = os.fdopen(handle, "w", encoding="utf-8")
    return self._stream

  def __exit__(self, kind, value, traceback):
    self._stream.close()
    if kind is None:
      os.chmod(self._temporary, self.mode)
      os.replace(self._temporary, self.path)
    elif os.path.exists(self._temporary):
      os.remove(self._temporary)
    return False


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
