"""Cross-view association on real Panoptic 3D poses projected into the HD cameras."""

import numpy as np
import pytest

from mf_tf.data import joints as joints_lib
from mf_tf.data import panoptic
from mf_tf.geometry import calibration
from mf_tf.geometry import camera as camera_lib
from mf_tf.geometry import epipolar
from mf_tf.models import association

_CAMERAS = ("00_03", "00_06", "00_12", "00_13", "00_23")


@pytest.fixture(scope="module")
def scene(shared_data):
  seq = shared_data / "panoptic" / "160906_band1"
  rig = calibration.read_panoptic(seq / "calibration_160906_band1.json", "hd", list(_CAMERAS))
  joints3d, _, ids = panoptic.read_body_scene(
      str(seq / panoptic.POSE_DIR / "body3DScene_00000170.json"))
  assert len(ids) == 3
  return rig, joints3d


def panoptic_joint_set():
  return joints_lib.get_joint_set("coco19")  # The joints of Panoptic's body3DScene files.


def _detections(rig, joints3d, rng, noise_px=3.0):
  """Per view: shuffled [N, J, 2] raw pixels, [N, J] scores, and the true person of each row."""
  joints2d, scores, truth = [], [], []
  for camera in rig.cameras:
    uv, _ = camera.project(np.nan_to_num(joints3d.reshape(-1, 3)), distort=True)
    uv = uv.reshape(joints3d.shape[:2] + (2,)) + rng.normal(0, noise_px, joints3d.shape[:2] + (2,))
    score = np.where(np.isnan(joints3d[..., 0]), 0.0, rng.uniform(0.6, 1.0, joints3d.shape[:2]))
    order = rng.permutation(len(joints3d))
    joints2d.append(uv[order])
    scores.append(score[order])
    truth.append(order)
  return joints2d, scores, truth


def test_association_recovers_identities_of_shuffled_people(scene):
  rig, joints3d = scene
  rng = np.random.default_rng(0)
  for _ in range(3):
    joints2d, scores, truth = _detections(rig, joints3d, rng)
    people = association.associate(joints2d, scores, rig)
    assert len(people) == 3
    identities = []
    for person in people:
      assert len(person.members) == rig.num_views
      assert not any(person.mirrored.values()) and person.cost < 10.0
      persons = {int(truth[view][index]) for view, index in person.members.items()}
      assert len(persons) == 1, person  # Every view's detection is the same person.
      identities.append(persons.pop())
    assert sorted(identities) == [0, 1, 2]


def test_person_seen_in_one_view_is_left_out(scene):
  rig, joints3d = scene
  rng = np.random.default_rng(1)
  joints2d, scores, truth = _detections(rig, joints3d, rng)
  # Person 2 is only detected in view 1; views 0 and 3 also miss person 0.
  for view in range(rig.num_views):
    keep = truth[view] != 2 if view != 1 else np.ones(3, bool)
    if view in (0, 3):
      keep &= truth[view] != 0
    joints2d[view], scores[view], truth[view] = (joints2d[view][keep], scores[view][keep],
                                                 truth[view][keep])
  people = association.associate(joints2d, scores, rig)
  seen = sorted({int(truth[view][index]) for person in people
                 for view, index in person.members.items()})
  assert seen == [0, 1]
  by_person = {int(truth[v][i]): person.members for person in people
               for v, i in person.members.items()}
  assert sorted(by_person[0]) == [1, 2, 4] and sorted(by_person[1]) == [0, 1, 2, 3, 4]


def test_costs_separate_people_and_reject_bad_input(scene):
  rig, joints3d = scene
  rng = np.random.default_rng(2)
  joints2d, scores, truth = _detections(rig, joints3d, rng, noise_px=0.0)
  F = epipolar.fundamental_matrix(rig.cameras[0], rig.cameras[1])
  undistort = lambda c, p: camera_lib.undistort_points(c, p.reshape(-1, 2)).reshape(p.shape)  # noqa
  costs = association.pair_costs(F, undistort(rig.cameras[0], joints2d[0]), scores[0],
                                 undistort(rig.cameras[1], joints2d[1]), scores[1])
  same = truth[0][:, None] == truth[1][None]
  assert np.all(costs[same] < 1.0) and np.all(costs[~same] > association.DEFAULT_MAX_COST_PX)
  # No confident joints: not comparable.
  none = association.pair_costs(F, joints2d[0], np.zeros((3, 19)), joints2d[1], scores[1])
  assert np.all(np.isinf(none))
  with pytest.raises(ValueError, match="expected one entry per camera"):
    association.associate(joints2d[:2], scores[:2], rig)


def test_left_right_swapped_detections_are_matched_and_flagged(scene):
  rig, joints3d = scene
  mirror = panoptic_joint_set().mirror_array
  rng = np.random.default_rng(3)
  joints2d, scores, truth = _detections(rig, joints3d, rng)
  # BlazePose's typical slip: one view labels a person's sides the wrong way round. Here view 2
  # swaps person 0 and view 4 person 1 (their left joints take the right joints' places).
  swapped = {2: 0, 4: 1}
  for view, person in swapped.items():
    row = int(np.flatnonzero(truth[view] == person)[0])
    joints2d[view][row] = joints2d[view][row][mirror]
    scores[view][row] = scores[view][row][mirror]
  people = association.associate(joints2d, scores, rig, mirror=mirror)
  assert len(people) == 3
  for person in people:
    identity = {int(truth[view][index]) for view, index in person.members.items()}
    assert len(identity) == 1 and len(person.members) == rig.num_views, person
    identity = identity.pop()
    flagged = sorted(view for view, value in person.mirrored.items() if value)
    assert flagged == sorted(v for v, p in swapped.items() if p == identity), person
    assert person.cost < 10.0
  # Labels taken as given, the swapped detections cost far more than the others.
  plain = association.associate(joints2d, scores, rig)
  assert max(person.cost for person in plain) > 2 * max(person.cost for person in people)
  with pytest.raises(ValueError, match="not a permutation"):
    association.associate(joints2d, scores, rig, mirror=mirror[:-1])


def test_two_views_that_disagree_keep_the_most_confident_labels(scene):
  rig, joints3d = scene
  mirror = panoptic_joint_set().mirror_array
  rng = np.random.default_rng(4)
  joints2d, scores, _ = _detections(rig, joints3d[:1], rng)
  for view in range(2, rig.num_views):  # One person, seen by views 0 and 1 only.
    joints2d[view], scores[view] = joints2d[view][:0], scores[view][:0]
  joints2d[1] = joints2d[1][:, mirror]
  scores[1] = scores[1][:, mirror] * 0.9  # View 0 is the more confident one.
  (person,) = association.associate(joints2d, scores, rig, mirror=mirror)
  assert person.members == {0: 0, 1: 0} and person.mirrored == {0: False, 1: True}
