"""`--mode=simulate` on the :smoke config: readable shards and a valid contact sheet."""

import os

import numpy as np
import pytest
import tensorflow as tf

from configs import default
from mf_tf.data import contact_sheet
from mf_tf.data import pipeline
from mf_tf.data import tfrecord
from mf_tf.geometry import calibration
from mf_tf.geometry import epipolar
from mf_tf.geometry import rigs
from mf_tf.modes import simulate as simulate_mode


def _run(tmp_path, **overrides):
  config = default.get_config("smoke")
  for key, value in overrides.items():
    section, name = key.split(".") if "." in key else (None, key)
    (config[section] if section else config)[name] = value
  simulate_mode.run(config, str(tmp_path))
  return config


@pytest.mark.large
def test_smoke_run_writes_shards_and_sheet(tmp_path):
  config = _run(tmp_path, **{"world.rig": "pretrain"})
  rig = simulate_mode.resolve_rig(config)
  assert rig.name == config.rig.pretrain
  out = os.path.join(str(tmp_path), "simulate", rig.name)
  meta = tfrecord.read_meta(out, rig=rig, joint_set=config.joint_set,
                            heatmap_size=config.heatmap_size)
  assert meta["num_frames"] == config.world.num_frames
  assert len(meta["shards"]) == config.world.num_frames // config.world.shard_size
  with_images = bool(config.world.render_images)
  dataset = pipeline.make_dataset(out, batch_size=4, with_images=with_images, views=[0, 5])
  batch = next(iter(dataset))
  size = config.heatmap_size
  assert batch["heatmaps"].shape == (4, 2, size, size, 17)
  if with_images:
    assert batch["images"].shape == (4, 2, config.image_size, config.image_size, 3)
    assert batch["images"].dtype == tf.uint8
  # The simulated person is seen: most joints of frame 0 are inside every heatmap.
  joints2d = batch["joints2d"].numpy()
  assert np.mean((joints2d >= 0) & (joints2d < size)) > 0.9

  sheet = os.path.join(out, "contact_sheet.png")
  image = tf.io.decode_png(tf.io.read_file(sheet)).numpy()
  _, _, width, height = contact_sheet.layout(rig.num_views, config.world.sheet_views)
  assert image.shape[:2] == (height, width)
  assert image.std() > 10  # not blank


def test_rig_roles_and_paths(tmp_path):
  config = default.get_config("smoke")
  assert config.world.rig == "target"  # The rig every other mode adapts to, by default.
  assert simulate_mode.resolve_rig(config).name == config.rig.target
  config.world.rig = "pretrain"
  assert simulate_mode.resolve_rig(config).name == config.rig.pretrain
  path = tmp_path / "ring.json"
  calibration.save_rig_file(rigs.ring_rig(3, seed=0, name="my_ring"), path)
  config.world.rig = "target"
  config.rig.target = str(path)
  assert simulate_mode.resolve_rig(config).name == "my_ring"
  config.world.rig = str(path)  # A rig goes in config.rig.*, world.rig only picks the role.
  with pytest.raises(ValueError, match=r"config.world.rig='.*ring.json'.*'pretrain', 'target'"
                                       r".*--config.rig.target"):
    simulate_mode.resolve_rig(config)
  config.world.rig = "target"
  config.rig.target = "no_such_rig"
  with pytest.raises(ValueError, match="unknown rig 'no_such_rig'"):
    simulate_mode.resolve_rig(config)


def test_small_run_without_images_and_epipolar_sheet(tmp_path):
  _run(tmp_path, **{"world.rig": "target", "world.render_images": False,
                    "world.num_frames": 5, "world.shard_size": 2})
  out = os.path.join(str(tmp_path), "simulate", "h36m")
  arrays = tfrecord.load_arrays(out)
  assert arrays["joints3d"].shape == (5, 17, 3) and "images" not in arrays
  assert len(tfrecord.read_meta(out)["shards"]) == 3
  # The sheet's epipolar construction: the chosen joint of view 1 lies on the line drawn
  # from view 0 (true projections, undistorted).
  rig = rigs.get_rig("h36m")
  wrist = arrays["joints3d"][0, 13]
  source, _ = rig.cameras[0].project(wrist, distort=False)
  target, _ = rig.cameras[1].project(wrist, distort=False)
  line = epipolar.epipolar_lines(epipolar.fundamental_matrix(rig.cameras[0], rig.cameras[1]),
                                 source)
  assert epipolar.point_line_distance(target, line) < 1e-6
  png = tf.io.decode_png(tf.io.read_file(os.path.join(out, "contact_sheet.png"))).numpy()
  assert png.shape[:2] == contact_sheet.layout(4)[2:][::-1]
  # Same seed, same data, whatever the shard size.
  _run(tmp_path / "again", **{"world.rig": "target", "world.render_images": False,
                              "world.num_frames": 5, "world.shard_size": 3})
  again = tfrecord.load_arrays(os.path.join(str(tmp_path / "again"), "simulate", "h36m"))
  for key, value in arrays.items():
    np.testing.assert_array_equal(again[key], value)


def test_rig_target_file_is_what_simulate_writes(tmp_path):
  path = tmp_path / "my_rig.json"
  rig = rigs.ring_rig(3, seed=2, name="my_rig")
  calibration.save_rig_file(rig, path)
  _run(tmp_path, **{"rig.target": str(path),
                    "world.render_images": False, "world.num_frames": 4, "world.shard_size": 2,
                    "world.sheet_views": 3})
  out = os.path.join(str(tmp_path), "simulate", "my_rig")
  meta = tfrecord.read_meta(out, rig=rig)  # The stored rig is the file's, camera for camera.
  assert meta["rig_name"] == "my_rig" and meta["num_views"] == 3
  assert sorted(os.listdir(os.path.join(str(tmp_path), "simulate"))) == ["my_rig"]
