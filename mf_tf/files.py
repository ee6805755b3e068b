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
