"""One instant's people (`mf_tf.reconstruct.people`) and identities over time (`tracking`)."""

import pathlib

import numpy as np
import pytest

from mf_tf.data import joints as joints_lib
from mf_tf.data import skeleton
from mf_tf.geometry import calibration_formats
from mf_tf.geometry import crops
from mf_tf.models import association
from mf_tf.models import blazepose
from mf_tf.models import fetch_blazepose
from mf_tf.reconstruct import people
from mf_tf.reconstruct import tracking

from video_settings import instant_settings  # pylint: disable=wrong-import-order

_CAMERAS = ("00_03", "00_06", "00_12", "00_13", "00_23")


@pytest.fixture(scope="module")
def demo(repo_root):
  return pathlib.Path(repo_root) / "tests" / "fixtures" / "panoptic_demo"  # In the repository.


@pytest.fixture(scope="module")
def blazepose_cache():
  # The models are fetched by the documented setup step (README, .ci/run): absent models fail
  # the tests that need them rather than skipping them.
  return fetch_blazepose.verified_model_paths()


def _rig(demo, cameras):
  return calibration_formats.read_calibration(str(demo / "camera_parameters.json"),
                                              names=list(cameras))


def _t_pose(joint_set):
  """[J, 3] world mm: h36m17 standing with arms down, every bone at its reference length, at the
  centre of the Panoptic dome (its y axis points down, the floor at y = 0)."""
  lengths = dict(zip(joint_set.names, skeleton.BONE_LENGTHS_MM))
  offsets = {"pelvis": (0, 0), "rhip": (-1, 0), "lhip": (1, 0), "rknee": (0, -1),
             "lknee": (0, -1), "rankle": (0, -1), "lankle": (0, -1), "spine": (0, 1),
             "thorax": (0, 1), "nose": (0, 1), "head": (0, 1), "lshoulder": (1, 0),
             "rshoulder": (-1, 0), "lelbow": (0, -1), "relbow": (0, -1), "lwrist": (0, -1),
             "rwrist": (0, -1)}
  points = np.zeros((joint_set.num_joints, 3))
  for joint in sorted(range(joint_set.num_joints), key=lambda j: len(_ancestors(joint_set, j))):
    parent = joint_set.parents[joint]
    if parent >= 0:
      name = joint_set.names[joint]
      points[joint] = points[parent] + lengths[name] * np.array([*offsets[name], 0.0])
  return points * [1.0, -1.0, 1.0] + [300.0, -880.0, 0.0]


def _ancestors(joint_set, joint):
  chain = []
  while joint_set.parents[joint] >= 0:
    joint = joint_set.parents[joint]
    chain.append(joint)
  return chain


def test_implausible_bones_drop_what_hangs_on_them():
  h36m = joints_lib.get_joint_set("h36m17")
  pose = _t_pose(h36m)
  ratio_range = instant_settings().bone_ratio_range
  np.testing.assert_array_equal(people.drop_implausible_joints(pose, h36m, ratio_range), pose)
  # A knee 300 mm too low (thigh 1.7 x its length): the knee and the ankle below it go.
  stretched = pose.copy()
  stretched[h36m.index("rknee"), 1] += 300.0
  kept = people.drop_implausible_joints(stretched, h36m, ratio_range)
  lost = [h36m.names[j] for j in np.flatnonzero(np.isnan(kept[:, 0]))]
  assert lost == ["rknee", "rankle"]
  # A pelvis 270 mm off (spine-pelvis 1.8 x): walked from the thorax, the pelvis and the legs
  # hanging on it go, the upper body stays.
  shifted = pose.copy()
  shifted[h36m.index("pelvis")] += [0.0, 100.0, 250.0]
  kept = people.drop_implausible_joints(shifted, h36m, ratio_range)
  lost = sorted(h36m.names[j] for j in np.flatnonzero(np.isnan(kept[:, 0])))
  assert lost == sorted(["pelvis", "rhip", "rknee", "rankle", "lhip", "lknee", "lankle"])
  # Bones to the nose and head have no reference; a NaN end is not checked.
  loose = pose.copy()
  loose[h36m.index("head"), 1] += 400.0
  loose[h36m.index("lelbow")] = np.nan
  kept = people.drop_implausible_joints(loose, h36m, ratio_range)
  np.testing.assert_array_equal(np.isnan(kept[:, 0]), np.isnan(loose[:, 0]))
  # coco19's trunk bone (bodycenter-neck) measures the h36m17 pelvis-spine-thorax path.
  coco = joints_lib.get_joint_set("coco19")
  reference = people.reference_bone_lengths(coco)
  assert reference[coco.index("neck")] == pytest.approx(sum(
      skeleton.BONE_LENGTHS_MM[h36m.index(name)] for name in ("spine", "thorax")))
  assert np.isnan(reference[coco.index("lear")]) and np.isnan(reference[coco.index("nose")])


def test_a_view_that_disagrees_leaves_the_joint(demo):
  rig = _rig(demo, _CAMERAS[:4])
  h36m = joints_lib.get_joint_set("h36m17")
  pose = _t_pose(h36m)
  joints2d = np.stack([camera.project(pose)[0] for camera in rig.cameras])
  scores = np.ones(joints2d.shape[:2])
  wrong = joints2d.copy()
  wrong[2, h36m.index("lwrist")] += [60.0, 40.0]  # Another person's wrist in view 2.
  plain, _ = people.triangulate_person(wrong, scores, rig.cameras, 0.5)
  robust, errors = people.triangulate_person(wrong, scores, rig.cameras, 0.5, max_error_px=25.0)
  wrist = h36m.index("lwrist")
  assert np.linalg.norm(plain[wrist] - pose[wrist]) > 20.0
  np.testing.assert_allclose(robust, pose, atol=0.5)
  assert errors[2, wrist] == pytest.approx(np.hypot(60.0, 40.0), abs=0.5)
  # Two views: nothing to outvote, the joint stays as triangulated.
  two, _ = people.triangulate_person(wrong[1:3], scores[1:3], rig.cameras[1:3], 0.5,
                                    max_error_px=25.0)
  assert np.linalg.norm(two[wrist] - pose[wrist]) > 20.0


def test_unseen_joints_are_not_fused_into_other_views(demo):
  rig = _rig(demo, _CAMERAS[:2])
  pose = _t_pose(joints_lib.get_joint_set("h36m17"))[:2]  # Pelvis and right hip.
  affines, heatmaps = [], []
  grid = np.arange(64.0)
  for camera in rig.cameras:
    undistorted = camera.project(pose, distort=False)[0]
    affine = crops.roi_affine(undistorted[0], 900.0, 0.0, 64)
    peaks = crops.apply_affine(affine, undistorted)
    heatmaps.append(np.exp(-((grid[None, :, None] - peaks[:, 0]) ** 2
                             + (grid[:, None, None] - peaks[:, 1]) ** 2) / 2.0))
    affines.append(affine)
  heatmaps = np.stack(heatmaps).astype(np.float32)
  mask = np.array([[True, True], [False, True]])  # View 1 does not see joint 0.
  everything = people.fuse_person(heatmaps, np.stack(affines), rig.cameras, "epipolar", 1.0, 0.1)
  masked = people.fuse_person(heatmaps, np.stack(affines), rig.cameras, "epipolar", 1.0, 0.1,
                             source_mask=mask)
  np.testing.assert_allclose(masked[0, ..., 0], heatmaps[0, ..., 0], atol=1e-6)
  assert np.abs(everything[0, ..., 0] - heatmaps[0, ..., 0]).max() > 0.01
  # Everything else is fused as before (view 1 still receives view 0's joint 0).
  np.testing.assert_allclose(masked[1], everything[1], atol=1e-5)
  np.testing.assert_allclose(masked[0, ..., 1], everything[0, ..., 1], atol=1e-5)


def test_tracks_follow_the_nearest_pelvis():
  previous = {4: np.array([0.0, 0.0, 0.0]), 7: np.array([1000.0, 0.0, 0.0])}
  centers = np.array([[980.0, 0.0, 120.0],     # 7 moved 122 mm.
                      [60.0, 0.0, 0.0],        # 4 moved 60 mm.
                      [3000.0, 0.0, 0.0],      # Nobody was there: a new track.
                      [np.nan, np.nan, np.nan]])
  tracks, next_track = tracking.assign_tracks(previous, centers, 8, max_distance_mm=500.0)
  assert tracks == [7, 4, 8, 9] and next_track == 10
  # Nearest first: two people near one track, the nearer takes it.
  tracks, _ = tracking.assign_tracks({0: np.zeros(3)}, [[300.0, 0, 0], [100.0, 0, 0]], 1)
  assert tracks == [1, 0]
  tracks, _ = tracking.assign_tracks({0: np.zeros(3)}, [[600.0, 0, 0]], 1, max_distance_mm=500.0)
  assert tracks == [1]
  h36m = joints_lib.get_joint_set("h36m17")
  pose = _t_pose(h36m)
  np.testing.assert_array_equal(tracking.person_center(pose, h36m), pose[h36m.root])
  pose[h36m.root] = np.nan
  np.testing.assert_allclose(tracking.person_center(pose, h36m), np.nanmean(pose, axis=0))


@pytest.fixture(scope="module")
def instant_00005514(demo, blazepose_cache):
  rig = _rig(demo, _CAMERAS)
  images = [blazepose.read_image(str(demo / camera / f"{camera}_00005514.jpg"))
            for camera in _CAMERAS]
  model = blazepose.BlazePose()
  h36m = joints_lib.get_joint_set("h36m17")
  estimates = [model.estimate(image, h36m, camera=camera)
               for image, camera in zip(images, rig.cameras)]
  return rig, h36m, estimates


@pytest.mark.large
def test_person_seen_by_two_views_with_swapped_sides_is_reconstructed(instant_00005514):
  # Instant 00005514: three people. The dark-haired woman is fully visible in 00_06, cut at the
  # thighs in 00_12, hidden or cut off in the other views; BlazePose finds her in 00_06 and 00_12
  # but labels her sides the other way round in one of them.
  rig, h36m, estimates = instant_00005514
  joints2d = [np.stack([p["joints2d"] for p in view]) for view in estimates]
  scores = [np.stack([p["scores"] for p in view]) for view in estimates]
  views = [_CAMERAS.index("00_06"), _CAMERAS.index("00_12")]
  (woman,) = [found for found in association.associate(joints2d, scores, rig, mirror=h36m.mirror)
              if sorted(found.members) == views]
  assert sum(woman.mirrored.values()) == 1
  # Compared as labelled, her two detections are not associated.
  plain = association.associate(joints2d, scores, rig)
  assert not any(all(found.members.get(view) == index for view, index in woman.members.items())
                 for found in plain)
  result = people.reconstruct_people(estimates, rig, h36m, instant_settings())
  assert len(result) == 3
  (person,) = [p for p in result if p["views"] == views]
  # Her 3D skeleton: the upper body and hips (her legs are cut in 00_12), every bone within 30 %
  # of the reference skeleton's (data.skeleton.BONE_LENGTHS_MM) but the pelvis-hip bones, which
  # BlazePose places closer together than the mocap markers (0.55 to 1.6 of the reference).
  joints3d = person["joints3d"]
  valid = np.isfinite(joints3d[:, 0])
  assert valid.sum() >= 10 and valid[[h36m.index(n) for n in (
      "pelvis", "thorax", "head", "lshoulder", "rshoulder", "lhip", "rhip")]].all()
  for joint, parent in enumerate(h36m.parents):
    if parent < 0 or not (valid[joint] and valid[parent]):
      continue
    ratio = (np.linalg.norm(joints3d[joint] - joints3d[parent])
             / skeleton.BONE_LENGTHS_MM[joint])
    low, high = (0.55, 1.6) if h36m.names[joint] in ("lhip", "rhip") else (0.7, 1.3)
    assert low <= ratio <= high, (h36m.names[joint], ratio)
  # A standing person: head above pelvis by a torso and a head (world y points down).
  height = joints3d[h36m.root, 1] - joints3d[h36m.index("head"), 1]
  assert 550.0 < height < 900.0, height
