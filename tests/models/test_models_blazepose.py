"""BlazePose backend: anchors, decoding, NMS, ROI and crop geometry, joint map, model cache, and
the real models on real Panoptic frames (skipped when the model cache is empty)."""

import hashlib
import pathlib
import zipfile

import numpy as np
import pytest

from mf_tf.data import joints as joints_lib
from mf_tf.geometry import calibration
from mf_tf.geometry import camera as camera_lib
from mf_tf.geometry import crops
from mf_tf.models import blazepose
from mf_tf.models import fetch_blazepose

_DEMO_CAMERAS = ("00_03", "00_06", "00_12", "00_13", "00_23")


def test_ssd_anchors_count_and_positions():
  anchors = blazepose.ssd_anchors()
  assert anchors.shape == (blazepose.NUM_ANCHORS, 2) == (2254, 2)
  # Stride 8: 28 x 28 cells, 2 anchors each, cell-major (row, then column).
  np.testing.assert_allclose(anchors[0], [0.5 / 28, 0.5 / 28])
  np.testing.assert_allclose(anchors[1], anchors[0])
  np.testing.assert_allclose(anchors[2], [1.5 / 28, 0.5 / 28])
  np.testing.assert_allclose(anchors[56], [0.5 / 28, 1.5 / 28])
  # Stride 16 starts at 28 * 28 * 2 = 1568: 14 x 14 cells, 2 anchors each.
  np.testing.assert_allclose(anchors[1567], [27.5 / 28, 27.5 / 28])
  np.testing.assert_allclose(anchors[1568], [0.5 / 14, 0.5 / 14])
  # The three stride-32 layers share one 7 x 7 map from 1568 + 392 = 1960, 6 anchors a cell.
  np.testing.assert_allclose(anchors[1960:1966], np.tile([[0.5 / 7, 0.5 / 7]], (6, 1)))
  np.testing.assert_allclose(anchors[1966], [1.5 / 7, 0.5 / 7])
  np.testing.assert_allclose(anchors[-1], [6.5 / 7, 6.5 / 7])


def test_decode_round_trip_on_a_synthetic_anchor():
  anchors = blazepose.ssd_anchors()
  box = np.array([0.41, 0.55, 0.2, 0.3])
  keypoints = np.array([[0.4, 0.6], [0.42, 0.3], [0.41, 0.45], [0.43, 0.35]])
  raw = np.zeros((len(anchors), 12))
  raw[1000] = blazepose.encode_detection(box, keypoints, anchors[1000])
  logits = np.zeros(len(anchors))
  logits[[0, 1]] = [1e4, -1e4]  # Clipped to +-100 before the sigmoid: finite, no overflow.
  boxes, points, scores = blazepose.decode_detections(raw, logits[:, None], anchors)
  np.testing.assert_allclose(boxes[1000], box, atol=1e-12)
  np.testing.assert_allclose(points[1000], keypoints, atol=1e-12)
  # A zero regression decodes to the anchor centre with a zero-size box.
  np.testing.assert_allclose(boxes[5], [*anchors[5], 0.0, 0.0])
  assert scores[0] == pytest.approx(1.0) and 0.0 < scores[1] < 1e-40
  assert scores[2] == pytest.approx(0.5) and np.all(np.isfinite(scores))
  with pytest.raises(ValueError, match=r"expected \[2254, 12\]"):
    blazepose.decode_detections(raw[:, :4], logits, anchors)


def test_box_iou_and_weighted_nms_on_constructed_boxes():
  np.testing.assert_allclose(
      blazepose.box_iou([0.5, 0.5, 0.2, 0.2], [[0.5, 0.5, 0.2, 0.2], [0.6, 0.5, 0.2, 0.2],
                                               [0.9, 0.9, 0.1, 0.1]]),
      [1.0, 0.02 / 0.06, 0.0])
  boxes = np.array([[0.30, 0.30, 0.20, 0.20],   # a: best of cluster 1
                    [0.32, 0.30, 0.20, 0.20],   # b: IoU(a, b) = 0.818 > 0.3, merges into a
                    [0.70, 0.70, 0.20, 0.20],   # c: separate
                    [0.50, 0.50, 0.20, 0.20],   # d: below the score threshold
                    [0.45, 0.30, 0.20, 0.20]])  # e: IoU(a, e) = 0.14, its own cluster
  keypoints = np.arange(5 * 4 * 2, dtype=np.float64).reshape(5, 4, 2)
  scores = np.array([0.9, 0.6, 0.8, 0.4, 0.55])
  out_boxes, out_points, out_scores = blazepose.weighted_nms(boxes, keypoints, scores)
  np.testing.assert_allclose(out_scores, [0.9, 0.8, 0.55])
  np.testing.assert_allclose(out_boxes[0], (0.9 * boxes[0] + 0.6 * boxes[1]) / 1.5)
  np.testing.assert_allclose(out_points[0], (0.9 * keypoints[0] + 0.6 * keypoints[1]) / 1.5)
  np.testing.assert_allclose(out_boxes[1:], boxes[[2, 4]])
  np.testing.assert_allclose(out_points[1:], keypoints[[2, 4]])
  empty = blazepose.weighted_nms(boxes, keypoints, np.zeros(5))
  assert [a.shape for a in empty] == [(0, 4), (0, 4, 2), (0,)]


def test_roi_from_keypoints_size_and_rotation():
  hip = np.array([500.0, 600.0])
  # Upright: the scale point straight above the hips -> no rotation.
  center, size, rotation = blazepose.roi_from_keypoints(hip, hip + [0.0, -200.0])
  np.testing.assert_allclose(center, hip)
  assert size == pytest.approx(2 * 200 * 1.25) and rotation == pytest.approx(0.0)
  # Lying with the head to the right: +90 degrees, and the crop's up is the image's +x.
  _, size, rotation = blazepose.roi_from_keypoints(hip, hip + [100.0, 0.0])
  assert size == pytest.approx(250.0) and rotation == pytest.approx(np.pi / 2)
  affine = crops.roi_affine(hip, size, rotation, 64)
  up = crops.apply_affine(affine, [hip + [100.0, 0.0]])[0] - crops.apply_affine(affine, [hip])[0]
  assert up[1] < 0 and abs(up[0]) < 1e-9
  # Upside down: rotation normalized to [-pi, pi).
  _, _, rotation = blazepose.roi_from_keypoints(hip, hip + [0.0, 150.0])
  assert rotation == pytest.approx(-np.pi)


def _person(center, size, rotation):
  return blazepose.PersonBox(0.9, np.zeros(4), np.zeros((4, 2)), np.asarray(center, np.float64),
                             size, rotation)


@pytest.mark.parametrize("rotation", [0.0, 0.5, -2.0])
def test_crop_affine_corners_inverse_and_pixels(rotation):
  # A 300 x 200 float image whose red and green channels hold each pixel's own x and y.
  height, width = 200, 300
  ys, xs = np.mgrid[:height, :width].astype(np.float64)
  image = np.stack([xs * 255 / 299, ys * 255 / 199, np.zeros_like(xs)], axis=-1)
  center, size = np.array([150.0, 90.0]), 120.0
  crop_image, affine = blazepose.crop_person(image, _person(center, size, rotation))
  assert crop_image.shape == (256, 256, 3) and crop_image.dtype == np.float32
  # The ROI corners (top-left first, clockwise in the upright crop) map to the heatmap's
  # corners: with HEATMAP_GRID_SHIFT, heatmap pixel i sits at i / 64 of the crop.
  cos, sin = np.cos(rotation), np.sin(rotation)
  offsets = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * size / 2
  corners = center + offsets @ np.array([[cos, sin], [-sin, cos]])
  np.testing.assert_allclose(crops.apply_affine(affine, corners),
                             [[0, 0], [64, 0], [64, 64], [0, 64]], atol=1e-9)
  points = np.random.default_rng(1).uniform(0, 300, (8, 2))
  np.testing.assert_allclose(
      crops.apply_affine(np.linalg.inv(affine), crops.apply_affine(affine, points)), points,
      atol=1e-9)
  # Crop pixels read the image where the affine says (bilinear is exact on a linear ramp):
  # crop pixel q sits at heatmap point (q + 0.5) / 4.
  q = np.array([[128.0, 128.0], [40.0, 200.0], [230.0, 17.0]])
  where = crops.apply_affine(np.linalg.inv(affine), (q + 0.5) / 4)
  read = crop_image[q[:, 1].astype(int), q[:, 0].astype(int)] * 255
  np.testing.assert_allclose(read[:, 0], where[:, 0] * 255 / 299, atol=1e-3)
  np.testing.assert_allclose(read[:, 1], where[:, 1] * 255 / 199, atol=1e-3)


def test_detection_windows_cover_the_image():
  windows = blazepose.detection_windows(1080, 1920)
  np.testing.assert_allclose(windows[0][0], [959.5, 539.5])
  assert windows[0][1] == 1920  # The letterbox.
  tiles = np.array([center for center, _ in windows[1:]])
  assert [side for _, side in windows[1:]] == [1080] * 3
  # Tiles of side 1080 from the left edge to the right edge, half overlapping.
  np.testing.assert_allclose(tiles, [[539.5, 539.5], [959.5, 539.5], [1379.5, 539.5]])
  assert len(blazepose.detection_windows(1080, 1920, tiled=False)) == 1
  assert len(blazepose.detection_windows(500, 500)) == 1
  portrait = blazepose.detection_windows(1920, 1080)
  np.testing.assert_allclose(portrait[1][0], [539.5, 539.5])
  np.testing.assert_allclose(portrait[-1][0], [539.5, 1379.5])


def test_sample_bilinear_borders():
  image = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
  coords = np.array([[0.5, 0.5], [-1.0, 0.0], [5.0, 1.0]])
  zero = blazepose.sample_bilinear(image, coords, "zero")
  replicate = blazepose.sample_bilinear(image, coords, "replicate")
  np.testing.assert_allclose(zero[0], image.reshape(4, 3).mean(0))
  np.testing.assert_allclose(zero[1:], 0.0)
  np.testing.assert_allclose(replicate[1], image[0, 0])
  np.testing.assert_allclose(replicate[2], image[1, 1])
  with pytest.raises(ValueError, match="border 'wrap'"):
    blazepose.sample_bilinear(image, coords, "wrap")


@pytest.mark.parametrize("name", ["h36m17", "coco19", "totalcapture16"])
def test_joint_map_sources_and_midpoints(name):
  joint_set = joints_lib.get_joint_set(name)
  assert set(blazepose.JOINT_SOURCES[name]) == set(joint_set.names)  # Every joint has a source.
  weights = blazepose.joint_weights(name)
  assert weights.shape == (joint_set.num_joints, 33)
  assert np.all(weights >= 0)
  np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-15)
  points = np.random.default_rng(2).normal(size=(33, 2))
  joints = weights @ points
  point = {p: points[i] for i, p in enumerate(blazepose.BLAZEPOSE_POINTS)}
  mid_hip = (point["lhip"] + point["rhip"]) / 2
  mid_shoulder = (point["lshoulder"] + point["rshoulder"]) / 2
  expected = {
      "pelvis": mid_hip, "bodycenter": mid_hip, "thorax": mid_shoulder,
      "spine": (mid_hip + mid_shoulder) / 2, "head": (point["lear"] + point["rear"]) / 2,
      "neck": mid_shoulder}
  if name == "h36m17":  # H36M's "nose" is a neck/chin marker, not the nose.
    expected["nose"] = (point["nose"] + mid_shoulder) / 2
  for joint in joint_set.names:
    if joint in point and joint not in expected:  # The same point (limbs, coco19 face).
      np.testing.assert_array_equal(weights[joint_set.index(joint)],
                                    np.eye(33)[blazepose.BLAZEPOSE_POINTS.index(joint)])
  for joint, value in expected.items():
    if joint in joint_set.names:
      np.testing.assert_allclose(joints[joint_set.index(joint)], value, atol=1e-15)
  with pytest.raises(ValueError, match="unknown joint set"):
    blazepose.joint_weights("mpii16")


def _fake_wheel(path, contents):
  with zipfile.ZipFile(path, "w") as archive:
    for name, data in contents.items():
      archive.writestr(fetch_blazepose.MODEL_FILES[name][0], data)


def test_extract_checks_hashes_and_missing_members(tmp_path, monkeypatch):
  cache = tmp_path / "cache"
  bad = tmp_path / "bad.whl"
  _fake_wheel(bad, {"pose_detection.tflite": b"not a model", "pose_landmark_full.tflite": b"x"})
  with pytest.raises(fetch_blazepose.ChecksumError) as error:
    fetch_blazepose.extract_models(str(bad), str(cache))
  message = str(error.value)
  assert "pose_detection.tflite" in message
  assert hashlib.sha256(b"not a model").hexdigest() in message
  assert fetch_blazepose.MODEL_FILES["pose_detection.tflite"][1] in message
  assert not cache.exists()  # Nothing written from a bad wheel.
  partial = tmp_path / "partial.whl"
  _fake_wheel(partial, {"pose_detection.tflite": b"x"})
  with pytest.raises(FileNotFoundError, match="pose_landmark_full.tflite"):
    fetch_blazepose.extract_models(str(partial), str(cache))
  # The detector reads only the cache, and says how to fill it.
  monkeypatch.setenv(fetch_blazepose.ENV_VAR, str(cache))
  assert fetch_blazepose.default_cache_dir() == str(cache)
  with pytest.raises(FileNotFoundError) as error:
    blazepose.BlazePose()
  assert str(cache) in str(error.value)
  assert "python -m mf_tf.models.fetch_blazepose" in str(error.value)


@pytest.fixture(scope="module")
def model_paths():
  # Fetched by the documented setup step (README, .ci/run): missing models fail the tests that
  # need them, they are never skipped.
  return fetch_blazepose.verified_model_paths()


def test_extract_from_a_wheel_and_detect_corruption(model_paths, tmp_path):
  contents = {}
  for name, path in model_paths.items():
    with open(path, "rb") as f:
      contents[name] = f.read()
  wheel = tmp_path / "mediapipe.whl"
  _fake_wheel(wheel, contents)
  cache = tmp_path / "cache"
  written = fetch_blazepose.fetch(str(cache), wheel_path=str(wheel))
  assert sorted(written) == sorted(fetch_blazepose.MODEL_FILES)
  assert fetch_blazepose.verified_model_paths(str(cache)) == written
  assert sorted(p.name for p in cache.iterdir()) == sorted(written)  # No temporary leftovers.
  (cache / "pose_landmark_full.tflite").write_bytes(b"truncated")
  with pytest.raises(fetch_blazepose.ChecksumError, match="pose_landmark_full.tflite"):
    fetch_blazepose.verified_model_paths(str(cache))


@pytest.fixture(scope="module")
def model(model_paths):
  return blazepose.BlazePose()


@pytest.fixture(scope="module")
def demo_frames(repo_root):
  demo = pathlib.Path(repo_root) / "tests" / "fixtures" / "panoptic_demo"
  rig = calibration.read_panoptic(demo / "camera_parameters.json", "hd", list(_DEMO_CAMERAS))
  images = [blazepose.read_image(str(demo / name / f"{name}_00004500.jpg"))
            for name in _DEMO_CAMERAS]
  return rig, images


def test_real_models_find_people_with_plausible_joints(model, demo_frames):
  rig, images = demo_frames
  h36m = joints_lib.get_joint_set("h36m17")
  counts, checked = [], 0
  for camera, image in zip(rig.cameras, images):
    assert image.shape == (1080, 1920, 3)
    people = model.estimate(image, "h36m17", camera=camera)
    counts.append(len(people))
    assert people, f"nobody found in view {camera.name}"
    for person in people:
      joints = person["joints2d"]
      assert joints.shape == (17, 2) and person["scores"].shape == (17,)
      assert person["heatmaps"].shape == (64, 64, 17) and person["crop_affine"].shape == (3, 3)
      assert np.all((person["heatmaps"] >= 0) & (person["heatmaps"] <= 1))
      # Confident joints inside the image; legs cut off by the bottom edge (00_03, 00_23; seen
      # at visibility 0.04-0.51) may be placed below it, but not far.
      inside = np.all((joints >= 0) & (joints < [1920, 1080]), axis=-1)
      assert np.all(inside | (person["scores"] < 0.8)), (joints, person["scores"])
      assert np.all((joints > -200) & (joints < [2120, 1280]))
      for side in "lr":  # Shoulders above hips (image y grows downward).
        assert joints[h36m.index(side + "shoulder"), 1] < joints[h36m.index(side + "hip"), 1]
      assert joints[h36m.index("head"), 1] < joints[h36m.index("pelvis"), 1]
      # The heatmaps agree with the joints through the crop affine: the peak of a confident
      # direct joint (shoulders, hips; visible, heatmap peak >= 0.5) lies within 2 heatmap px
      # of the joint mapped into the crop.
      undistorted = crops.apply_affine(
          person["crop_affine"], camera_lib.undistort_points(camera, joints))
      for joint in ("lshoulder", "rshoulder", "lhip", "rhip"):
        j = h36m.index(joint)
        if person["scores"][j] < 0.9 or person["heatmaps"][..., j].max() < 0.5:
          continue  # Two people overlapping in one crop can split a heatmap (00_03, 00_12).
        checked += 1
        row, col = np.unravel_index(person["heatmaps"][..., j].argmax(), (64, 64))
        assert np.hypot(col - undistorted[j, 0], row - undistorted[j, 1]) < 2.0
  # Measured at frame 4500 in views 00_03, 00_06, 00_12, 00_13, 00_23 (2-3 people visible in
  # each): the tiled detector finds 2, 1, 2, 3, 2 people (1, 1, 1, 2, 2 with the letterbox
  # alone); `estimate` keeps 1, 1, 2, 3, 2, dropping 00_03's second person, mostly hidden behind
  # the first (pose presence 0.36 < 0.5). 29 shoulders and hips pass the heatmap check.
  assert sum(counts) >= 8, counts
  assert checked >= 25, checked


def test_real_heatmap_grid_and_derived_joints(model, demo_frames):
  _, images = demo_frames
  offsets = []
  for image in images:
    for box in model.detect_people(image):
      out = model.run_landmarks(model.crop(image, box)[0])
      for j in np.flatnonzero(out["visibility"] > 0.8):
        heatmap = out["heatmaps"][..., j]
        row, col = np.unravel_index(heatmap.argmax(), heatmap.shape)
        if heatmap[row, col] < 0.5 or not (5 <= row < 59 and 5 <= col < 59):
          continue
        window = heatmap[row - 5:row + 6, col - 5:col + 6]
        rows, cols = np.mgrid[row - 5:row + 6, col - 5:col + 6]
        centroid = np.array([(window * cols).sum(), (window * rows).sum()]) / window.sum()
        offsets.append(centroid - out["points"][j])
  # HEATMAP_GRID_SHIFT puts the heatmaps' local centroids on the regressed landmarks (without it
  # the median offset is about +0.5 px); measured medians 0.05 / -0.16 px (x / y).
  assert len(offsets) > 100
  np.testing.assert_array_less(np.abs(np.median(offsets, axis=0)), 0.25)
  # Derived joints: a Gaussian peaked at the derived point, as high as its weakest source.
  person = model.estimate(images[0], "coco19")[0]
  coco = joints_lib.get_joint_set("coco19")
  neck = person["heatmaps"][..., coco.index("neck")]
  row, col = np.unravel_index(neck.argmax(), neck.shape)
  expected = crops.apply_affine(person["crop_affine"], person["joints2d"][coco.index("neck")][None])
  assert np.hypot(col - expected[0, 0], row - expected[0, 1]) <= 0.75
  shoulders = person["heatmaps"][..., [coco.index("lshoulder"), coco.index("rshoulder")]]
  assert neck.max() <= shoulders.max(axis=(0, 1)).min() + 1e-6


def _demo_view(repo_root, camera_name, instant):
  demo = pathlib.Path(repo_root) / "tests" / "fixtures" / "panoptic_demo"
  rig = calibration.read_panoptic(demo / "camera_parameters.json", "hd", [camera_name])
  return rig.cameras[0], blazepose.read_image(
      str(demo / camera_name / f"{camera_name}_{instant}.jpg"))


def test_joints_placed_outside_the_image_score_zero(model, repo_root):
  # Instant 00006859, view 00_03: the frame cuts the feet of the person on the left (her back
  # to the camera); BlazePose places her left ankle 39 px below the frame at visibility 0.55.
  camera, image = _demo_view(repo_root, "00_03", "00006859")
  h36m = joints_lib.get_joint_set("h36m17")
  people = model.estimate(image, h36m, camera=camera)
  outside = 0
  for person in people:
    joints = person["joints2d"]
    inside = np.all((joints >= -0.5) & (joints <= [1919.5, 1079.5]), axis=-1)
    assert np.all(person["scores"][~inside] == 0.0), person["scores"]
    assert np.all(person["scores"][inside] > 0.0)
    outside += int((~inside).sum())
  left = min(people, key=lambda person: person["joints2d"][h36m.root, 0])
  assert left["joints2d"][h36m.index("lankle"), 1] > 1079.5
  assert left["scores"][h36m.index("lankle")] == 0.0 and outside >= 1


def test_a_person_found_by_two_windows_is_estimated_once(model_paths, repo_root):
  # Instant 00005514, view 00_13 with detections down to score 0.1: the windows find the woman
  # at the centre (best score 0.93), and the rightmost tile finds her again at 0.36 with its box
  # centre 146 px away (IoU of the fixed-size boxes 0.16-0.25 < 0.3), so NMS keeps both.
  low = blazepose.BlazePose(min_detection_score=0.1)
  camera, image = _demo_view(repo_root, "00_13", "00005514")
  boxes = low.detect_people(image)
  people = low.estimate(image, "h36m17", camera=camera)
  assert len(people) < len(boxes)
  for i, first in enumerate(people):
    for second in people[i + 1:]:
      gaps = np.linalg.norm(first["joints2d"] - second["joints2d"], axis=-1)
      half_extent = first["box"].size / (2 * blazepose.ROI_SCALE)
      assert np.median(gaps) >= blazepose.DUPLICATE_POSE_DISTANCE * half_extent
