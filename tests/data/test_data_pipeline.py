"""tf.data pipeline over stored synthetic frames: shapes, rendering from compact state, views."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from mf_tf.data import pipeline
from mf_tf.data import tfrecord
from mf_tf.data import world
from mf_tf.data.codec import HeatmapCodec
from mf_tf.data.detector import DetectorParams
from mf_tf.geometry import rigs

SIZE = 16
NUM_FRAMES = 6


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
  rig = rigs.ring_rig(3, seed=3)
  frames = world.simulate_frames(rig, NUM_FRAMES, seed=7, joint_set="h36m17", heatmap_size=SIZE,
                                 return_heatmaps=True)
  params = dataclasses.asdict(DetectorParams().scaled(SIZE))
  root = tmp_path_factory.mktemp("pipeline")
  compact = {k: v for k, v in frames.items() if k != "heatmaps"}
  compact_dir = tfrecord.write_shards(compact, str(root / "compact"), 4, rig, "h36m17", SIZE,
                                      detector_params=params)
  dense_dir = tfrecord.write_shards(frames, str(root / "dense"), 4, rig, "h36m17", SIZE,
                                    detector_params=params)
  return rig, frames, compact_dir, dense_dir


def _all(dataset):
  batches = list(dataset.as_numpy_iterator())
  return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def test_elements_shapes_dtypes_and_rendering(simulated):
  rig, frames, compact_dir, _ = simulated
  dataset = pipeline.make_dataset(compact_dir, batch_size=4, rig=rig, joint_set="h36m17",
                                  heatmap_size=SIZE)
  spec = dataset.element_spec
  expected = {
      "heatmaps": ([None, 3, SIZE, SIZE, 17], tf.float32),
      "target_heatmaps": ([None, 3, SIZE, SIZE, 17], tf.float32),
      "target_weights": ([None, 3, 17], tf.float32),
      "joints2d": ([None, 3, 17, 2], tf.float32),
      "joints3d": ([None, 17, 3], tf.float32),
      "visibility": ([None, 3, 17], tf.float32),
      "head_size": ([None, 3], tf.float32),
      "frame_index": ([None], tf.int64),
  }
  for key, (shape, dtype) in expected.items():
    assert spec[key].shape.as_list() == shape, key
    assert spec[key].dtype == dtype, key
  assert "images" not in spec
  out = _all(dataset)
  np.testing.assert_array_equal(out["frame_index"], np.arange(NUM_FRAMES))
  np.testing.assert_array_equal(out["joints2d"], frames["joints2d"])
  # Rendered inside tf.data from the compact state == the world's own rendering.
  np.testing.assert_allclose(out["heatmaps"], frames["heatmaps"], atol=1e-5)
  targets, weights = HeatmapCodec(SIZE).encode(frames["joints2d"], frames["visibility"])
  np.testing.assert_allclose(out["target_heatmaps"], targets.numpy(), atol=1e-6)
  np.testing.assert_array_equal(out["target_weights"], weights.numpy())
  # The target's peak sits on the joint: decoding the targets gives joints2d back (weighted
  # joints away from the border row/column, where the decoder has no sub-pixel neighbour).
  coords, _ = HeatmapCodec(SIZE).decode(out["target_heatmaps"])
  inside = (out["target_weights"] > 0) & np.all(
      (frames["joints2d"] > 0.5) & (frames["joints2d"] < SIZE - 1.5), axis=-1)
  assert inside.mean() > 0.5
  np.testing.assert_allclose(coords.numpy()[inside], frames["joints2d"][inside], atol=0.05)


def test_dense_heatmaps_and_view_subset(simulated):
  _, frames, compact_dir, dense_dir = simulated
  dense = _all(pipeline.make_dataset(dense_dir, batch_size=NUM_FRAMES, views=[2, 0]))
  np.testing.assert_array_equal(dense["heatmaps"], frames["heatmaps"][:, [2, 0]])
  np.testing.assert_array_equal(dense["visibility"], frames["visibility"][:, [2, 0]])
  np.testing.assert_array_equal(dense["head_size"], frames["head_size"][:, [2, 0]])
  np.testing.assert_array_equal(dense["joints3d"], frames["joints3d"])
  pair = _all(pipeline.make_dataset(compact_dir, batch_size=3, views=[1, 2]))
  assert pair["heatmaps"].shape == (NUM_FRAMES, 2, SIZE, SIZE, 17)
  np.testing.assert_array_equal(pair["peaks"], frames["peaks"][:, [1, 2]])
  no_maps = _all(pipeline.make_dataset(compact_dir, batch_size=3, render_heatmaps=False))
  assert "heatmaps" not in no_maps and "peaks" not in no_maps
  assert pipeline.selected_rig(compact_dir, [2, 0]).camera_names == (
      simulated[0].camera_names[2], simulated[0].camera_names[0])


def test_shuffle_repeat_is_seeded(simulated):
  _, _, compact_dir, _ = simulated

  def order(seed):
    dataset = pipeline.make_dataset(compact_dir, batch_size=4, shuffle=True, repeat=True,
                                    seed=seed, render_heatmaps=False)
    return np.concatenate([b["frame_index"] for b in dataset.take(3).as_numpy_iterator()])

  first = order(1)
  np.testing.assert_array_equal(first, order(1))
  assert sorted(first[:NUM_FRAMES].tolist()) == list(range(NUM_FRAMES))  # one epoch, each once
  assert not np.array_equal(first[:NUM_FRAMES], np.arange(NUM_FRAMES))


def test_bad_requests(simulated):
  rig, _, compact_dir, _ = simulated
  with pytest.raises(ValueError, match=r"views=\[0, 3\]: expected distinct view indices in "
                                       r"\[0, 3\)"):
    pipeline.make_dataset(compact_dir, 2, views=[0, 3])
  with pytest.raises(ValueError, match="stores no images"):
    pipeline.make_dataset(compact_dir, 2, with_images=True)
  with pytest.raises(tfrecord.DatasetMismatchError, match="expected 'coco19'"):
    pipeline.make_dataset(compact_dir, 2, joint_set="coco19")
  with pytest.raises(tfrecord.DatasetMismatchError, match="rig"):
    pipeline.make_dataset(compact_dir, 2, rig=rigs.ring_rig(3, seed=4))
  with pytest.raises(FileNotFoundError, match="meta.json"):
    pipeline.make_dataset(compact_dir + "_missing", 2)
  # The rig it was written with is accepted, and is the one the dataset stores.
  batch = next(pipeline.make_dataset(compact_dir, 2, rig=rig).as_numpy_iterator())
  assert batch["heatmaps"].shape == (2, rig.num_views, SIZE, SIZE, 17)
  assert np.abs(batch["heatmaps"]).max() > 0
  stored = tfrecord.load_rig(compact_dir)
  assert stored.camera_names == rig.camera_names
  for got, want in zip(stored.cameras, rig.cameras):
    for field in ("K", "R", "t", "dist"):
      np.testing.assert_allclose(getattr(got, field), getattr(want, field), rtol=1e-9,
                                 atol=1e-9, err_msg=f"{want.name}.{field}")
    assert (got.width, got.height) == (want.width, want.height)


@pytest.mark.parametrize("encoding", ["png", "raw"])
def test_images_decode_exactly(tmp_path, encoding):
  rig = rigs.ring_rig(2, seed=5)
  frames = world.simulate_frames(rig, 3, seed=1, heatmap_size=SIZE, render_images=True,
                                 image_size=32, return_heatmaps=False)
  params = dataclasses.asdict(DetectorParams().scaled(SIZE))
  out = tfrecord.write_shards(frames, str(tmp_path / "ds"), 2, rig, "h36m17", SIZE,
                              image_encoding=encoding, detector_params=params)
  got = _all(pipeline.make_dataset(out, batch_size=2, with_images=True, views=[1]))
  assert got["images"].dtype == np.uint8 and got["images"].shape == (3, 1, 32, 32, 3)
  np.testing.assert_array_equal(got["images"], frames["images"][:, [1]])
  assert frames["images"].std() > 10  # real rendered content, not a blank canvas
