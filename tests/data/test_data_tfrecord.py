"""Dataset storage: exact write/read round trips, validation and atomic writes."""

import json
import os

import numpy as np
import pytest

from mf_tf import files
from mf_tf.data import tfrecord
from mf_tf.geometry import rigs


def _frames(num_frames=5, num_views=3, num_joints=17, size=16, peaks=2, images=True, seed=0):
  rng = np.random.default_rng(seed)
  frames = {
      "joints3d": rng.normal(0, 500, (num_frames, num_joints, 3)),  # float64 kept as is
      "joints2d": rng.uniform(0, size, (num_frames, num_views, num_joints, 2)).astype(np.float32),
      "visibility": rng.integers(0, 2, (num_frames, num_views, num_joints)).astype(np.float32),
      "head_size": rng.uniform(2, 4, (num_frames, num_views)).astype(np.float32),
      "peaks": rng.uniform(0, size, (num_frames, num_views, num_joints, peaks, 2)).astype(
          np.float32),
      "amplitudes": rng.uniform(0, 1, (num_frames, num_views, num_joints, peaks)).astype(
          np.float32),
      "noise_seed": rng.integers(0, 2**31, (num_frames,)).astype(np.int64),
  }
  if images:
    frames["images"] = rng.integers(0, 256, (num_frames, num_views, 12, 12, 3)).astype(np.uint8)
  return frames


@pytest.fixture(scope="module")
def rig3():
  return rigs.ring_rig(3, seed=1)


@pytest.mark.parametrize("encoding", ["png", "raw"])
def test_round_trip_is_exact(tmp_path, rig3, encoding):
  frames = _frames()
  frames["image_paths"] = np.asarray([[f"f{i}/v{v}.jpg" for v in range(3)] for i in range(5)])
  out = tfrecord.write_shards(frames, str(tmp_path / "ds"), shard_size=2, rig=rig3,
                              joint_set="h36m17", heatmap_size=16, image_encoding=encoding,
                              detector_params={"sigma": 2.0, "noise_level": 0.05})
  assert sorted(os.listdir(out)) == [files.MARKER, "meta.json", "rig.json"] + [
      tfrecord.shard_name(i, 3) for i in range(3)]
  loaded = tfrecord.load_arrays(out)
  np.testing.assert_array_equal(loaded["frame_index"], np.arange(5))
  for key, value in frames.items():
    assert loaded[key].dtype == value.dtype, key
    np.testing.assert_array_equal(loaded[key], value, err_msg=key)
  meta = tfrecord.read_meta(out, rig=rig3, joint_set="h36m17", heatmap_size=16)
  assert meta["num_frames"] == 5 and meta["num_views"] == 3 and meta["num_joints"] == 17
  assert meta["detector"] == {"sigma": 2.0, "noise_level": 0.05}
  stored = tfrecord.load_rig(out)
  assert stored.camera_names == rig3.camera_names
  np.testing.assert_allclose(stored.cameras[2].R, rig3.cameras[2].R, atol=1e-12)


def test_streaming_writer_matches_one_shot(tmp_path, rig3):
  frames = _frames(num_frames=6, images=False)
  with tfrecord.ShardWriter(str(tmp_path / "a"), rig3, "h36m17", 16, shard_size=4,
                            num_frames=6) as writer:
    writer.add({k: v[:1] for k, v in frames.items()})
    writer.add({k: v[1:6] for k, v in frames.items()})
  loaded = tfrecord.load_arrays(str(tmp_path / "a"))
  for key, value in frames.items():
    np.testing.assert_array_equal(loaded[key], value)
  assert len(tfrecord.read_meta(str(tmp_path / "a"))["shards"]) == 2


def test_failed_write_leaves_nothing(tmp_path, rig3):
  frames = _frames(num_frames=4, images=False)
  with pytest.raises(RuntimeError, match="boom"):
    with tfrecord.ShardWriter(str(tmp_path / "ds"), rig3, "h36m17", 16, 2, 4) as writer:
      writer.add({k: v[:2] for k, v in frames.items()})
      raise RuntimeError("boom")
  assert os.listdir(tmp_path) == []


def test_existing_directory_needs_overwrite(tmp_path, rig3):
  frames = _frames(num_frames=2, images=False)
  out = str(tmp_path / "ds")
  tfrecord.write_shards(frames, out, 2, rig3, "h36m17", 16)
  with pytest.raises(FileExistsError, match="overwrite"):
    tfrecord.write_shards(frames, out, 2, rig3, "h36m17", 16)
  frames2 = _frames(num_frames=3, images=False, seed=5)
  tfrecord.write_shards(frames2, out, 2, rig3, "h36m17", 16, overwrite=True)
  np.testing.assert_array_equal(tfrecord.load_arrays(out)["joints3d"], frames2["joints3d"])
  assert sorted(os.listdir(tmp_path)) == ["ds"]


def test_bad_shapes_are_rejected(tmp_path, rig3):
  frames = _frames(num_frames=2, images=False)
  with pytest.raises(ValueError, match=r"expected 17 joints"):
    tfrecord.write_shards({**frames, "joints3d": frames["joints3d"][:, :5]}, str(tmp_path / "a"),
                          2, rig3, "h36m17", 16)
  with pytest.raises(ValueError, match=r"expected \[N, 3, \.\.\.\]"):
    tfrecord.write_shards({**frames, "head_size": frames["head_size"][:, :2]},
                          str(tmp_path / "b"), 2, rig3, "h36m17", 16)
  with pytest.raises(ValueError, match="leading frame axis"):
    tfrecord.write_shards({**frames, "noise_seed": frames["noise_seed"][:1]},
                          str(tmp_path / "c"), 2, rig3, "h36m17", 16)


def test_mismatch_is_one_clear_error(tmp_path, rig3):
  out = tfrecord.write_shards(_frames(num_frames=2, images=False), str(tmp_path / "ds"), 2, rig3,
                              "h36m17", 16)
  other = rigs.ring_rig(3, seed=2)
  with pytest.raises(tfrecord.DatasetMismatchError) as info:
    tfrecord.read_meta(out, rig=other, joint_set="coco19", heatmap_size=32)
  message = str(info.value)
  assert "joint set 'h36m17' (17 joints), expected 'coco19' (19 joints)" in message
  assert "heatmap size 16, expected 32" in message
  assert "rig:" in message and "field R differs" in message
  with pytest.raises(tfrecord.DatasetMismatchError, match="4 views"):
    tfrecord.read_meta(out, rig=rigs.ring_rig(4, seed=1))


def test_missing_files_are_named(tmp_path, rig3):
  with pytest.raises(FileNotFoundError, match="meta.json not found"):
    tfrecord.read_meta(str(tmp_path / "nowhere"))
  out = tfrecord.write_shards(_frames(num_frames=4, images=False), str(tmp_path / "ds"), 2, rig3,
                              "h36m17", 16)
  os.remove(os.path.join(out, tfrecord.shard_name(1, 2)))
  with pytest.raises(FileNotFoundError, match="shard-00001-of-00002"):
    tfrecord.load_arrays(out)
  os.remove(os.path.join(out, "rig.json"))
  meta = json.load(open(os.path.join(out, "meta.json")))
  assert meta["rig_name"] == rig3.name
  with pytest.raises(FileNotFoundError, match="rig.json"):
    tfrecord.load_rig(out)


def test_real_panoptic_poses_to_frames_and_back(tmp_path, shared_data):
  from mf_tf.data import panoptic  # pylint: disable=import-outside-toplevel
  from mf_tf.data import pipeline  # pylint: disable=import-outside-toplevel
  seq = panoptic.read_panoptic_sequence(str(shared_data / "panoptic" / "160906_band1"), "hd",
                                        ["00_03", "00_06", "00_12"])
  frames = tfrecord.frames_from_poses(seq["rig"], seq["joints3d"], "coco19", 32,
                                      confidence=seq["confidence"],
                                      image_paths=seq["image_paths"])
  missing = seq["confidence"] < 0
  assert missing.any() and np.all(frames["visibility"].transpose(1, 0, 2)[:, missing] == 0)
  assert frames["visibility"].mean() > 0.7  # real people in the middle of the dome
  # Known joints land where the camera projects them, in heatmap pixels.
  camera = seq["rig"].cameras[1]
  uv, _ = camera.project(seq["joints3d"][0, 0])
  np.testing.assert_allclose(frames["joints2d"][0, 1, 0], uv * [32 / 1920, 32 / 1080], rtol=1e-5)
  assert np.all(frames["head_size"] > 0.5) and np.all(frames["head_size"] < 5)
  out = tfrecord.write_shards(frames, str(tmp_path / "real"), 4, seq["rig"], "coco19", 32)
  batch = next(iter(pipeline.make_dataset(out, 6, render_heatmaps=False)))
  assert np.all(np.isfinite(batch["target_heatmaps"].numpy()))
  np.testing.assert_array_equal(batch["target_weights"].numpy() > 0, frames["visibility"][:6] > 0)
  assert batch["image_paths"].numpy()[0, 2].decode() == seq["image_paths"][0, 2]


def _keep_first_records(path, count):
  """Rewrites a TFRecord file with only its first `count` records (a record-boundary cut)."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  records = list(tf.data.TFRecordDataset(path).take(count).as_numpy_iterator())
  with tf.io.TFRecordWriter(path) as writer:
    for record in records:
      writer.write(record)


def test_shard_cut_on_a_record_boundary_is_named(tmp_path, rig3):
  from mf_tf.data import pipeline  # pylint: disable=import-outside-toplevel
  out = tfrecord.write_shards(_frames(num_frames=16, images=False), str(tmp_path / "ds"), 8, rig3,
                              "h36m17", 16, detector_params={"sigma": 2.0, "noise_level": 0.05})
  meta = json.load(open(os.path.join(out, "meta.json")))
  assert meta["shard_frames"] == [8, 8]
  shard = tfrecord.shard_name(1, 2)
  _keep_first_records(os.path.join(out, shard), 4)  # Read silently as 12 of 16 frames before.
  expected = f"shard {shard} holds 4 records, expected 8"
  with pytest.raises(tfrecord.DatasetIntegrityError, match=expected):
    tfrecord.load_arrays(out)
  with pytest.raises(tfrecord.DatasetIntegrityError, match=expected):
    pipeline.make_dataset(out, batch_size=4)
  # Datasets written before per-shard counts were stored are checked against the writer's layout.
  del meta["shard_frames"]
  with open(os.path.join(out, "meta.json"), "w") as stream:
    json.dump(meta, stream)
  with pytest.raises(tfrecord.DatasetIntegrityError, match=expected):
    tfrecord.read_meta(out)


def test_shard_cut_inside_a_record_is_named(tmp_path, rig3):
  out = tfrecord.write_shards(_frames(num_frames=4, images=False), str(tmp_path / "ds"), 2, rig3,
                              "h36m17", 16)
  path = os.path.join(out, tfrecord.shard_name(0, 2))
  assert tfrecord.count_records(path) == 2
  with open(path, "r+b") as stream:
    stream.truncate(os.path.getsize(path) - 10)
  with pytest.raises(tfrecord.DatasetIntegrityError,
                     match=r"shard-00000-of-00002.*inside record 1"):
    tfrecord.read_meta(out)
