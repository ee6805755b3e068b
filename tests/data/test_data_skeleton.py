"""Tests of the calibrated kinematic skeleton."""

import numpy as np
import pytest

from mf_tf.data import body, joints, skeleton

H36M = joints.H36M17


def _bone_lengths(poses):
  limbs = np.asarray(H36M.limbs)
  return np.linalg.norm(poses[:, limbs[:, 1]] - poses[:, limbs[:, 0]], axis=-1), limbs[:, 1]


def test_calibrated_constants_match_real_data(shared_data):
  recomputed = skeleton.calibrate_bone_lengths(shared_data)
  np.testing.assert_allclose(skeleton.BONE_LENGTHS_MM, recomputed, atol=0.1)
  # Known anatomy: thigh and shank around 0.42 m, forearm shorter than upper arm.
  assert 380 < recomputed[H36M.index("lknee")] < 480
  assert recomputed[H36M.index("lwrist")] < recomputed[H36M.index("lelbow")]


def test_sample_poses_is_deterministic_and_seed_dependent():
  args = ([0.0, 0.0, 900.0], [1000.0, 1000.0, 900.0])
  first = skeleton.sample_poses(np.random.default_rng(3), 20, *args)
  again = skeleton.sample_poses(np.random.default_rng(3), 20, *args)
  other = skeleton.sample_poses(np.random.default_rng(4), 20, *args)
  np.testing.assert_array_equal(first, again)
  assert np.abs(first - other).max() > 100.0


def test_bone_lengths_follow_calibration_and_are_symmetric():
  poses = skeleton.sample_poses(np.random.default_rng(0), 400, [0, 0, 900], [1000, 1000, 900])
  lengths, children = _bone_lengths(poses)
  ratio = lengths / skeleton.BONE_LENGTHS_MM[children]
  low, high = skeleton.PERSON_SCALE_RANGE
  assert ratio.min() > low * (1 - 5 * skeleton.BONE_JITTER_STD)
  assert ratio.max() < high * (1 + 5 * skeleton.BONE_JITTER_STD)
  np.testing.assert_allclose(ratio.mean(axis=0), 1.0, atol=0.03)
  mirror = H36M.mirror_array
  by_child = dict(zip(children, lengths.T))
  for child in children:  # Left and right bones of one person have equal lengths.
    np.testing.assert_allclose(by_child[child], by_child[mirror[child]], rtol=1e-9)


def test_joint_angle_limits_hold():
  poses = skeleton.sample_body_poses(np.random.default_rng(1), 500)

  def bend(a, b, c):  # Angle between the bone a->b and the bone b->c, degrees.
    u = poses[:, b] - poses[:, a]
    v = poses[:, c] - poses[:, b]
    cos = np.sum(u * v, -1) / np.linalg.norm(u, axis=-1) / np.linalg.norm(v, axis=-1)
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))

  for side in "lr":
    knee = bend(H36M.index(side + "hip"), H36M.index(side + "knee"), H36M.index(side + "ankle"))
    elbow = bend(H36M.index(side + "shoulder"), H36M.index(side + "elbow"),
                 H36M.index(side + "wrist"))
    assert knee.max() <= skeleton.ANGLE_LIMITS_DEG["free_knee_flexion"][1] + 1e-6
    assert elbow.max() <= skeleton.ANGLE_LIMITS_DEG["elbow_flexion"][1] + 1e-6
    assert knee.max() > 90 and elbow.max() > 120  # The ranges are actually explored.
  assert not np.any(body.penetration(poses))  # No hand inside the chest, etc.


@pytest.mark.parametrize("up", [(0.0, 0.0, 1.0), (0.0, -1.0, 0.0)])
def test_poses_stand_on_the_floor_inside_the_volume(up):
  up = np.asarray(up)
  center = np.array([100.0, -900.0, 200.0]) if up[1] else np.array([100.0, 200.0, 900.0])
  half = np.array([800.0, 800.0, 800.0])
  poses = skeleton.sample_poses(np.random.default_rng(2), 300, center, half, up, floor_mm=0.0)
  height = poses @ up
  ankles = height[:, [H36M.index("lankle"), H36M.index("rankle")]]
  np.testing.assert_allclose(ankles.min(axis=1), skeleton.ANKLE_HEIGHT_MM, atol=1e-6)
  assert np.all(height[:, H36M.index("head")] > height[:, H36M.index("pelvis")] + 100)
  pelvis = poses[:, 0]
  horizontal = (pelvis - center) - ((pelvis - center) @ up)[:, None] * up
  assert np.all(np.abs(horizontal) <= half + 1e-6)
  # Right x forward = up: the face (h36m nose marker) is in front of the neck.
  right = poses[:, H36M.index("rhip")] - poses[:, H36M.index("lhip")]
  forward = np.cross(up, right)
  face = poses[:, H36M.index("nose")] - poses[:, H36M.index("thorax")]
  assert np.mean(np.sum(face * forward, axis=-1) > 0) > 0.95
  # Yaw is uniform: facing directions cover every quadrant.
  first = np.cross(np.eye(3)[np.argmin(np.abs(up))], up)
  angle = np.arctan2(forward @ np.cross(up, first), forward @ first)
  assert len(np.unique(np.floor(angle / (np.pi / 2)))) == 4


def test_sample_poses_rejects_bad_arguments():
  with pytest.raises(ValueError, match="up"):
    skeleton.sample_poses(np.random.default_rng(0), 1, [0, 0, 0], [1, 1, 1], up=(0, 0, 0))
