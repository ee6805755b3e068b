"""Tests of the synthetic multi-camera world."""

import numpy as np
import pytest

from mf_tf.data import body, detector, joints, world
from mf_tf.geometry import rigs


@pytest.fixture(scope="module")
def rig():
  return rigs.ring_rig(3, image_size=(400, 300), seed=3)


@pytest.fixture(scope="module")
def frames(rig):
  return world.simulate_frames(rig, 5, seed=11, heatmap_size=16)


def test_shapes_and_dtypes(frames):
  expected = {
      "joints3d": ((5, 17, 3), np.float32), "joints2d": ((5, 3, 17, 2), np.float32),
      "visibility": ((5, 3, 17), np.float32), "peaks": ((5, 3, 17, 2, 2), np.float32),
      "amplitudes": ((5, 3, 17, 2), np.float32), "noise_seed": ((5,), np.int64),
      "head_size": ((5, 3), np.float32), "heatmaps": ((5, 3, 16, 16, 17), np.float32),
  }
  assert set(frames) == set(expected)
  for key, (shape, dtype) in expected.items():
    assert frames[key].shape == shape and frames[key].dtype == dtype, key
  assert set(np.unique(frames["visibility"])) <= {0.0, 1.0}


def test_geometry_is_consistent(rig, frames):
  for view, camera in enumerate(rig.cameras):
    uv, _ = camera.project(frames["joints3d"].astype(np.float64))
    np.testing.assert_allclose(frames["joints2d"][:, view],
                               uv * [16 / camera.width, 16 / camera.height], atol=1e-3)
    np.testing.assert_array_equal(frames["visibility"][:, view] > 0,
                                  body.visibility(camera, frames["joints3d"]))
  # Head size: HEAD_SIZE_MM seen at the head's depth, in heatmap px.
  camera = rig.cameras[0]
  depth = camera.world_to_camera(frames["joints3d"][:, 10].astype(np.float64))[:, 2]
  focal = np.sqrt(camera.K[0, 0] * 16 / camera.width * camera.K[1, 1] * 16 / camera.height)
  np.testing.assert_allclose(frames["head_size"][:, 0], world.HEAD_SIZE_MM * focal / depth,
                             rtol=1e-5)


def test_heatmaps_render_from_the_compact_state(frames):
  params = detector.DetectorParams().scaled(16)
  again = detector.render_heatmaps(frames["peaks"], frames["amplitudes"], 16, params.sigma,
                                   params.noise_level, frames["noise_seed"]).numpy()
  np.testing.assert_allclose(again, frames["heatmaps"], atol=1e-5)


def test_deterministic_by_seed(rig, frames):
  again = world.simulate_frames(rig, 5, seed=11, heatmap_size=16)
  for key in frames:
    np.testing.assert_array_equal(frames[key], again[key], err_msg=key)
  other = world.simulate_frames(rig, 5, seed=12, heatmap_size=16, return_heatmaps=False)
  assert "heatmaps" not in other
  assert np.abs(other["joints3d"] - frames["joints3d"]).max() > 100


def test_totalcapture_subset_and_images(rig, frames):
  subset = world.simulate_frames(rig, 5, seed=11, joint_set="totalcapture16", heatmap_size=16,
                                 return_heatmaps=False, render_images=True, image_size=32)
  source, target = joints.index_map("h36m17", "totalcapture16")
  np.testing.assert_array_equal(subset["joints3d"][:, target], frames["joints3d"][:, source])
  assert subset["peaks"].shape == (5, 3, 16, 2, 2)
  assert subset["images"].shape == (5, 3, 32, 32, 3) and subset["images"].dtype == np.uint8
  with pytest.raises(ValueError, match="joint sets"):
    world.simulate_frames(rig, 1, seed=0, joint_set="coco19")


def test_real_rig_people_are_in_view():
  rig = rigs.get_rig("panoptic_vga20").subset([0, 7, 14])
  frames = world.simulate_frames(rig, 20, seed=0, heatmap_size=32, return_heatmaps=False)
  pelvis = frames["joints2d"][:, :, 0]
  assert np.mean(np.all((pelvis >= 0) & (pelvis < 32), axis=-1)) > 0.95
  assert 0.5 < frames["visibility"].mean() < 0.95  # Real occlusion, but most joints seen.
  assert np.all(frames["head_size"] > 1.0)
