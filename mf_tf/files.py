"""Atomic file writes: a reader sees the old file or the new one, never a partial one."""

from __future__ import annotations

import os
import tempfile


def write_atomic(path: str, data: bytes | str, *, mode: int = 0o644) -> str:
  """Writes `data` to `path` through a temporary file in the same folder and a rename.

  Args:
    path: Destination file; its folder is created if missing.
    data: Bytes, or text (written as UTF-8).
    mode: Permission bits of the result (mkstemp creates 0600; shared outputs are 0644).

  Returns:
    `path`.
  """
  path = os.fspath(path)
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.",
                                       suffix=".tmp")
  try:
    with os.fdopen(handle, "wb") as stream:
      stream.write(data.encode("utf-8") if isinstance(data, str) else data)
    os.chmod(temporary, mode)
    os.replace(temporary, path)
  except BaseException:
    if os.path.exists(temporary):
      os.remove(temporary)
    raise
  return path


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
