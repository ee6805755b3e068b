"""Panoptic reader on the real sequences and demo images in tests/fixtures/real_data/panoptic."""

import json
import os

import numpy as np
import pytest

from mf_tf.data import joints as joints_lib
from mf_tf.data import panoptic

_DEMO_CAMERAS = ["00_03", "00_06", "00_12", "00_13", "00_23"]


def test_real_sequence_units_bodies_and_missing_joints(shared_data):
  seq = shared_data / "panoptic" / "160906_band1"
  data = panoptic.read_panoptic_sequence(str(seq), "hd", ["00_03", "00_12"])
  assert data["rig"].camera_names == ("00_03", "00_12")
  # 20 frames (168-187) x 3 bodies, one row per (frame, body), frame-major.
  np.testing.assert_array_equal(data["frame_ids"], np.repeat(np.arange(168, 188), 3))
  np.testing.assert_array_equal(data["body_ids"], np.tile([0, 1, 2], 20))
  assert data["joints3d"].shape == (60, 19, 3) and data["confidence"].shape == (60, 19)
  # Raw file values: body 0 of frame 168 starts with (124.136, -105.991, -30.2854) cm.
  np.testing.assert_allclose(data["joints3d"][0, 0], [1241.36, -1059.91, -302.854])
  missing = data["confidence"] < 0
  assert missing.sum() == 80  # SOURCES.md: 80 missing joints in band1, none in band2
  assert missing[0, 8]  # body 0 of frame 168 has joint 8 (lankle) missing
  assert np.all(np.isnan(data["joints3d"][missing]))
  assert np.all(np.isfinite(data["joints3d"][~missing]))
  # Millimetres: neck-to-bodycenter (torso) lengths of real adults, 400-650 mm.
  coco = joints_lib.get_joint_set("coco19")
  torso = np.linalg.norm(data["joints3d"][:, coco.index("neck")]
                         - data["joints3d"][:, coco.index("bodycenter")], axis=-1)
  assert np.all((torso > 400) & (torso < 650)), torso
  # Joints and cameras agree on units: every reconstructed joint lies in front of every HD
  # camera and most project inside the 1920x1080 image.
  full = panoptic.read_panoptic_sequence(str(seq), "hd")
  assert full["rig"].num_views == 31
  points = full["joints3d"][~np.isnan(full["joints3d"][..., 0])]
  inside = []
  for camera in full["rig"].cameras:
    uv, depth = camera.project(points)
    assert np.all(depth > 500)
    hit = (uv[:, 0] >= 0) & (uv[:, 0] < 1920) & (uv[:, 1] >= 0) & (uv[:, 1] < 1080)
    inside.append(np.mean(hit))
    # Every miss is a seated musician's leg below the bottom edge of a low camera, never a
    # sideways or upward miss (which a unit or convention error would produce).
    assert np.all(uv[~hit, 1] >= 1080)
  # 20 frames: 89.7% median (87.6% mean) of joints inside each HD image.
  assert np.median(inside) > 0.88, inside


def test_shared_calibration_and_image_paths(shared_data):
  seq = shared_data / "panoptic" / "160906_band2"
  calibration = shared_data / "panoptic" / "160906_band1" / "calibration_160906_band1.json"
  demo = shared_data / "panoptic" / "demo"
  data = panoptic.read_panoptic_sequence(str(seq), "hd", _DEMO_CAMERAS,
                                         calibration_path=str(calibration))
  np.testing.assert_array_equal(np.unique(data["frame_ids"]), np.arange(139, 159))
  assert data["image_paths"].shape == (60, 5)
  assert not np.any(data["confidence"] < 0)  # band2 has no missing joint
  assert data["image_paths"][0, 1] == os.path.join(str(seq), "hdImgs", "00_06",
                                                   "00_06_00000139.jpg")
  # The demo folder uses the same <cam>/<cam>_<frame:08d>.jpg layout.
  frames = sorted(int(name.split("_")[-1].split(".")[0]) for name in os.listdir(demo / "00_03"))
  paths = np.asarray([[panoptic.image_path(str(demo), cam, f) for cam in _DEMO_CAMERAS]
                      for f in frames])
  assert all(os.path.isfile(p) for p in paths.ravel())
  assert paths.shape == (5, 5)


def test_bad_inputs_name_the_file(tmp_path, shared_data):
  seq = tmp_path / "seq"
  (seq / panoptic.POSE_DIR).mkdir(parents=True)
  calibration = shared_data / "panoptic" / "160906_band1" / "calibration_160906_band1.json"
  with pytest.raises(FileNotFoundError, match="calibration_seq.json"):
    panoptic.read_panoptic_sequence(str(seq), "hd", ["00_03"])
  with pytest.raises(FileNotFoundError, match="holds no body3DScene"):
    panoptic.read_panoptic_sequence(str(seq), "hd", ["00_03"], calibration_path=str(calibration))
  bad = seq / panoptic.POSE_DIR / "body3DScene_00000001.json"
  bad.write_text(json.dumps({"bodies": [{"id": 0, "joints19": [0.0] * 60}]}))
  with pytest.raises(ValueError, match=r"body3DScene_00000001.json: body 0 .* 60 values, "
                                       r"expected 76"):
    panoptic.read_panoptic_sequence(str(seq), "hd", ["00_03"], calibration_path=str(calibration))
  bad.write_text("{not json")
  with pytest.raises(ValueError, match="not valid JSON"):
    panoptic.read_body_scene(str(bad))
