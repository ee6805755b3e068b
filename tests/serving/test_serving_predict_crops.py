"""--mode=predict on real frames: BlazePose here, each person's crop fusion by the served rig's
fuse_crops signature (`client.ServedCropFusion`), the rest of the instant as --mode=video."""

import json
import os
import pathlib

import numpy as np
import pytest
import tensorflow as tf

from configs import default
from mf_tf.data.codec import HeatmapCodec
from mf_tf.geometry import calibration
from mf_tf.geometry import calibration_formats
from mf_tf.geometry import crops
from mf_tf.models import blazepose
from mf_tf.models import fetch_blazepose
from mf_tf.models.backbone import build_backbone
from mf_tf.modes import export as export_mode
from mf_tf.modes import predict
from mf_tf.modes import video
from mf_tf.reconstruct import people
from mf_tf.reconstruct import reconstructor
from mf_tf.serving import client, export, server

from video_settings import instant_settings  # pylint: disable=wrong-import-order
from video_settings import tracking_settings  # pylint: disable=wrong-import-order

CROP = export.CROP_HEATMAP_SIZE


@pytest.fixture(scope="module")
def running(exported):
  with server.start_server(os.path.join(exported["dir"], "models.config")) as running_server:
    yield running_server


def _person(rig, views, seed=0):
  """Gaussian crop heatmaps of 4 world joints seen by `views`, [Vp, C, C, 4], and the crops."""
  rng = np.random.default_rng(seed)
  points = np.array([[0.0, 0.0, 900.0], [150.0, 0.0, 700.0], [0.0, 150.0, 1200.0],
                     [-100.0, -100.0, 400.0]]) + rng.uniform(-30.0, 30.0, (4, 3))
  affines, peaks = [], []
  for view in views:
    undistorted = rig.cameras[view].project(points, distort=False)[0]
    affine = crops.roi_affine(undistorted.mean(axis=0), 300.0, 0.3 * view, CROP)
    affines.append(affine)
    peaks.append(crops.apply_affine(affine, undistorted))
  peaks = np.stack(peaks)
  return HeatmapCodec(CROP, 2.0).encode(peaks)[0].numpy(), np.stack(affines), peaks


def test_served_crop_fusion_equals_in_process_fusion(running, exported):
  rig = exported["rig"]
  views = [0, 2]  # The person is not seen by view 1: its slot is sent empty.
  heatmaps, affines, peaks = _person(rig, views)
  # View 2 does not see joint 3 (low visibility): its heatmap's peak lies elsewhere, and only
  # its own read-out may use it (`people.fuse_person`'s source mask).
  mask = np.ones((2, 4), bool)
  mask[1, 3] = False
  moved = peaks.copy()
  moved[1, 3] += [18.0, -12.0]
  heatmaps[1, ..., 3] = HeatmapCodec(CROP, 2.0).encode(moved)[0].numpy()[1, ..., 3]
  cameras = [rig.cameras[view] for view in views]
  lines = {"line_width_px": export.epipolar_fusion.DEFAULT_LINE_WIDTH_PX,
           "line_value": export.epipolar_fusion.DEFAULT_LINE_VALUE}  # The export's.
  local = {masked: people.fuse_and_decode(heatmaps, affines, cameras,
                                          mask if masked else None, **lines)
           for masked in (True, False)}
  with client.ServedCropFusion(running.address, rig) as fuse:
    for masked in (True, False):
      served = fuse(heatmaps, affines, cameras, mask if masked else None)
      assert served.shape == (2, 4, 2)
      # Measured: 3e-5 px (the crop geometry travels as float32).
      np.testing.assert_allclose(served, local[masked], atol=1e-3)
    assert fuse.requests == 2
  # At most max_frames frames a request: the masked view's own frame goes in a second one.
  with client.ServedCropFusion(running.address, rig, max_frames=1) as fuse:
    np.testing.assert_allclose(fuse(heatmaps, affines, cameras, mask), local[True], atol=1e-3)
    assert fuse.requests == 2
  # The mask matters here: unmasked, view 2's stray joint 3 pulls view 0's.
  assert np.abs(local[False][0, 3] - local[True][0, 3]).max() > 0.05


def test_crop_fusion_frames_send_each_masked_view_its_own_heatmap():
  heatmaps = np.arange(2 * 4 * 4 * 3, dtype=np.float32).reshape(2, 4, 4, 3) + 1.0
  mask = np.array([[True, True, True], [True, False, True]])
  fill = np.broadcast_to(np.eye(3), (3, 3, 3))
  frames, affines, frame = client.crop_fusion_frames(
      heatmaps, 2.0 * fill[:2], [2, 0], mask, 3, fill)
  assert frames.shape == (2, 3, 4, 4, 3) and affines.shape == (2, 3, 3, 3)
  np.testing.assert_array_equal(frame, [0, 1])
  np.testing.assert_array_equal(frames[:, 1], 0.0)  # The unseen view sends nothing.
  np.testing.assert_array_equal(frames[0, 0, ..., 1], 0.0)  # Masked source.
  np.testing.assert_array_equal(frames[1, 0], heatmaps[1])  # Its own frame: every joint.
  np.testing.assert_array_equal(frames[:, 2], np.broadcast_to(heatmaps[0], (2, 4, 4, 3)))
  np.testing.assert_array_equal(affines[:, 1], np.broadcast_to(np.eye(3), (2, 3, 3)))
  np.testing.assert_array_equal(affines[:, 2], np.broadcast_to(2.0 * np.eye(3), (2, 3, 3)))
  with pytest.raises(ValueError, match="one distinct rig view per heatmap"):
    client.crop_fusion_frames(heatmaps, fill[:2], [1, 1], None, 3, fill)


def test_crops_route_needs_the_served_calibration_and_full_frames(running, exported, tmp_path):
  config = default.get_config()
  config.export.dir = str(tmp_path / "empty")
  paths = []
  for view in range(3):
    path = str(tmp_path / f"view{view}.png")
    tf.io.write_file(path, tf.io.encode_png(tf.zeros([48, 64, 3], tf.uint8)))
    paths.append(path)
  with pytest.raises(ValueError, match=r"needs the calibration of the served rig 'toy3'.*"
                     r"--config.predict.rig_file"):
    predict.run(config, str(tmp_path), server=running.address, rig="toy3", images=paths)
  config.export.dir = exported["dir"]
  with pytest.raises(ValueError, match=r"camera 'cam00' is 64x48, expected 640x480"):
    predict.run(config, str(tmp_path), server=running.address, rig="toy3", images=paths)
  for path in paths:
    tf.io.write_file(path, tf.io.encode_png(tf.zeros([480, 640, 3], tf.uint8)))
  with pytest.raises(ValueError, match="served rig 'toy3' takes 4 joints, "
                     "config.video.joint_set='h36m17' has 17"):
    predict.run(config, str(tmp_path), server=running.address, rig="toy3", images=paths)
  config.predict.route = "whole"
  with pytest.raises(ValueError, match=r"config.predict.route='whole', expected one of"):
    predict.run(config, str(tmp_path), server=running.address, rig="toy3", images=paths)


# ----------------------------------------------------------------------------- Panoptic demo

_CAMERAS = ("00_03", "00_06", "00_12", "00_13", "00_23")
_INSTANTS = ("00004500", "00005514", "00006859", "00009348", "00013007")


@pytest.fixture(scope="module")
def demo(repo_root):
  return pathlib.Path(repo_root) / "tests" / "fixtures" / "panoptic_demo"


@pytest.fixture(scope="module")
def panoptic(demo, tmp_path_factory):
  """The 5 demo cameras exported by --mode=export (MetaFuse^0, untrained small backbone: the
  crop fusion does not use it) and served in process."""
  fetch_blazepose.verified_model_paths()  # Absent models fail (the documented setup step).
  root = tmp_path_factory.mktemp("panoptic")
  rig = calibration_formats.read_calibration(str(demo / "camera_parameters.json"),
                                             names=list(_CAMERAS))
  calibration.save_rig_file(rig, str(root / "rig.json"))
  build_backbone("mobilenetv2_035", 64, 17).save_weights(str(root / "backbone.weights.h5"))
  config = default.get_config()
  config.image_size, config.heatmap_size = 64, 16
  config.model.backbone = "mobilenetv2_035"
  config.export.update(dir=str(root / "export"), rigs=str(root / "rig.json"),
                       backbone_weights=str(root / "backbone.weights.h5"),
                       fusion_source="calibrated", warmup=False)
  export_mode.run(config, str(root))
  with server.start_server(os.path.join(config.export.dir, "models.config")) as running_server:
    yield {"rig": rig, "config": config, "server": running_server, "root": root}


def _images(demo, instant):
  return [blazepose.read_image(str(demo / camera / f"{camera}_{instant}.jpg"))
          for camera in _CAMERAS]


@pytest.mark.large
def test_served_fusion_reconstructs_every_demo_instant_as_in_process(panoptic, demo):
  rig = panoptic["rig"]
  model = blazepose.BlazePose()
  with client.ServedCropFusion(panoptic["server"].address, rig) as fuse:
    for instant in _INSTANTS:
      images = _images(demo, instant)
      local = reconstructor.Reconstructor(model, rig, "h36m17", instant_settings(),
                                          tracking_settings()).step(images)
      served = reconstructor.Reconstructor(model, rig, "h36m17", instant_settings(fuse=fuse),
                                           tracking_settings()).step(images)
      assert [p["views"] for p in served["people"]] == [p["views"] for p in local["people"]]
      assert served["recovered"] == local["recovered"], instant
      for got, want in zip(served["people"], local["people"]):
        # Measured: at most 0.0009 mm and 0.001 px over the 5 instants, every joint of every
        # view included (those fused from masked sources too).
        np.testing.assert_allclose(got["joints3d"], want["joints3d"], atol=0.01,
                                   equal_nan=True, err_msg=instant)
        np.testing.assert_allclose(got["joints2d_after"], want["joints2d_after"], atol=0.01,
                                   err_msg=instant)
    assert fuse.requests >= 3 * len(_INSTANTS)


@pytest.mark.large
def test_predict_mode_gives_video_modes_people(panoptic, demo, tmp_path):
  instant = "00004500"  # Recovery adds two views to one person (test_reconstruct_regressions).
  for camera in _CAMERAS:
    os.makedirs(tmp_path / "frames" / camera)
    os.symlink(demo / camera / f"{camera}_{instant}.jpg",
               tmp_path / "frames" / camera / f"{camera}_{instant}.jpg")
  config = default.get_config()
  config.video.update(frames_dir=str(tmp_path / "frames"),
                      rig=str(demo / "camera_parameters.json"), overlays=False, animation=False)
  video.run(config, str(tmp_path / "video_run"))
  with open(tmp_path / "video_run" / "video" / "frames.jsonl") as f:
    (frame,) = [json.loads(line) for line in f]

  config = panoptic["config"].copy_and_resolve_references()
  paths = [str(demo / camera / f"{camera}_{instant}.jpg") for camera in _CAMERAS]
  result = predict.run(config, str(tmp_path / "predict_run"),
                       server=panoptic["server"].address, rig="panoptic_hd", images=paths)
  with open(tmp_path / "predict_run" / "predict" / "panoptic_hd.json") as f:
    assert json.load(f) == result
  assert result["route"] == "crops" and result["fuse_crops_requests"] >= 3
  assert result["images"] == dict(zip(_CAMERAS, paths))
  assert result["detections"] == frame["detections"]
  assert result["recovered"] == frame["recovered"] and sum(frame["recovered"].values()) >= 2
  assert [p["views"] for p in result["people"]] == [p["views"] for p in frame["people"]]
  joints = [np.isfinite(np.array(p["joints3d_mm"], dtype=float)[:, 0]).sum()
            for p in result["people"]]
  assert len(joints) == 3 and max(joints) >= 12, joints  # Not a comparison of empty people.
  for got, want in zip(result["people"], frame["people"]):
    # Both written to 0.1 mm from values that agree within 0.001 mm.
    got_3d = np.array(got["joints3d_mm"], dtype=float)
    want_3d = np.array(want["joints3d_mm"], dtype=float)
    np.testing.assert_allclose(got_3d, want_3d, atol=0.1 + 1e-9, equal_nan=True)
    for camera in got["views"]:
      np.testing.assert_allclose(got["joints2d"][camera], want["joints2d"][camera], atol=0.011)
