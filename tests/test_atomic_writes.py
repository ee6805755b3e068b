"""Every writer of a file a user keeps is atomic: a write that fails half way (a full disk) leaves
the previous file byte for byte and no temporary file beside it.

The failure is made by `disk_full`: every file opened for writing (`open`, `os.fdopen`) accepts
half of its first write and then raises ENOSPC, as a full disk does. A writer that writes in
place (`open(path, "wb").write(data)`) truncates the old file first and fails these tests; one
that writes a temporary file and renames it passes them when it also removes the temporary.
Writers whose bytes come from C++ (TFRecord, C3D, SavedModel) fail the same way through their
own entry point.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import json
import os

import numpy as np
import pytest

from mf_tf import checkpoints
from mf_tf import files
from mf_tf.data import tfrecord
from mf_tf.evaluation import evaluate
from mf_tf.evaluation import plots
from mf_tf.experiments import benchmark
from mf_tf.geometry import calibration
from mf_tf.geometry.rigs import ring_rig
from mf_tf.meta import maml
from mf_tf.reconstruct import motion_files
from mf_tf.serving import export
from mf_tf.serving import model_config


class _HalfWritten:
  """A file object whose first `write` stores half of its data and then fails (ENOSPC)."""

  def __init__(self, stream):
    self._stream = stream

  def write(self, data):
    self._stream.write(data[:max(1, len(data) // 2)])
    self._stream.flush()
    raise OSError(errno.ENOSPC, "No space left on device (test)")

  def writelines(self, lines):
    for line in lines:
      self.write(line)

  def __getattr__(self, name):
    return getattr(self._stream, name)

  def __iter__(self):
    return iter(self._stream)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self._stream.close()
    return False


def _writing(mode) -> bool:
  return any(flag in str(mode) for flag in "wax+")


@contextlib.contextmanager
def disk_full(monkeypatch):
  """Within the block, files opened for writing through Python fail half way."""
  real_open, real_fdopen = builtins.open, os.fdopen

  def failing_open(file, mode="r", *args, **kwargs):
    stream = real_open(file, mode, *args, **kwargs)
    return _HalfWritten(stream) if _writing(mode) else stream

  def failing_fdopen(fd, mode="r", *args, **kwargs):
    stream = real_fdopen(fd, mode, *args, **kwargs)
    return _HalfWritten(stream) if _writing(mode) else stream

  with monkeypatch.context() as patch:
    patch.setattr(builtins, "open", failing_open)
    patch.setattr(os, "fdopen", failing_fdopen)
    yield


def snapshot(folder) -> dict:
  """{relative path: bytes} of every file under `folder` (hidden ones included)."""
  found = {}
  for root, _, names in os.walk(folder):
    for name in names:
      path = os.path.join(root, name)
      with open(path, "rb") as stream:
        found[os.path.relpath(path, folder)] = stream.read()
  return found


def assert_failed_write_kept_the_old(folder, before, run):
  """`run()` raises; afterwards `folder` holds exactly the files and bytes of `before`."""
  with pytest.raises(OSError):
    run()
  after = snapshot(folder)
  leftovers = sorted(set(after) - set(before))
  assert not leftovers, f"temporary or partial files left behind: {leftovers}"
  changed = sorted(name for name in before if after.get(name) != before[name])
  assert not changed, f"old files damaged or removed by a failed write: {changed}"


def test_disk_full_helper_damages_an_in_place_write(tmp_path, monkeypatch):
  # The helper itself: an in-place write loses the old file (what the tests below detect).
  path = tmp_path / "a.txt"
  path.write_text("old contents")
  with disk_full(monkeypatch), pytest.raises(OSError):
    with open(path, "w") as stream:
      stream.write("new contents")
  assert path.read_text() != "old contents"


# ------------------------------------------------------------------------------------------------
# mf_tf.files


@pytest.mark.parametrize("data", [b"\x00new bytes" * 1000, "new text \u00e9\n" * 1000],
                         ids=["bytes", "text"])
def test_write_atomic_failing_half_way_keeps_the_old_file(tmp_path, monkeypatch, data):
  path = tmp_path / "out.bin"
  files.write_atomic(path, b"old")
  before = snapshot(tmp_path)
  with disk_full(monkeypatch):
    assert_failed_write_kept_the_old(tmp_path, before, lambda: files.write_atomic(path, data))
  assert files.write_atomic(path, data) == str(path)  # The disk has room again.
  assert path.read_bytes() == (data.encode() if isinstance(data, str) else data)


def test_write_atomic_failing_rename_keeps_the_old_file(tmp_path, monkeypatch):
  path = tmp_path / "out.json"
  files.write_atomic(path, '{"old": 1}')
  before = snapshot(tmp_path)

  def failing_replace(source, target):
    raise OSError(errno.EXDEV, "rename failed (test)")

  monkeypatch.setattr(os, "replace", failing_replace)
  assert_failed_write_kept_the_old(tmp_path, before,
                                   lambda: files.write_atomic(path, '{"new": 2}'))


def test_write_atomic_never_shows_a_partial_file(tmp_path, monkeypatch):
  # Until the rename, `path` holds the old bytes whole, even while the new ones are written.
  path = tmp_path / "out.bin"
  files.write_atomic(path, b"old")
  seen = []
  real_fdopen = os.fdopen

  class Watching:
    def __init__(self, stream):
      self._stream = stream

    def write(self, data):
      self._stream.write(data)
      seen.append(path.read_bytes())

    def __enter__(self):
      return self

    def __exit__(self, *exc):
      self._stream.close()

    def __getattr__(self, name):
      return getattr(self._stream, name)

  real_open = builtins.open

  def watching_open(file, mode="r", *args, **kwargs):
    stream = real_open(file, mode, *args, **kwargs)
    return Watching(stream) if _writing(mode) else stream

  with monkeypatch.context() as patch:
    patch.setattr(os, "fdopen", lambda *a, **k: Watching(real_fdopen(*a, **k)))
    patch.setattr(builtins, "open", watching_open)
    files.write_atomic(path, b"new" * 100)
  assert seen and all(contents == b"old" for contents in seen), seen[:3]
  assert path.read_bytes() == b"new" * 100


def test_atomic_text_file_failing_half_way_keeps_the_old_file(tmp_path, monkeypatch):
  path = tmp_path / "frames.jsonl"
  with files.AtomicTextFile(path) as stream:
    stream.write("old line\n")
  before = snapshot(tmp_path)

  def run():
    with files.AtomicTextFile(path) as stream:
      stream.write("new line\n")
      raise OSError(errno.ENOSPC, "No space left on device (test)")

  assert_failed_write_kept_the_old(tmp_path, before, run)
  with disk_full(monkeypatch):
    def run_full():
      with files.AtomicTextFile(path) as out:
        out.write("new line\n" * 100)
    assert_failed_write_kept_the_old(tmp_path, before, run_full)


@pytest.mark.parametrize("newline", [True, False])
def test_write_json_atomic_layout_and_failing_half_way(tmp_path, monkeypatch, newline):
  path = tmp_path / "results.json"
  value = {"rigs": {"a": [1.0, 2]}, "name": "\u00e9"}
  assert files.write_json_atomic(path, value, newline=newline) == str(path)
  text = json.dumps(value, indent=1)
  assert path.read_text(encoding="utf-8") == (text + "\n" if newline else text)
  assert json.loads(path.read_text(encoding="utf-8")) == value
  before = snapshot(tmp_path)
  with disk_full(monkeypatch):
    assert_failed_write_kept_the_old(
        tmp_path, before, lambda: files.write_json_atomic(path, {"rigs": {"a": [3.0] * 1000}}))
  with pytest.raises(TypeError):  # Not JSON: refused before anything is written.
    files.write_json_atomic(path, {"a": object()})
  assert snapshot(tmp_path) == before


def test_pending_file_commit_discard_and_failing_rename(tmp_path, monkeypatch):
  path = tmp_path / "video.mp4"
  path.write_bytes(b"old")
  pending = files.PendingFile(path, suffix=".tmp.mp4")
  assert os.path.dirname(pending.temporary) == str(tmp_path)
  assert os.path.basename(pending.temporary).startswith(".video.mp4.")
  assert pending.temporary.endswith(".tmp.mp4")
  with open(pending.temporary, "wb") as stream:
    stream.write(b"new")
  assert path.read_bytes() == b"old"  # Nothing shows before the commit.
  assert pending.commit() == str(path)
  assert path.read_bytes() == b"new" and sorted(os.listdir(tmp_path)) == ["video.mp4"]
  assert os.stat(path).st_mode & 0o777 == files.FILE_MODE
  discarded = files.PendingFile(path)
  discarded.discard()
  discarded.discard()  # Idempotent.
  assert sorted(os.listdir(tmp_path)) == ["video.mp4"] and path.read_bytes() == b"new"
  before = snapshot(tmp_path)

  def failing_replace(source, target):
    raise OSError(errno.EXDEV, "rename failed (test)")

  failing = files.PendingFile(path)
  with open(failing.temporary, "wb") as stream:
    stream.write(b"newer")
  monkeypatch.setattr(os, "replace", failing_replace)
  assert_failed_write_kept_the_old(tmp_path, before, failing.commit)


# ------------------------------------------------------------------------------------------------
# Checkpoints.


def test_meta_params_and_naive_checkpoints_are_atomic(tmp_path, monkeypatch):
  params = maml.MetaParams(np.zeros((4, 4), np.float32), np.zeros((16, 6), np.float32))
  meta_path = str(tmp_path / "metafuse.npz")
  naive_path = str(tmp_path / "naive.npz")
  checkpoints.save_meta_params(params, meta_path, {"step": 1})
  checkpoints.save_naive(np.zeros((2, 16, 16), np.float32), [0, 1], naive_path)
  before = snapshot(tmp_path)
  newer = maml.MetaParams(np.ones((4, 4), np.float32), np.ones((16, 6), np.float32))
  with disk_full(monkeypatch):
    assert_failed_write_kept_the_old(
        tmp_path, before, lambda: checkpoints.save_meta_params(newer, meta_path, {"step": 2}))
    assert_failed_write_kept_the_old(
        tmp_path, before,
        lambda: checkpoints.save_naive(np.ones((2, 16, 16), np.float32), [0, 1], naive_path))
  assert checkpoints.load_meta_params(meta_path)[1] == {"step": 1}


def test_finetuned_checkpoint_is_atomic(tmp_path, monkeypatch):
  from mf_tf.fusion import calibrated  # Keras: imported where used.

  rig = ring_rig(3, seed=3, image_size=(640, 480), name="my_rig")
  layer = calibrated.calibrated_fusion(rig, 16)
  rig_dir = str(tmp_path / "finetune" / "my_rig")
  checkpoints.save_finetuned(layer, rig, rig_dir, {"method": "calibrated", "shots": 0})
  before = snapshot(tmp_path)
  with disk_full(monkeypatch):
    assert_failed_write_kept_the_old(
        tmp_path, before,
        lambda: checkpoints.save_finetuned(layer, rig, rig_dir, {"method": "calibrated",
                                                                 "shots": 5}))


# ------------------------------------------------------------------------------------------------
# Results: evaluation, benchmark, figures.

_RESULT = {"jdr_mean": 81.25, "jdr_per_joint": {"pelvis": 100.0}, "jdr_visible": 90.0,
           "jdr_occluded": 40.0, "mpjpe_triangulation_mm": 101.5, "mpjpe_pictorial_mm": 70.25,
           "num_frames": 3}


def test_evaluation_results_are_atomic(tmp_path, monkeypatch):
  evaluate.write_results({"no_fusion": _RESULT}, str(tmp_path), {"rig": "h36m"})
  before = snapshot(tmp_path)
  better = dict(_RESULT, jdr_mean=99.0)
  with disk_full(monkeypatch):
    assert_failed_write_kept_the_old(
        tmp_path, before,
        lambda: evaluate.write_results({"no_fusion": better}, str(tmp_path), {"rig": "h36m"}))


def test_benchmark_results_json_is_atomic(tmp_path, monkeypatch):
  path = str(tmp_path / "results.json")
  benchmark.write_json_atomic({"rigs": {"a": 1.0}}, path)
  before = snapshot(tmp_path)
  with disk_full(monkeypatch):
    assert_failed_write_kept_the_old(
        tmp_path, before, lambda: benchmark.write_json_atomic({"rigs": {"a": 2.0}}, path))
  with open(path) as stream:
    assert json.load(stream) == {"rigs": {"a": 1.0}}


def test_figures_are_atomic(tmp_path, monkeypatch):
  path = str(tmp_path / "methods.png")
  plots.plot_method_bars({"no_fusion": _RESULT}, path)
  before = snapshot(tmp_path)
  with disk_full(monkeypatch):
    assert_failed_write_kept_the_old(
        tmp_path, before, lambda: plots.plot_method_bars({"other": _RESULT}, path))


# ------------------------------------------------------------------------------------------------
# Rig files, motion files.


def test_rig_file_is_atomic(tmp_path, monkeypatch):
  path = str(tmp_path / "rig.json")
  calibration.save_rig_file(ring_rig(3, seed=1, name="a"), path)
  before = snapshot(tmp_path)
  with disk_full(monkeypatch):
    assert_failed_write_kept_the_old(
        tmp_path, before, lambda: calibration.save_rig_file(ring_rig(4, seed=2, name="a"), path))


_NAMES = ["a", "b"]


def _motion(value):
  return np.full((3, 2, 3), float(value), np.float64)


@pytest.mark.parametrize("writer", ["write_trc", "write_csv"])
def test_text_motion_files_are_atomic(tmp_path, monkeypatch, writer):
  write = getattr(motion_files, writer)
  path = str(tmp_path / f"motion.{writer[-3:]}")
  write(path, _motion(1), _NAMES, 30.0)
  before = snapshot(tmp_path)
  with disk_full(monkeypatch):
    assert_failed_write_kept_the_old(tmp_path, before,
                                     lambda: write(path, _motion(2), _NAMES, 30.0))


def test_c3d_motion_file_is_atomic(tmp_path, monkeypatch):
  path = str(tmp_path / "motion.c3d")
  motion_files.write_c3d(path, _motion(1), _NAMES, 30.0)
  before = snapshot(tmp_path)
  ezc3d = pytest.importorskip("ezc3d")

  def half_write(self, target):
    with open(target, "wb") as stream:  # Half a file, then the disk is full.
      stream.write(b"\x00" * 256)
    raise OSError(errno.ENOSPC, "No space left on device (test)")

  monkeypatch.setattr(ezc3d.c3d, "write", half_write)
  assert_failed_write_kept_the_old(
      tmp_path, before, lambda: motion_files.write_c3d(path, _motion(2), _NAMES, 30.0))


# ------------------------------------------------------------------------------------------------
# Exports and the TF Serving config.


def _fake_version(model_dir, version):
  folder = os.path.join(model_dir, str(version))
  os.makedirs(folder)
  with open(os.path.join(folder, "saved_model.pb"), "wb") as stream:
    stream.write(b"saved model %d" % version)


def test_models_config_is_atomic(tmp_path, monkeypatch):
  _fake_version(str(tmp_path / "rig_a"), 1)
  model_config.write_models_config(str(tmp_path))
  _fake_version(str(tmp_path / "rig_b"), 1)
  before = snapshot(tmp_path)
  with disk_full(monkeypatch):
    assert_failed_write_kept_the_old(tmp_path, before,
                                     lambda: model_config.write_models_config(str(tmp_path)))


class _FakeModule:
  """What `export.save_version` reads of an ExportModule."""
  rig_name, num_views, image_size = "rig_a", 3, 32

  def signatures(self):
    return {}


@pytest.mark.parametrize("failing", ["saved_model", "export_config"])
def test_export_version_is_atomic(tmp_path, monkeypatch, failing):
  model_dir = str(tmp_path / "rig_a")
  _fake_version(model_dir, 1)
  before = snapshot(tmp_path)

  def half_saved_model(module, folder, signatures=None):
    with open(os.path.join(folder, "saved_model.pb"), "wb") as stream:
      stream.write(b"half a SavedModel")
    if failing == "saved_model":
      raise OSError(errno.ENOSPC, "No space left on device (test)")

  monkeypatch.setattr(export.tf.saved_model, "save", half_saved_model)

  def run():
    with contextlib.ExitStack() as stack:
      if failing == "export_config":
        real_open = builtins.open

        def open_failing_on_config(file, mode="r", *args, **kwargs):
          stream = real_open(file, mode, *args, **kwargs)
          if _writing(mode) and os.path.basename(os.fspath(file)) == export.EXPORT_CONFIG_FILE:
            return _HalfWritten(stream)
          return stream

        stack.enter_context(monkeypatch.context()).setattr(builtins, "open",
                                                           open_failing_on_config)
      export.save_version(_FakeModule(), ring_rig(3, seed=1, name="rig_a"), model_dir,
                          export_config={"test": True}, warmup=False)

  assert_failed_write_kept_the_old(tmp_path, before, run)
  assert model_config.versions(model_dir) == [1]


# ------------------------------------------------------------------------------------------------
# Datasets.


def _frames(rig, value):
  return {"joints2d": np.full((2, rig.num_views, 17, 2), value, np.float32)}


def _dataset(out_dir, rig, value, overwrite=False):
  with tfrecord.ShardWriter(out_dir, rig, "h36m17", 16, shard_size=1, num_frames=2,
                            overwrite=overwrite) as writer:
    writer.add(_frames(rig, value))
  return out_dir


def test_dataset_failing_while_writing_shards_keeps_the_old_one(tmp_path, monkeypatch):
  rig = ring_rig(2, seed=1, name="rig_a")
  out_dir = _dataset(str(tmp_path / "data"), rig, 1.0)
  before = snapshot(tmp_path)
  real_writer = tfrecord.tf.io.TFRecordWriter

  class FailingSecondShard(real_writer):
    opened = 0

    def __init__(self, path, *args, **kwargs):
      super().__init__(path, *args, **kwargs)
      FailingSecondShard.opened += 1

    def write(self, record):
      if FailingSecondShard.opened > 1:  # The first shard is whole; the disk fills in the second.
        raise OSError(errno.ENOSPC, "No space left on device (test)")
      super().write(record)

  monkeypatch.setattr(tfrecord.tf.io, "TFRecordWriter", FailingSecondShard)
  assert_failed_write_kept_the_old(tmp_path, before,
                                   lambda: _dataset(out_dir, rig, 2.0, overwrite=True))


def test_dataset_failing_while_writing_its_metadata_keeps_the_old_one(tmp_path, monkeypatch):
  rig = ring_rig(2, seed=1, name="rig_a")
  out_dir = _dataset(str(tmp_path / "data"), rig, 1.0)
  before = snapshot(tmp_path)
  with disk_full(monkeypatch):
    assert_failed_write_kept_the_old(tmp_path, before,
                                     lambda: _dataset(out_dir, rig, 2.0, overwrite=True))
