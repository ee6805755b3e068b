"""TFDS builders: synthetic round trip, training elements, real manual-download data, errors."""

import os
import pickle
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds

from mf_tf.data import convert
from mf_tf.data import detector
from mf_tf.data import panoptic
from mf_tf.data import pipeline
from mf_tf.data import tfds_builders
from mf_tf.data import tfds_pose_builders
from mf_tf.data import tfrecord
from mf_tf.data import world
from mf_tf.data.detector import DetectorParams
from mf_tf.geometry import rigs

SIZE = 16
TOTALCAPTURE_FIXTURES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures",
                                     "totalcapture")


def _offline():
  return {"download_config": tfds_builders.offline_download_config()}


def _split_arrays(dataset) -> dict:
  examples = list(tfds.as_numpy(dataset))
  return {key: np.stack([example[key] for example in examples]) for key in examples[0]}


def _all(dataset) -> dict:
  batches = list(dataset.as_numpy_iterator())
  return {key: np.concatenate([batch[key] for batch in batches]) for key in batches[0]}


@pytest.fixture(scope="module")
def compact_world(tmp_path_factory):
  """A 3-frame train split of the h36m rig's world, compact detector state only."""
  config = tfds_builders.SyntheticWorldConfig(name="compact16", rig="h36m",
                                              splits=(("train", 3),), heatmap_size=SIZE)
  return tfds_builders.prepare(tfds_builders.make_builder(
      "mf_tf_synthetic_world", tmp_path_factory.mktemp("tfds"), config))


def test_synthetic_round_trip_equals_generator(tmp_path, monkeypatch):
  monkeypatch.setattr(tfds_builders, "SIMULATE_CHUNK", 2)  # 3 frames span 2 chunks.
  config = tfds_builders.SyntheticWorldConfig(
      name="round_trip", rig="h36m", splits=(("train", 3), ("test", 1)), seed=5,
      heatmap_size=SIZE, store_heatmaps=True, render_images=True, image_size=24)
  dataset, info = tfds.load("mf_tf_synthetic_world", split="train", data_dir=str(tmp_path),
                            builder_kwargs={"config": config}, with_info=True,
                            download_and_prepare_kwargs=_offline())
  stored = _split_arrays(dataset)
  rig = rigs.get_rig("h36m")
  chunks = [world.simulate_frames(rig, count, tfds_builders.chunk_seed(5, "train", chunk),
                                  heatmap_size=SIZE, render_images=True, image_size=24)
            for chunk, count in enumerate((2, 1))]
  expected = {key: np.concatenate([chunk[key] for chunk in chunks]) for key in chunks[0]}
  assert sorted(stored) == sorted(list(expected) + ["frame_index"])
  np.testing.assert_array_equal(stored["frame_index"], [0, 1, 2])
  for key, value in expected.items():
    assert stored[key].dtype == value.dtype, key
    np.testing.assert_array_equal(stored[key], value, err_msg=key)
  assert info.splits["train"].num_examples == 3 and info.splits["test"].num_examples == 1
  test_frame = world.simulate_frames(rig, 1, tfds_builders.chunk_seed(5, "test", 0),
                                     heatmap_size=SIZE, return_heatmaps=False)
  reopened, reopened_info = tfds.load("mf_tf_synthetic_world/round_trip", split="test",
                                     data_dir=str(tmp_path), download=False, with_info=True)
  stored_test = _split_arrays(reopened)
  np.testing.assert_array_equal(stored_test["joints3d"], test_frame["joints3d"])
  assert tfds_builders.dataset_metadata(reopened_info)["heatmap_size"] == SIZE
  assert not np.array_equal(stored_test["joints3d"][0], stored["joints3d"][0])
  # The metadata carries the rig and the scaled detector the compact state renders with.
  stored_params = detector.detector_params_from_config(info.metadata["detector"])
  assert stored_params == DetectorParams().scaled(SIZE)
  stored_rig = tfds_builders.dataset_rig(info)
  rigs_match = [np.array_equal(a.K, b.K) and np.array_equal(a.R, b.R) and np.array_equal(a.t, b.t)
                for a, b in zip(stored_rig.cameras, rig.cameras)]
  assert stored_rig.camera_names == rig.camera_names and all(rigs_match)


def test_training_elements_equal_the_tfrecord_pipeline(compact_world, tmp_path):
  builder = compact_world
  frames = world.simulate_frames(rigs.get_rig("h36m"), 3, tfds_builders.chunk_seed(0, "train", 0),
                                 heatmap_size=SIZE, return_heatmaps=False)
  shards = tfrecord.write_shards(frames, str(tmp_path / "shards"), 2, rigs.get_rig("h36m"),
                                 "h36m17", SIZE, detector_params=builder.info.metadata["detector"])
  options = dict(views=[2, 0], rig=rigs.get_rig("h36m"), joint_set="h36m17", heatmap_size=SIZE,
                 target_sigma=0.5)
  reference = pipeline.make_dataset(shards, 2, **options)
  ours = tfds_builders.to_training_dataset(builder.as_dataset(split="train"), builder.info, 2,
                                           **options)
  assert ours.element_spec == reference.element_spec
  expected, got = _all(reference), _all(ours)
  for key in expected:
    assert got[key].dtype == expected[key].dtype, key
    np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
  assert got["heatmaps"].shape == (3, 2, SIZE, SIZE, 17)

  shuffled = _all(tfds_builders.to_training_dataset(builder.as_dataset(split="train"),
                                                    builder.info, 3, shuffle=True, seed=1))
  assert sorted(shuffled["frame_index"]) == [0, 1, 2]
  with pytest.raises(tfrecord.DatasetMismatchError, match="heatmap size 16, expected 32"):
    tfds_builders.to_training_dataset(builder.as_dataset(split="train"), builder.info, 2,
                                      heatmap_size=32)
  with pytest.raises(tfrecord.DatasetMismatchError, match="camera names differ"):
    tfds_builders.to_training_dataset(builder.as_dataset(split="train"), builder.info, 2,
                                      rig=rigs.get_rig("h36m_S1").subset([1, 0, 2, 3]))
  with pytest.raises(ValueError, match=r"views=\[4\]"):
    tfds_builders.to_training_dataset(builder.as_dataset(split="train"), builder.info, 2,
                                      views=[4])
  with pytest.raises(ValueError, match="stores no images"):
    tfds_builders.to_training_dataset(builder.as_dataset(split="train"), builder.info, 2,
                                      with_images=True)


def test_load_training_dataset_by_name(compact_world):
  dataset, info = tfds_builders.load_training_dataset(
      "mf_tf_synthetic_world/compact16", "train[1:]", compact_world.data_dir_root, 4,
      render_heatmaps=False)
  batch = next(iter(dataset))
  np.testing.assert_array_equal(batch["frame_index"].numpy(), [1, 2])
  assert "heatmaps" not in batch and "peaks" not in batch
  assert batch["target_heatmaps"].shape == (2, 4, SIZE, SIZE, 17)
  assert info.metadata["num_views"] == 4
  with pytest.raises(ValueError, match="unknown config 'nope'"):
    tfds_builders.make_builder("mf_tf_synthetic_world/nope", compact_world.data_dir_root)
  with pytest.raises(ValueError, match="unknown TFDS builder 'mnist'"):
    tfds_builders.make_builder("mnist", compact_world.data_dir_root)


def test_panoptic_builder_reads_real_poses(tmp_path, shared_data):
  manual_dir = shared_data / "panoptic"
  cameras = ("00_03", "00_12")
  config = tfds_pose_builders.PanopticConfig(
      name="band1", splits=(("train", ("160906_band1",)),), camera_names=cameras, frame_step=2,
      heatmap_size=32)
  builder = tfds_builders.prepare(
      tfds_builders.make_builder("mf_tf_panoptic", tmp_path, config), manual_dir)
  stored = _split_arrays(builder.as_dataset(split="train"))

  sequence = panoptic.read_panoptic_sequence(str(manual_dir / "160906_band1"), "hd",
                                             list(cameras))
  keep = np.isin(sequence["frame_ids"], np.arange(168, 188, 2))
  frames = tfrecord.frames_from_poses(sequence["rig"], sequence["joints3d"][keep], "coco19", 32,
                                      confidence=sequence["confidence"][keep])
  assert len(stored["frame_index"]) == 30  # 10 of the 20 frames, 3 people each
  np.testing.assert_array_equal(stored["frame_index"], np.arange(30))
  for key in ("joints3d", "joints2d", "visibility", "head_size"):
    np.testing.assert_array_equal(stored[key], frames[key], err_msg=key)
  assert np.isnan(stored["joints3d"]).any()  # band1 has unreconstructed joints
  np.testing.assert_array_equal(stored["frame_id"], sequence["frame_ids"][keep])
  np.testing.assert_array_equal(stored["body_id"], sequence["body_ids"][keep])
  assert stored["image_paths"][1, 1].decode() == os.path.join(
      "160906_band1", "hdImgs", "00_12", f"00_12_{sequence['frame_ids'][keep][1]:08d}.jpg")
  assert set(stored["rig"]) == {b"panoptic_160906_band1"}
  rig = tfds_builders.dataset_rig(builder.info)
  assert rig.name == "panoptic_160906_band1" and rig.camera_names == cameras
  for stored_camera, camera in zip(rig.cameras, sequence["rig"].cameras):
    np.testing.assert_array_equal(stored_camera.t, camera.t)  # millimetres, as read

  batch = next(iter(tfds_builders.to_training_dataset(
      builder.as_dataset(split="train"), builder.info, 6, render_heatmaps=False,
      joint_set="coco19", rig=sequence["rig"])))
  assert np.all(np.isfinite(batch["target_heatmaps"].numpy()))
  np.testing.assert_array_equal(batch["target_weights"].numpy() > 0, frames["visibility"][:6] > 0)
  with pytest.raises(ValueError, match="neither dense heatmaps nor the compact detector state"):
    tfds_builders.to_training_dataset(builder.as_dataset(split="train"), builder.info, 6)


def test_totalcapture_and_h36m_builders_on_fixtures(tmp_path):
  manual = tmp_path / "totalcapture"
  (manual / "s1" / "acting1").mkdir(parents=True)
  shutil.copy(os.path.join(TOTALCAPTURE_FIXTURES, "calibration.cal"), manual)
  shutil.copy(os.path.join(TOTALCAPTURE_FIXTURES, "gt_skel_gbl_pos.txt"), manual / "s1" / "acting1")
  config = tfds_pose_builders.TotalCaptureConfig(
      name="fixture", splits=(("test", ("s1/acting1",)),), camera_names=("cam3", "cam1"),
      heatmap_size=SIZE)
  builder = tfds_builders.prepare(
      tfds_builders.make_builder("mf_tf_totalcapture", tmp_path / "tfds", config), manual)
  stored = _split_arrays(builder.as_dataset(split="test"))
  assert stored["joints3d"].shape == (3, 16, 3) and stored["joints2d"].shape == (3, 2, 16, 2)
  assert list(stored["sequence"]) == [b"s1/acting1"] * 3
  assert tfds_builders.dataset_rig(builder.info).camera_names == ("cam3", "cam1")

  rig = rigs.get_rig("h36m_S9")
  items = []
  for image_id in (1, 2):
    joints3d = np.array([0.0, 0.0, 900.0]) + np.random.default_rng(image_id).normal(0, 250, (17, 3))
    for camera_id, camera in enumerate(rig.cameras):
      name = f"s_09_act_02_subact_01_ca_{camera_id + 1:02d}"
      items.append({
          "image": f"{name}/{name}_{image_id:06d}.jpg", "joints_2d": camera.project(joints3d)[0],
          "joints_3d": joints3d, "joints_vis": np.ones((17, 3)), "image_id": image_id,
          "subject": 9, "action": 2, "subaction": 1, "camera_id": camera_id,
          "camera": {"R": camera.R, "T": camera.center.reshape(3, 1), "fx": camera.K[0, 0],
                     "fy": camera.K[1, 1], "cx": camera.K[0, 2], "cy": camera.K[1, 2],
                     "k": camera.dist[[0, 1, 4]], "p": camera.dist[[2, 3]]}})
  with open(tmp_path / "h36m_validation.pkl", "wb") as f:
    pickle.dump(items, f)
  convert.convert("h36m_pickle", str(tmp_path / "h36m_validation.pkl"),
                  str(tmp_path / "h36m" / "h36m_validation"), trust_pickle=True)
  config = tfds_pose_builders.Human36mConfig(name="s9", splits=(("test", (9,)),),
                                             annotations=(("test", "h36m_validation"),),
                                             heatmap_size=SIZE)
  builder = tfds_builders.prepare(
      tfds_builders.make_builder("mf_tf_h36m", tmp_path / "tfds", config), tmp_path / "h36m")
  stored = _split_arrays(builder.as_dataset(split="test"))
  np.testing.assert_array_equal(stored["image_id"], [1, 2])
  np.testing.assert_allclose(stored["joints3d"][1], items[4]["joints_3d"], rtol=1e-6)
  assert stored["image_paths"][1, 3].decode() == items[7]["image"]
  assert set(stored["rig"]) == {b"h36m_S9"}


def test_missing_manual_dir_names_the_folder(tmp_path):
  absent = tmp_path / "no_such_folder"
  with pytest.raises(FileNotFoundError, match=f"{absent}.*does not exist or is empty"):
    tfds_builders.prepare(tfds_builders.make_builder("mf_tf_panoptic", tmp_path / "tfds"), absent)
  incomplete = tmp_path / "incomplete"
  (incomplete / "160906_band1").mkdir(parents=True)
  config = tfds_pose_builders.PanopticConfig(name="band1", splits=(("train", ("160906_band1",)),))
  with pytest.raises(FileNotFoundError,
                     match=f"manual_dir {incomplete} lacks 160906_band1/calibration_160906_band1"):
    tfds_builders.prepare(tfds_builders.make_builder("mf_tf_panoptic", tmp_path / "tfds", config),
                          incomplete)
  assert not (tmp_path / "tfds" / "mf_tf_panoptic" / "band1" / "1.0.0").exists()


def test_builder_configs(tmp_path):
  assert set(tfds_builders.SyntheticWorld.builder_configs) == set(rigs.list_rigs())
  defaults = {name: tfds_builders.make_builder(name, tmp_path).builder_config.name
              for name in tfds_builders.BUILDERS}
  assert defaults == {"mf_tf_synthetic_world": "h36m", "mf_tf_h36m": "crossview",
                      "mf_tf_panoptic": "hd5", "mf_tf_totalcapture": "cams1357"}
  assert tfds_pose_builders.PANOPTIC_VGA20 == rigs.get_rig("panoptic_vga20").camera_names
  assert sorted(tfds_builders.BUILDERS) == ["mf_tf_h36m", "mf_tf_panoptic",
                                            "mf_tf_synthetic_world", "mf_tf_totalcapture"]
