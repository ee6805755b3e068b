"""Rig names become folders: one checked name per rig, every output path proved inside the workdir,
only folders mf_tf wrote replaced; datasets whose meta.json or shards were tampered with give one
error naming the file; implausible camera fields in a rig file are refused by name."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import test_atomic_writes  # tests/: its snapshot of a folder's files

from configs import default
from mf_tf import files
from mf_tf.data import pipeline
from mf_tf.data import tfrecord
from mf_tf.geometry import calibration
from mf_tf.geometry import calibration_formats
from mf_tf.geometry import rigs
from mf_tf.geometry.camera import CalibrationError
from mf_tf.geometry.rig import Rig
from mf_tf.models.backbone import build_backbone
from mf_tf.modes import evaluate
from mf_tf.modes import export
from mf_tf.modes import simulate

_NAME_RULE = ("is not a safe name: expected 1-100 characters of letters, digits, '.', '_' or '-', "
              "starting with a letter or digit (it becomes a folder and a served model name)")


def _name_error(source, name) -> str:
  shown = repr(name) if not isinstance(name, str) or len(name) <= 60 else repr(name[:60] + "...")
  return f"{source}: rig name {shown} {_NAME_RULE}"


def _rig_file(folder, name="my_rig", file_name="rig.json", seed=3, edit=None) -> str:
  """A 3-camera canonical rig file whose "name" field is `name` (any JSON value)."""
  path = os.path.join(str(folder), file_name)
  calibration.save_rig_file(rigs.ring_rig(3, seed=seed, name="placeholder"), path)
  with open(path) as stream:
    data = json.load(stream)
  data["name"] = name
  if edit is not None:
    edit(data)
  with open(path, "w") as stream:
    json.dump(data, stream)
  return path


def _smoke_config(rig_path):
  config = default.get_config("smoke")
  config.rig.target = rig_path
  config.world.num_frames = 2
  config.world.shard_size = 1
  config.world.render_images = False
  return config


# ------------------------------------------------------------------------------------------------
# One validated name per rig.

_BAD_NAMES = [None, "", ".", "..", "/tmp/evil_abs", "../../x", "a" * 300, "my rig", 7]


@pytest.mark.parametrize("name", _BAD_NAMES, ids=lambda name: repr(name)[:12])
def test_a_rig_file_with_an_unsafe_name_is_refused_naming_the_file(tmp_path, name):
  path = _rig_file(tmp_path, name)
  with pytest.raises(CalibrationError) as info:
    rigs.get_rig(path)
  assert str(info.value) == _name_error(path, name)


def test_null_name_is_not_read_as_none(tmp_path):
  path = _rig_file(tmp_path, None)
  with pytest.raises(CalibrationError, match="rig name None is not a safe name"):
    calibration.load_rig_file(path)


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "a" * 101],
                         ids=["empty", "dot", "dotdot", "parent", "long"])
def test_rig_itself_checks_its_name(name):
  cameras = rigs.ring_rig(2).cameras
  with pytest.raises(files.UnsafePathError, match="rig name .* is not a safe name"):
    Rig(name, cameras)


def test_builtin_rigs_and_subsets_have_safe_names():
  for name in rigs.list_rigs():
    assert rigs.get_rig(name).name == name
  subset = rigs.get_rig("h36m").subset([2, 0])
  assert subset.name == "h36m_v2-0"
  assert files.check_name(rigs.get_rig("panoptic_hd").subset(range(31)).name)


@pytest.mark.parametrize("file_name, expected", [
    ("my calib.toml", "my_calib"), ("Calib.toml", "Calib"), (".hidden.toml", "rig_.hidden")])
def test_readers_make_a_safe_name_from_a_file_stem(tmp_path, file_name, expected):
  path = str(tmp_path / file_name)
  calibration_formats.write_calibration(rigs.ring_rig(3, seed=3), path)
  assert calibration_formats.read_calibration(path).name == expected


def test_rig_name_from_stems():
  assert calibration_formats.rig_name_from("Calib") == "Calib"
  assert calibration_formats.rig_name_from("a b/c") == "a_b_c"
  assert calibration_formats.rig_name_from("") == "rig"
  assert calibration_formats.rig_name_from("..") == "rig_.."
  assert len(calibration_formats.rig_name_from("x" * 300)) == 100


# ------------------------------------------------------------------------------------------------
# Paths written from a rig name.


@pytest.mark.large  # A subprocess: about 10 s.
def test_simulate_with_a_dot_dot_rig_deletes_nothing(tmp_path, repo_root):
  workdir = tmp_path / "work"
  for folder, name in (("finetune/my_rig", "fusion.npz"), ("export/my_rig/1", "saved_model.pb")):
    os.makedirs(workdir / folder)
    (workdir / folder / name).write_bytes(b"trained")
  before = test_atomic_writes.snapshot(workdir)
  rig_path = _rig_file(tmp_path, "..")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
  result = subprocess.run(
      [sys.executable, "-m", "mf_tf.main", "--mode=simulate", "--config=configs/default.py:smoke",
       f"--workdir={workdir}", f"--config.rig.target={rig_path}", "--config.world.num_frames=2",
       "--config.world.shard_size=1"],
      cwd=repo_root, env=env, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 2, result.stderr
  assert "Traceback" not in result.stderr, result.stderr
  lines = result.stderr.strip().splitlines()
  assert [line for line in lines if line.startswith("error: ")] == [lines[-1]], result.stderr
  assert lines[-1].startswith("error: ") and lines[-1].endswith(_name_error(rig_path, ".."))
  assert test_atomic_writes.snapshot(workdir) == before


@pytest.mark.parametrize("mode", [simulate, evaluate], ids=["simulate", "evaluate"])
@pytest.mark.parametrize("name", ["ABSOLUTE", "../../x"])
def test_escaping_rig_names_write_nothing_outside_the_workdir(tmp_path, mode, name):
  box = tmp_path / "box"  # W/evaluate/../../x would be box/x.
  workdir = box / "work"
  os.makedirs(workdir)
  outside = tmp_path / "outside"
  os.makedirs(outside)
  name = str(outside / "evil_abs") if name == "ABSOLUTE" else name
  rig_path = _rig_file(tmp_path, name)
  with pytest.raises(CalibrationError) as info:
    mode.run(_smoke_config(rig_path), str(workdir))
  assert str(info.value) == _name_error(rig_path, name)
  assert os.listdir(outside) == [] and os.listdir(box) == ["work"]


def test_output_dirs_are_proved_inside_the_workdir(tmp_path):
  from mf_tf.data import simulate as simulate_data  # pylint: disable=import-outside-toplevel
  from mf_tf.modes import common  # pylint: disable=import-outside-toplevel
  workdir = tmp_path / "work"
  os.makedirs(workdir / "simulate")
  os.symlink(tmp_path, workdir / "simulate" / "linked")  # A link out of the workdir.
  with pytest.raises(files.UnsafePathError, match="outside"):
    simulate_data.dataset_dir(str(workdir), "linked")
  with pytest.raises(files.UnsafePathError, match="rig name '..'"):
    simulate_data.dataset_dir(str(workdir), "..")
  rig = rigs.ring_rig(3, name="my_rig")
  assert common.rig_output_dir(str(workdir), "evaluate", rig) == os.path.join(
      os.path.realpath(workdir), "evaluate", "my_rig")


def test_simulate_does_not_replace_a_folder_mf_tf_did_not_write(tmp_path):
  workdir = tmp_path / "work"
  folder = workdir / "simulate" / "my_rig"
  os.makedirs(folder)
  (folder / "thesis.tex").write_text("four years")
  with pytest.raises(files.UnsafePathError) as info:
    simulate.run(_smoke_config(_rig_file(tmp_path, "my_rig")), str(workdir))
  assert str(info.value) == (
      f"dataset folder {str(folder)!r} is a non-empty folder that mf_tf did not write; expected "
      "a new or empty path (mf_tf replaces only folders it wrote)")
  assert (folder / "thesis.tex").read_text() == "four years"
  assert sorted(os.listdir(workdir / "simulate")) == ["my_rig"]  # No staging folder left.


def test_a_dataset_mf_tf_wrote_is_marked_and_replaced(tmp_path, rig3):
  out = str(tmp_path / "ds")
  tfrecord.write_shards(_frames(), out, 2, rig3, "h36m17", 16)
  assert files.is_own(out)
  tfrecord.write_shards(_frames(seed=1), out, 2, rig3, "h36m17", 16, overwrite=True)
  assert sorted(os.listdir(tmp_path)) == ["ds"]


@pytest.mark.large  # Builds a small backbone: about 10 s.
def test_export_refuses_two_rig_files_of_one_name(tmp_path):
  first = _rig_file(tmp_path, "my_rig", "a.json", seed=3)
  second = _rig_file(tmp_path, "my_rig", "b.json", seed=4)
  config = default.get_config("smoke")
  config.export.rigs = f"{first},{second}"
  config.export.fusion_source = "calibrated"
  weights = str(tmp_path / "backbone.weights.h5")
  build_backbone(config.model.backbone, config.image_size, 17).save_weights(weights)
  config.export.backbone_weights = weights
  workdir = tmp_path / "work"
  with pytest.raises(ValueError) as info:
    export.run(config, str(workdir))
  assert str(info.value) == (
      f"config.export.rigs entries {first!r} and {second!r} both give the rig 'my_rig': expected "
      "one entry per served model name (rename one rig's \"name\")")
  assert not os.path.exists(workdir / "export")


def test_export_refuses_a_finetuned_folder_name_that_leaves_its_root(tmp_path):
  config = default.get_config("smoke")
  config.export.fusion_source = "calibrated"
  with pytest.raises(ValueError, match="not a finetuned rig's folder name either"):
    export.load_fusion(config, str(tmp_path), "../../etc")


# ------------------------------------------------------------------------------------------------
# Datasets.


def _frames(num_frames=4, num_views=3, num_joints=17, size=16, seed=0):
  rng = np.random.default_rng(seed)
  return {
      "joints3d": rng.normal(0, 500, (num_frames, num_joints, 3)).astype(np.float32),
      "joints2d": rng.uniform(0, size, (num_frames, num_views, num_joints, 2)).astype(np.float32),
      "visibility": np.ones((num_frames, num_views, num_joints), np.float32),
      "head_size": rng.uniform(2, 4, (num_frames, num_views)).astype(np.float32),
  }


@pytest.fixture(scope="module")
def rig3():
  return rigs.ring_rig(3, seed=1)


@pytest.fixture
def dataset(tmp_path, rig3):
  return tfrecord.write_shards(_frames(), str(tmp_path / "ds"), 2, rig3, "h36m17", 16)


def _edit_meta(data_dir, edit):
  path = os.path.join(data_dir, tfrecord.META_FILE)
  with open(path) as stream:
    meta = json.load(stream)
  edit(meta)
  with open(path, "w") as stream:
    json.dump(meta, stream)
  return path


def test_shards_outside_the_dataset_folder_are_refused(dataset, tmp_path):
  shard = os.path.join(dataset, tfrecord.shard_name(0, 2))
  with open(shard, "rb") as stream, open(tmp_path / "outside.tfrecord", "wb") as copy:
    copy.write(stream.read())  # Readable, so only the check can refuse it.
  meta_path = _edit_meta(dataset, lambda meta: meta["shards"].__setitem__(0, "../outside.tfrecord"))
  with pytest.raises(tfrecord.DatasetIntegrityError) as info:
    tfrecord.read_meta(dataset)
  assert str(info.value) == (
      f"{meta_path}: field 'shards' entry '../outside.tfrecord' points outside the dataset "
      "folder; expected a shard file name inside it (e.g. 'shard-00000-of-00001.tfrecord')")
  absolute = str(tmp_path / "outside.tfrecord")
  _edit_meta(dataset, lambda meta: meta["shards"].__setitem__(0, absolute))
  with pytest.raises(tfrecord.DatasetIntegrityError, match="points outside the dataset folder"):
    tfrecord.load_arrays(dataset)


@pytest.mark.parametrize("field, value, expected", [
    ("shape", [17, 4], "field 'arrays.joints3d' (shape [17, 4], dtype 'float32') does not match "
                       "the stored values"),
    ("dtype", "float64", "field 'arrays.joints3d' (shape [17, 3], dtype 'float64') does not "
                         "match the stored values"),
    ("dtype", "float99", "field 'arrays.joints3d.dtype' is 'float99', expected one of"),
    ("shape", "17x3", "field 'arrays.joints3d.shape' is '17x3', expected a list of non-negative "
                      "integers (the per-frame shape)"),
], ids=["shape", "dtype", "unknown_dtype", "shape_string"])
def test_meta_json_lying_about_an_array_is_one_error(dataset, field, value, expected):
  meta_path = _edit_meta(dataset, lambda meta: meta["arrays"]["joints3d"].__setitem__(field, value))
  for read in (lambda: tfrecord.load_arrays(dataset),
               lambda: pipeline.make_dataset(dataset, 2, render_heatmaps=False)):
    with pytest.raises(tfrecord.DatasetIntegrityError) as info:
      read()
    assert str(info.value).startswith(f"{meta_path}: {expected}"), str(info.value)


def test_a_corrupted_record_names_its_shard(dataset):
  shard = os.path.join(dataset, tfrecord.shard_name(1, 2))
  with open(shard, "r+b") as stream:  # Flip payload bytes of the shard's first record.
    stream.seek(40)
    data = stream.read(4)
    stream.seek(40)
    stream.write(bytes(byte ^ 0xFF for byte in data))
  expected = (f"TFRecord file {shard}: the record at byte 12 fails its checksum; expected records "
              "whose checksums match: the shard is corrupted, write the dataset again")
  with pytest.raises(tfrecord.DatasetIntegrityError) as info:
    tfrecord.load_arrays(dataset)
  assert str(info.value) == expected
  batches = pipeline.make_dataset(dataset, 2, render_heatmaps=False)
  with pytest.raises(tfrecord.DatasetIntegrityError) as info:
    with pipeline.corrupted_records_named(dataset):
      for _ in batches:
        pass
  assert str(info.value) == expected


# ------------------------------------------------------------------------------------------------
# Camera fields.


def test_a_string_width_is_refused(tmp_path):
  path = _rig_file(tmp_path, edit=lambda data: data["cameras"][0].__setitem__("width", "1000"))
  with pytest.raises(CalibrationError) as info:
    rigs.get_rig(path)
  assert str(info.value) == (f"{path}: camera 'cam00': field 'width' is '1000' (str), expected "
                             "an integer number of pixels")


def test_an_implausible_distortion_is_named(tmp_path):
  path = _rig_file(tmp_path, edit=lambda data: data["cameras"][1]["dist"].__setitem__(0, 1e6))
  with pytest.raises(CalibrationError) as info:
    rigs.get_rig(path)
  assert str(info.value) == (
      f"{path}: camera 'cam01': field 'dist' [0] (k1) is 1e+06, an implausible lens distortion: "
      "expected k1 in [-10, 10] (dist is [k1, k2, p1, p2, k3] in normalized image coordinates, "
      "OpenCV's model)")
