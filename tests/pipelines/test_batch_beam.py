"""--mode=batch on Beam's DirectRunner: sessions in parallel worker processes, each giving exactly
the files of --mode=video; a broken session reported, finished ones skipped, unfinished redone."""

import json
import os
import pathlib
import shutil
import types

import numpy as np
import pytest

pytest.importorskip("apache_beam", reason='Apache Beam: the "beam" extra, pip install -e ".[beam]"')

from configs import default  # noqa: E402
from mf_tf import files  # noqa: E402
from mf_tf.models import fetch_blazepose  # noqa: E402
from mf_tf.modes import batch as batch_mode  # noqa: E402
from mf_tf.modes import video  # noqa: E402
from mf_tf.pipelines import sessions as sessions_lib  # noqa: E402
from mf_tf.reconstruct import motion_files  # noqa: E402

_FRAMES = 5  # Of the 12 of tests/fixtures/pose2sim_clips: a session takes seconds.
_SESSIONS = ("walk_a", "walk_b")
# summary.json's timings: the only bytes two runs of one session do not share.
_TIMINGS = ("seconds", "frames_per_second", "stage_seconds")
_MARKERS = (files.MARKER, sessions_lib.DONE_MARKER)


def _config(**video_settings):
  config = default.get_config()
  config.video.stop = _FRAMES
  config.video.min_track_frames = 3  # The 5-frame tracks are written as motion files.
  config.video.overlay_scale = 0.25
  for key, value in video_settings.items():
    setattr(config.video, key, value)
  return config


def _files(folder: pathlib.Path) -> dict[str, bytes]:
  return {str(path.relative_to(folder)): path.read_bytes()
          for path in sorted(folder.rglob("*")) if path.is_file()}


def _mtimes(folder: pathlib.Path) -> dict[str, int]:
  return {str(path.relative_to(folder)): path.stat().st_mtime_ns
          for path in folder.rglob("*") if path.is_file()}


def _report(out: pathlib.Path) -> dict:
  with open(out / sessions_lib.REPORT) as stream:
    return json.load(stream)


@pytest.fixture(scope="module")
def runs(repo_root, tmp_path_factory):
  """The one-session command on walk_a, then two batch runs over walk_a, walk_b (copies of the
  fixture) and broken (a damaged video); between them walk_a is left as a run killed while
  writing it leaves it (no completion marker, a staging folder)."""
  fetch_blazepose.verified_model_paths()  # Missing models fail here, never skip.
  root = tmp_path_factory.mktemp("batch")
  sessions = root / "sessions"
  for name in (*_SESSIONS, "broken"):
    shutil.copytree(repo_root / "tests" / "fixtures" / "pose2sim_clips", sessions / name)
  (sessions / "broken" / "videos" / "cam02.mp4").write_bytes(b"not a video\n" * 100)
  (sessions / "notes").mkdir()  # No videos/: not a session.
  video.run(_config(session=str(sessions / "walk_a")), str(root / "single"))
  config = _config()
  config.batch.sessions_root = str(sessions)
  config.batch.workers = 2
  workdir = root / "work"
  out = workdir / "batch"
  with pytest.raises(ValueError, match=r"1 of 3 sessions failed: broken: RecordingError: .*cam02"):
    batch_mode.run(config, str(workdir))
  first = types.SimpleNamespace(
      report=_report(out), outputs={name: _files(out / name) for name in _SESSIONS},
      modes={name: (out / name).stat().st_mode & 0o777 for name in _SESSIONS})
  os.remove(out / "walk_a" / sessions_lib.DONE_MARKER)
  stale = out / ".walk_a.partial-killed1"
  stale.mkdir()
  files.mark(str(stale))
  before = {name: _mtimes(out / name) for name in _SESSIONS}
  with pytest.raises(ValueError, match="1 of 3 sessions failed: broken"):
    batch_mode.run(config, str(workdir))
  second = types.SimpleNamespace(report=_report(out), before=before,
                                 after={name: _mtimes(out / name) for name in _SESSIONS},
                                 outputs={name: _files(out / name) for name in _SESSIONS})
  return types.SimpleNamespace(reference=_files(root / "single" / "video"), first=first,
                               second=second, out=out, stale=stale,
                               reference_mode=(root / "single" / "video").stat().st_mode & 0o777)


def _assert_same_outputs(outputs: dict, reference: dict) -> None:
  assert sorted(set(outputs) - set(_MARKERS)) == sorted(reference)
  for name, data in reference.items():
    if name == "summary.json":
      summary, expected = json.loads(outputs[name]), json.loads(data)
      for key in _TIMINGS:
        summary.pop(key), expected.pop(key)
      assert summary == expected
    else:
      assert outputs[name] == data, name  # Motion files, frames.jsonl, arrays, videos.


@pytest.mark.large
def test_every_session_gives_the_files_of_the_one_session_command(runs, tmp_path):
  assert [name for name in runs.reference if name.startswith("motion/")] == [
      "motion/person0.c3d", "motion/person0.csv", "motion/person0.trc", "motion/person1.c3d",
      "motion/person1.csv", "motion/person1.trc"]
  for name in _SESSIONS:
    outputs = runs.first.outputs[name]
    _assert_same_outputs(outputs, runs.reference)
    assert oct(runs.first.modes[name]) == oct(runs.reference_mode)
    for person in (0, 1):  # The same numbers, read back.
      for folder, data in (("batch", outputs), ("single", runs.reference)):
        (tmp_path / folder).mkdir(exist_ok=True)
        (tmp_path / folder / "person.trc").write_bytes(data[f"motion/person{person}.trc"])
      np.testing.assert_array_equal(
          motion_files.read_trc(tmp_path / "batch" / "person.trc")["positions_mm"],
          motion_files.read_trc(tmp_path / "single" / "person.trc")["positions_mm"])
    (tmp_path / "tracks_raw.npz").write_bytes(outputs["tracks_raw.npz"])
    (tmp_path / "reference.npz").write_bytes(runs.reference["tracks_raw.npz"])
    with np.load(tmp_path / "tracks_raw.npz") as got, np.load(tmp_path / "reference.npz") as want:
      assert sorted(got.files) == sorted(want.files)
      for key in want.files:
        np.testing.assert_array_equal(got[key], want[key])


@pytest.mark.large
def test_sessions_run_in_worker_processes_and_a_broken_one_is_reported(runs):
  report = runs.first.report
  assert report["counts"] == {"done": 2, "skipped": 0, "failed": 1}
  assert report["runner"] == "DirectRunner" and report["workers"] == 2
  by_name = {result["session"]: result for result in report["sessions"]}
  assert sorted(by_name) == ["broken", *_SESSIONS]  # "notes" holds no videos/.
  assert by_name["walk_a"]["status"] == by_name["walk_b"]["status"] == "done"
  assert by_name["walk_a"]["frames"] == _FRAMES and by_name["walk_a"]["tracks"] == 2
  (error,) = report["errors"]
  assert error["session"] == "broken" and "cam02.mp4" in error["error"]
  assert "cannot be opened" in error["error"], error
  # Two worker processes (not this one), each loading BlazePose once for all its sessions.
  workers = {result["worker"] for result in report["sessions"]}
  assert len(workers) == 2 and os.getpid() not in workers
  assert all(result["worker_model_loads"] == 1 for result in report["sessions"])
  for name in _SESSIONS:
    marker = json.loads(runs.first.outputs[name][sessions_lib.DONE_MARKER])
    assert marker["session"] == name and marker["frames"] == _FRAMES
    assert marker["settings"]["stop"] == _FRAMES


@pytest.mark.large
def test_a_rerun_skips_finished_sessions_and_redoes_unfinished_ones(runs):
  report = runs.second.report
  assert report["counts"] == {"done": 1, "skipped": 1, "failed": 1}
  by_name = {result["session"]: result["status"] for result in report["sessions"]}
  assert by_name == {"walk_a": "done", "walk_b": "skipped", "broken": "failed"}
  # walk_b untouched; walk_a written anew, complete, with its marker, and the same files.
  assert runs.second.after["walk_b"] == runs.second.before["walk_b"]
  assert all(runs.second.after["walk_a"][name] > time
             for name, time in runs.second.before["walk_a"].items())
  assert sessions_lib.DONE_MARKER in runs.second.outputs["walk_a"]
  _assert_same_outputs(runs.second.outputs["walk_a"], runs.reference)
  assert not runs.stale.exists()
  assert sorted(os.listdir(runs.out)) == [sessions_lib.REPORT, *_SESSIONS]
