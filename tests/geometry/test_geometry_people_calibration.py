"""Tests of mf_tf.geometry.people_calibration: a synthetic rig with exactly known poses, filmed
people moved over a 4 m area (real Panoptic poses), and each failure's message."""

import os

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from mf_tf.data import joints as joints_lib
from mf_tf.data import skeleton
from mf_tf.geometry import people_calibration as pc
from mf_tf.geometry import people_sfm
from mf_tf.geometry import rig_comparison
from mf_tf.geometry import rigs as rigs_lib
from mf_tf.geometry.camera import Camera
from mf_tf.geometry.rig import Rig

H36M_SAMPLE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "real_data", "h36m",
                           "body3d_sample.npz")
STANDING = (0, 2, 3)  # body3d_sample frames of a standing person (frame 1 is sitting down).
DIST = np.array([-0.12, 0.03, 5e-4, -3e-4, 0.0])


def _real_poses() -> np.ndarray:
  """[3, 17, 3] real standing Human3.6M poses (S1, S7, S8), z-up mm, pelvis above the origin.

  Each pose (camera frame, metres) is turned so that its ankles-to-head vector points up, and
  lifted so that its lower ankle is skeleton.ANKLE_HEIGHT_MM above the floor z = 0.
  """
  with np.load(H36M_SAMPLE) as data:
    poses = data["S"][STANDING, :, :3] * 1000.0
  out = []
  for pose in poses:
    up = pose[10] - pose[[3, 6]].mean(axis=0)
    up /= np.linalg.norm(up)
    x_axis = np.cross(up, [0.0, 0.0, 1.0])
    x_axis /= np.linalg.norm(x_axis)
    rotation = np.stack([x_axis, np.cross(up, x_axis), up])  # Rows: new axes in old frame.
    pose = (pose - pose[0]) @ rotation.T
    pose[:, 2] += skeleton.ANKLE_HEIGHT_MM - pose[[3, 6], 2].min()
    out.append(pose)
  return np.stack(out)


def synthetic_rig(num_cameras=5, seed=0) -> Rig:
  """Cameras 3.5-4.5 m around a 4 m area, 1.2-2.6 m high, with lens distortion."""
  rng = np.random.default_rng(seed)
  azimuth = 2 * np.pi * np.arange(num_cameras) / num_cameras + 0.3 * rng.standard_normal(
      num_cameras)
  radius = rng.uniform(3500.0, 4500.0, num_cameras)
  centers = np.stack([radius * np.cos(azimuth), radius * np.sin(azimuth),
                      rng.uniform(1200.0, 2600.0, num_cameras)], axis=-1)
  cameras = []
  for index, center in enumerate(centers):
    target = np.array([0.0, 0.0, 900.0]) + 300.0 * rng.standard_normal(3)
    R, t = rigs_lib.look_at(center, target, [0.0, 0.0, 1.0])
    f = rng.uniform(750.0, 900.0)
    K = np.array([[f, 0.0, 640.0 + 5 * index], [0.0, f, 480.0 - 3 * index], [0.0, 0.0, 1.0]])
    cameras.append(Camera(f"cam{index}", K, R, t, DIST * (1 + 0.1 * index), 1280, 960))
  return Rig("synthetic", tuple(cameras), up=[0.0, 0.0, 1.0], floor=0.0)


def synthetic_scene(rig: Rig, num_frames=50, num_people=2, noise_px=1.0, seed=0,
                    still=False):
  """Real poses walking on circles over the 4 m area, projected with distortion and noise.

  Returns:
    (Observations, true points [F, P, 17, 3] mm, true stature in mm (STATURE_RATIO times the
    median ankles-to-head distance, so the test checks the pipeline, not the anthropometry)).
  """
  rng = np.random.default_rng(seed)
  poses = _real_poses()
  world = np.zeros((num_frames, num_people, 17, 3))
  for p in range(num_people):
    for f in range(num_frames):
      angle = 0.0 if still else 2 * np.pi * f / num_frames + np.pi * p
      radius = 1500.0 - 700.0 * p
      yaw = angle + np.pi / 2
      rotation = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0],
                           [0, 0, 1]])
      pose = poses[0 if still else (f + p) % poses.shape[0]]
      world[f, p] = pose @ rotation.T + [radius * np.cos(angle), radius * np.sin(angle), 0.0]
  points = np.full((num_frames, rig.num_views, num_people, 17, 2), np.nan)
  for v, camera in enumerate(rig.cameras):
    uv, depth = camera.project(world)
    uv = uv + noise_px * rng.standard_normal(uv.shape)
    inside = ((depth > 0) & (uv[..., 0] >= 0) & (uv[..., 0] < camera.width)
              & (uv[..., 1] >= 0) & (uv[..., 1] < camera.height))
    points[:, v] = np.where(inside[..., None], uv, np.nan)
  scores = np.where(np.isfinite(points[..., 0]), 1.0, 0.0)
  length = np.linalg.norm(world[:, :, 10] - world[:, :, [3, 6]].mean(axis=2), axis=-1)
  return (pc.Observations(points, scores, "h36m17"), world,
          pc.STATURE_RATIO * float(np.nanmedian(length)))


@pytest.fixture(scope="module")
def rig():
  return synthetic_rig()


def _calibrate(rig, **scene_args):
  observations, world, stature = synthetic_scene(rig, **scene_args)
  return pc.estimate_extrinsics(observations, rig.cameras, person_height_mm=stature), world


def test_synthetic_rig_one_pixel_noise(rig):
  result, world = _calibrate(rig, noise_px=1.0)
  aligned = rig_comparison.compare_rigs(result.rig, rig)
  assert aligned["max_rotation_deg"] < 0.2, aligned["rotation_deg"]
  assert aligned["max_center_percent"] < 1.0, aligned["center_percent"]
  assert abs(aligned["scale"] - 1.0) < 0.03  # Scale from the stated height.
  unscaled = rig_comparison.compare_rigs(result.rig, rig, with_scale=False)
  assert unscaled["max_center_percent"] < 3.0, unscaled["center_percent"]
  # The world frame: z up through the floor (the aligning rotation only turns about z).
  _, R, _ = rig_comparison.similarity_transform(
      np.stack([c.center for c in result.rig.cameras]), np.stack([c.center for c in rig.cameras]))
  assert np.degrees(np.arccos(np.clip(R[2, 2], -1, 1))) < 0.5
  lower_ankle = np.nanmin(result.points3d[:, :, [3, 6], 2], axis=-1)
  assert abs(np.median(lower_ankle) - skeleton.ANKLE_HEIGHT_MM) < 15.0
  assert result.rig.up.tolist() == [0.0, 0.0, 1.0] and result.rig.floor == 0.0
  for name in rig.camera_names:
    assert 0.7 < result.reprojection_error_px[name] < 1.5  # Rayleigh median of 1 px: 1.18.
    assert result.inlier_fraction[name] > 0.98
  assert result.num_points == world.shape[0] * world.shape[1] * 17
  assert result.points3d.shape == world.shape


def test_a_wrong_start_is_not_kept(rig, monkeypatch):
  """The first start's relative pose is replaced by its twisted pair (H&Z 9.6.3: R turned by 180
  degrees about the baseline), the wrong decomposition a start on mismatched identities can
  produce; the other starts must win."""
  observations, _, stature = synthetic_scene(rig, num_frames=20, noise_px=1.0)
  first_pair = people_sfm._first_pair
  calls = []

  def twisted_first(data, first, second, log):
    rotations, translations, *rest = first_pair(data, first, second, log)
    calls.append((first, second))
    if len(calls) == 1:
      baseline = translations[second] / np.linalg.norm(translations[second])
      twist = 2.0 * np.outer(baseline, baseline) - np.eye(3)  # 180 degrees about the baseline.
      rotations = rotations.copy()
      rotations[second] = twist @ rotations[second]
    return (rotations, translations, *rest)

  monkeypatch.setattr(people_sfm, "_first_pair", twisted_first)
  result = pc.estimate_extrinsics(observations, rig.cameras, person_height_mm=stature)
  assert len(calls) == 3 and len(set(calls)) == 3  # Three different pairs started from.
  assert rig_comparison.compare_rigs(result.rig, rig)["max_rotation_deg"] < 0.2
  calls.clear()
  try:  # From the twisted start alone: an error or a wrong rig.
    alone = pc.estimate_extrinsics(observations, rig.cameras, person_height_mm=stature,
                                   starts=1)
    assert rig_comparison.compare_rigs(alone.rig, rig)["max_rotation_deg"] > 5.0
  except ValueError:
    pass


def test_synthetic_rig_without_noise_is_exact(rig):
  result, world = _calibrate(rig, noise_px=0.0, num_frames=20, num_people=1)
  aligned = rig_comparison.compare_rigs(result.rig, rig, with_scale=False)
  assert aligned["max_rotation_deg"] < 1e-5
  assert aligned["max_center_mm"] < 1e-3
  # Same world frame up to a turn about z and a horizontal shift.
  heights = result.points3d[..., 2] - world[..., 2]
  assert np.nanmax(np.abs(heights - np.nanmean(heights))) < 1e-3


def test_refine_focal_and_camera_distance(rig):
  cameras = list(rig.cameras)
  K = cameras[2].K.copy()
  K[:2, :2] *= 1.03  # A focal length 3% off.
  cameras[2] = Camera(cameras[2].name, K, cameras[2].R, cameras[2].t, cameras[2].dist,
                      cameras[2].width, cameras[2].height)
  observations, _, _ = synthetic_scene(rig, noise_px=0.5)
  distance = float(np.linalg.norm(rig.cameras[0].center - rig.cameras[3].center))
  result = pc.estimate_extrinsics(observations, cameras, refine_focal=True,
                                  camera_distance=("cam0", "cam3", distance))
  aligned = rig_comparison.compare_rigs(result.rig, rig, with_scale=False)
  assert aligned["max_rotation_deg"] < 0.1
  assert aligned["max_center_percent"] < 0.2
  assert result.rig.cameras[2].K[0, 0] == pytest.approx(rig.cameras[2].K[0, 0], rel=2e-3)


def test_similarity_transform_recovers_a_known_similarity():
  rng = np.random.default_rng(1)
  source = rng.normal(size=(10, 3)) * 1000.0
  R = Rotation.from_rotvec([0.3, -1.2, 0.7]).as_matrix()
  t = np.array([100.0, -2000.0, 350.0])
  scale, R_est, t_est = rig_comparison.similarity_transform(source, 2.5 * source @ R.T + t)
  assert scale == pytest.approx(2.5, rel=1e-12)
  np.testing.assert_allclose(R_est, R, atol=1e-12)
  np.testing.assert_allclose(t_est, t, atol=1e-8)
  rigid_scale, R_rigid, _ = rig_comparison.similarity_transform(source, source @ R.T + t, with_scale=False)
  assert rigid_scale == 1.0
  np.testing.assert_allclose(R_rigid, R, atol=1e-12)
  # A mirror image is fitted by a rotation, never a reflection (Umeyama's sign correction).
  _, R_mirror, _ = rig_comparison.similarity_transform(source, source * [1.0, 1.0, -1.0])
  assert np.linalg.det(R_mirror) == pytest.approx(1.0)


def test_compare_rigs_of_a_similar_copy_is_zero(rig):
  R = Rotation.from_rotvec([0.2, 0.1, -2.0]).as_matrix()
  t, scale = np.array([500.0, 40.0, -300.0]), 0.001  # Millimetres -> metres, say.
  moved = [Camera(c.name, c.K, c.R @ R.T, scale * c.t, c.dist, c.width, c.height)
           for c in rig.cameras]  # Centres scale * R C: x_cam = R_c R^T (X' / scale) ...
  moved = [Camera(c.name, c.K, c.R, c.t - c.R @ t, c.dist, c.width, c.height) for c in moved]
  copy = Rig("copy", tuple(reversed(moved)))
  result = rig_comparison.compare_rigs(copy, rig)
  assert result["max_rotation_deg"] < 1e-6
  assert result["max_center_mm"] < 1e-6
  assert result["scale"] == pytest.approx(1.0 / scale)
  assert result["rig_size_mm"] == pytest.approx(np.max([np.linalg.norm(a.center - b.center)
                                                        for a in rig.cameras
                                                        for b in rig.cameras]))


def test_stature_ratio_and_joint_indices_match_the_data_package():
  bones = dict(zip(joints_lib.H36M17.names, skeleton.BONE_LENGTHS_MM))
  vertical = (bones["rknee"] + bones["rankle"] + bones["rhip"] * np.sin(np.radians(5.0))
              + bones["spine"] + bones["thorax"] + bones["nose"] * np.cos(np.radians(40.0))
              + bones["head"])
  distance = np.hypot(vertical, bones["nose"] * np.sin(np.radians(40.0)))
  assert pc.STATURE_RATIO == pytest.approx((distance + skeleton.ANKLE_HEIGHT_MM) / distance,
                                           abs=1e-4)
  assert pc.ANKLE_HEIGHT_MM == skeleton.ANKLE_HEIGHT_MM
  for name, table in pc.JOINT_INDEX.items():
    for joint, index in table.items():
      assert joints_lib.get_joint_set(name).index(joint) == index


def test_camera_with_no_person_is_named(rig):
  observations, _, stature = synthetic_scene(rig, num_frames=10)
  scores = observations.scores.copy()
  scores[:, 3] = 0.0
  with pytest.raises(ValueError, match=r"no person is seen in camera\(s\) \['cam3'\]"):
    pc.estimate_extrinsics(pc.Observations(observations.points, scores), rig.cameras,
                           person_height_mm=stature)


def test_split_pair_graph_names_the_cameras(rig):
  observations, _, stature = synthetic_scene(rig, num_frames=20)
  scores = observations.scores.copy()
  scores[:, :2, 1] = 0.0  # cam0, cam1 see only person 0;
  scores[:, 2:, 0] = 0.0  # cam2, cam3, cam4 only person 1.
  with pytest.raises(ValueError, match=r"not connected: camera\(s\) \['cam2', 'cam3', 'cam4'\] "
                     r"share fewer than min_shared=30"):
    pc.estimate_extrinsics(pc.Observations(observations.points, scores), rig.cameras,
                           person_height_mm=stature)


def test_no_scale_is_an_error(rig):
  observations, _, _ = synthetic_scene(rig, num_frames=10)
  with pytest.raises(ValueError, match="a metric scale is needed"):
    pc.estimate_extrinsics(observations, rig.cameras)


def test_everything_at_one_point_is_degenerate(rig):
  observations, _, stature = synthetic_scene(rig, num_frames=10, num_people=1)
  points = np.broadcast_to(observations.points[:1, :, :1, :1], observations.points.shape)
  with pytest.raises(ValueError, match="degenerate configuration"):
    pc.estimate_extrinsics(pc.Observations(points.copy(), observations.scores), rig.cameras,
                           person_height_mm=stature)


def test_one_person_standing_still_is_degenerate(rig):
  observations, _, stature = synthetic_scene(rig, num_frames=20, num_people=1, still=True)
  with pytest.raises(ValueError, match="degenerate configuration.*one person standing still"):
    pc.estimate_extrinsics(observations, rig.cameras, person_height_mm=stature)


def test_large_reprojection_error_is_warned(rig, caplog):
  observations, _, stature = synthetic_scene(rig, num_frames=20, noise_px=9.0)
  with caplog.at_level("WARNING"):
    pc.estimate_extrinsics(observations, rig.cameras, person_height_mm=stature)
  assert "above 8.0 px" in caplog.text
