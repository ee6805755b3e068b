r"""A folder of recorded sessions, one session's work, and the batch report (no Beam here).

    sessions_root/                    output_root/
      <session>/videos/<camera>.mp4     <session>/  frames.jsonl, motion/, overlays/, skeleton.mp4,
      <session>/calibration/...                     tracks_raw.npz, summary.json, DONE_MARKER
      ...                               batch_report.json

A session is a sub-folder of the sessions root holding videos/ (Pose2Sim's layout; the calibration
file of its calibration/ folder is used unless the settings name one). `process_session` runs
`mf_tf.reconstruct.session.reconstruct_session`, the work of `--mode=video`, with the same
`SessionSettings` (`mf_tf.modes.video.session_settings`), so a session's files are those of the
one-session command. They are written into a staging folder beside the output; the completion
marker (`DONE_MARKER`, holding the settings) is written last, then the staging folder is renamed
onto <output_root>/<session> (`files.replace_folder`). On a rerun a session whose marker holds
the same settings is skipped; any other (no marker: killed mid-way, or other settings) is redone
and its old outputs replaced, and staging folders left by a killed run are removed. A session
that fails (a corrupt video, no calibration) returns its error instead of raising, so that the
others go on; `write_report` gathers every result into batch_report.json.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from typing import Sequence

from absl import logging

from mf_tf import files
from mf_tf.reconstruct import recording as recording_lib
from mf_tf.reconstruct import session as session_lib

# Written last into a finished session's output folder: the session and the settings it was
# reconstructed with.
DONE_MARKER = ".mf_tf_session_done.json"
REPORT = "batch_report.json"
STATUSES = ("done", "skipped", "failed")
_STAGING = ".{name}.partial-"


def find_sessions(sessions_root: str) -> list[tuple[str, str]]:
  """The sessions of a folder: (name, path) of each sub-folder holding videos/, sorted by name.

  Raises:
    ValueError: the folder does not exist, or holds no session.
  """
  if not os.path.isdir(sessions_root):
    state = "is not a folder" if os.path.exists(sessions_root) else "does not exist"
    raise ValueError(f"sessions root {sessions_root!r} {state}; expected a folder of session "
                     "folders (<session>/videos/<camera>.mp4, <session>/calibration/)")
  names = sorted(name for name in os.listdir(sessions_root) if not name.startswith("."))
  sessions = [(name, os.path.join(sessions_root, name)) for name in names
              if os.path.isdir(os.path.join(sessions_root, name, "videos"))]
  if not sessions:
    raise ValueError(f"sessions root {sessions_root!r} holds no session (entries: "
                     f"{names[:8]}{' ...' if len(names) > 8 else ''}); expected sub-folders "
                     "holding videos/<camera>.mp4 and calibration/, as Pose2Sim lays out a session")
  return sessions


def settings_record(settings: session_lib.SessionSettings) -> dict:
  """The settings as the JSON the completion marker stores (compared on a rerun)."""
  return json.loads(json.dumps(dataclasses.asdict(settings), sort_keys=True, default=str))


def is_done(folder: str, settings: session_lib.SessionSettings) -> bool:
  """Whether `folder` holds a session finished with these settings (its `DONE_MARKER`)."""
  try:
    with open(os.path.join(folder, DONE_MARKER), encoding="utf-8") as stream:
      return json.load(stream).get("settings") == settings_record(settings)
  except (OSError, ValueError, AttributeError):
    return False


def process_session(name: str, source: str, output_root: str,
                    settings: session_lib.SessionSettings, models) -> dict:
  """Reconstructs one session into <output_root>/<name> unless it is done; never raises.

  Args:
    name: The session's name (its folder's): the output folder's.
    source: The session folder.
    output_root: Folder of every session's output folder (exists).
    settings: SessionSettings.
    models: The BlazePose models (`session.load_models`), reused from session to session.

  Returns:
    {"session", "source", "status": "done" | "skipped" | "failed", "seconds"; done: "frames",
     "tracks"; failed: "error" (one line: the exception's type and message)}.
  """
  started = time.perf_counter()
  result = {"session": name, "source": source}
  staging = None
  try:
    folder = files.inside(output_root, files.check_name(name, "session folder name"))
    if is_done(folder, settings):
      logging.info("session %s: done already (%s), skipped", name, folder)
      return {**result, "status": "skipped", "seconds": 0.0}
    files.check_replaceable(folder, "session output folder")
    prefix = _STAGING.format(name=name)
    for entry in os.listdir(output_root):  # Left by a run killed while on this session.
      if entry.startswith(prefix) and "." not in entry[len(prefix):]:
        files.remove_own_folder(os.path.join(output_root, entry))
    staging = tempfile.mkdtemp(prefix=_STAGING.format(name=name), dir=output_root)
    os.chmod(staging, 0o755)  # mkdtemp's 0700 would become the output folder's mode.
    files.mark(staging)
    with recording_lib.open_recording(source) as recording:
      summary = session_lib.reconstruct_session(recording, staging, settings, models=models)
    files.write_atomic(os.path.join(staging, DONE_MARKER), json.dumps(
        {"session": name, "source": os.path.abspath(source), "frames": summary["frames"],
         "settings": settings_record(settings)}, indent=1))
    files.replace_folder(staging, folder, "session output folder")
    seconds = time.perf_counter() - started
    logging.info("session %s: %d frames, %d tracks in %.1f s -> %s", name, summary["frames"],
                 len(summary["tracks"]), seconds, folder)
    return {**result, "status": "done", "seconds": seconds, "frames": summary["frames"],
            "tracks": len(summary["tracks"])}
  except Exception as error:  # pylint: disable=broad-except  (reported; the others go on)
    message = " ".join(str(error).split()) or type(error).__name__
    logging.error("session %s failed: %s: %s", name, type(error).__name__, message)
    if staging is not None and os.path.isdir(staging):
      files.remove_own_folder(staging)
    return {**result, "status": "failed", "seconds": time.perf_counter() - started,
            "error": f"{type(error).__name__}: {message}"}


def write_report(results: Sequence[dict], output_root: str, info: dict) -> dict:
  """Writes <output_root>/batch_report.json and returns it.

  Args:
    results: `process_session`'s results (any order).
    output_root: Folder of the outputs.
    info: Fields added at the top (the roots, the runner).

  Returns:
    {**info, "counts": {status: sessions}, "errors": [{"session", "error"}], "sessions": the
     results sorted by session}.
  """
  results = sorted(results, key=lambda result: result["session"])
  report = {**info,
            "counts": {status: sum(result["status"] == status for result in results)
                       for status in STATUSES},
            "errors": [{"session": result["session"], "error": result["error"]}
                       for result in results if result["status"] == "failed"],
            "sessions": results}
  files.write_atomic(os.path.join(output_root, REPORT), json.dumps(report, indent=1))
  return report
