"""Tests of the named joint sets and the maps between them."""

import numpy as np
import pytest

from mf_tf.data import joints


@pytest.mark.parametrize("name", sorted(joints.JOINT_SETS))
def test_joint_set_is_a_tree_with_symmetric_mirror(name):
  joint_set = joints.get_joint_set(name)
  assert joint_set.num_joints == {"h36m17": 17, "coco19": 19, "totalcapture16": 16}[name]
  assert len(joint_set.limbs) == joint_set.num_joints - 1
  mirror = joint_set.mirror_array
  np.testing.assert_array_equal(mirror[mirror], np.arange(joint_set.num_joints))
  for joint, partner in enumerate(mirror):  # Left joints mirror to right joints and back.
    left, right = joint_set.names[joint], joint_set.names[partner]
    if joint != partner:
      assert {left[0], right[0]} == {"l", "r"} and left[1:] == right[1:]
  # Mirroring is consistent with the tree: the partner's parent is the parent's partner.
  for joint, parent in enumerate(joint_set.parents):
    if parent >= 0:
      assert joint_set.parents[mirror[joint]] == mirror[parent]


def test_h36m17_order_matches_crossview():
  h36m = joints.H36M17
  assert h36m.names[:4] == ("pelvis", "rhip", "rknee", "rankle")
  assert h36m.index("head") == 10 and h36m.index("lshoulder") == 11 and h36m.index("rwrist") == 16
  assert h36m.mirror[1] == 4 and h36m.mirror[11] == 14 and h36m.mirror[9] == 9
  assert (0, 7) in h36m.limbs and (8, 11) in h36m.limbs


def test_coco19_order_matches_panoptic():
  coco = joints.COCO19
  assert coco.names[:3] == ("neck", "nose", "bodycenter")
  assert coco.root == 2 and coco.index("rankle") == 14 and coco.index("rear") == 18


def test_index_map_round_trip_and_errors():
  source, target = joints.index_map("coco19", "h36m17")
  assert len(source) == len(target) == 13  # 12 sided limb joints + pelvis.
  names_c = [joints.COCO19.names[i] for i in source]
  names_h = [joints.H36M17.names[i] for i in target]
  assert names_c[0] == "bodycenter" and names_h[0] == "pelvis"
  assert names_c[1:] == names_h[1:]
  back_source, back_target = joints.index_map("h36m17", "coco19")
  assert sorted(zip(back_source, back_target)) == sorted(zip(target, source))
  with pytest.raises(ValueError, match="unknown joint set"):
    joints.get_joint_set("mpii16")
  with pytest.raises(ValueError, match="not in joint set"):
    joints.H36M17.index("tail")


def test_convert_joints_derives_h36m_from_coco():
  rng = np.random.default_rng(0)
  coco = rng.normal(size=(5, 19, 3))
  h36m = joints.convert_joints(coco, "coco19", "h36m17")
  assert h36m.shape == (5, 17, 3) and np.all(np.isfinite(h36m))
  np.testing.assert_allclose(h36m[:, 0], coco[:, 2])
  np.testing.assert_allclose(h36m[:, 7], 0.5 * (coco[:, 2] + coco[:, 0]))
  np.testing.assert_allclose(h36m[:, 10], 0.5 * (coco[:, 16] + coco[:, 18]))
  back = joints.convert_joints(h36m, "h36m17", "coco19")
  assert np.all(np.isnan(back[:, 15:]))  # Eyes and ears have no h36m counterpart.
  np.testing.assert_allclose(back[:, :15][:, [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]],
                             coco[:, [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]])
  with pytest.raises(ValueError, match="expected"):
    joints.convert_joints(coco[:, :10], "coco19", "h36m17")


def test_invalid_joint_set_is_rejected():
  with pytest.raises(ValueError, match="tree"):
    joints.JointSet("bad", ("a", "b", "c"), (-1, 2, 1), (0, 1, 2))
  with pytest.raises(ValueError, match="mirror"):
    joints.JointSet("bad", ("a", "b", "c"), (-1, 0, 0), (1, 2, 0))
