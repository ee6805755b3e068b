"""Tests of mf_tf.reconstruct.people_matching: people matched across views frame by frame, on a
synthetic rig whose instants are unrelated (each frame's people at new places, listed in a random
order per view, some views with their sides exchanged), against the known identities."""

import numpy as np
import pytest

from mf_tf.data import joints as joints_lib
from mf_tf.reconstruct import people_matching
from tests.geometry.test_geometry_people_calibration import synthetic_rig
from tests.geometry.test_geometry_people_calibration import synthetic_scene

JOINT_SET = "h36m17"


def _shuffled_detections(observations, seed=0):
  """[F][V] detections in a random person order, 1 in 4 with their sides exchanged; also the
  true person of each detection [F][V] list and its exchange flag."""
  rng = np.random.default_rng(seed)
  mirror = joints_lib.get_joint_set(JOINT_SET).mirror_array
  num_frames, num_views, num_people = observations.scores.shape[:3]
  detections, truth = [], []
  for f in range(num_frames):
    per_view, truth_view = [], []
    for v in range(num_views):
      order = rng.permutation(num_people)
      joints, scores, flips = [], [], []
      for person in order:
        points = observations.points[f, v, person]
        score = observations.scores[f, v, person]
        flip = bool(rng.random() < 0.25)
        joints.append(points[mirror] if flip else points)
        scores.append(score[mirror] if flip else score)
        flips.append(flip)
      per_view.append((np.asarray(joints), np.asarray(scores)))
      truth_view.append((order, flips))
    detections.append(per_view)
    truth.append(truth_view)
  return detections, truth


@pytest.fixture(scope="module")
def scene():
  rig = synthetic_rig(num_cameras=4, seed=1)
  observations, world, _ = synthetic_scene(rig, num_frames=6, num_people=2, noise_px=1.0)
  # Unrelated instants: each frame's people moved to a new place and turned.
  rng = np.random.default_rng(3)
  for f in range(world.shape[0]):
    angle = rng.uniform(0, 2 * np.pi)
    turn = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0],
                     [0, 0, 1]])
    world[f] = world[f] @ turn.T
  points = np.full_like(observations.points, np.nan)
  for v, camera in enumerate(rig.cameras):
    uv, _ = camera.project(world)
    points[:, v] = uv + rng.standard_normal(uv.shape)
  observations = type(observations)(points, np.ones(points.shape[:-1]), JOINT_SET)
  return rig, observations


def test_frames_are_matched_to_the_true_people(scene):
  rig, observations = scene
  detections, truth = _shuffled_detections(observations)
  matched = people_matching.match_people(detections, rig.cameras, JOINT_SET,
                                         association="frames")
  num_frames, num_views, num_slots = matched.scores.shape[:3]
  assert num_slots == 2
  mirror = joints_lib.get_joint_set(JOINT_SET).mirror_array
  checked = 0
  for f in range(num_frames):
    for slot in range(num_slots):
      seen = [v for v in range(num_views) if matched.scores[f, v, slot].any()]
      assert len(seen) == num_views  # Every view of every person matched.
      # The slot's joints in every view are one true person's, all in the same orientation.
      people, orientations = set(), set()
      for v in seen:
        for person in range(2):
          for flipped, source in ((False, observations.points[f, v, person]),
                                  (True, observations.points[f, v, person][mirror])):
            if np.allclose(matched.points[f, v, slot], source):
              people.add(person)
              orientations.add(flipped)
      assert len(people) == 1 and len(orientations) == 1, (f, slot, people, orientations)
      checked += 1
  assert checked == num_frames * num_slots


def test_tracks_first_then_frames(scene, monkeypatch):
  rig, observations = scene
  detections, _ = _shuffled_detections(observations, seed=1)
  used = []
  original = people_matching.observations_from_frames
  monkeypatch.setattr(people_matching, "observations_from_frames",
                      lambda *args, **kwargs: used.append(1) or original(*args, **kwargs))
  people_matching.match_people(detections, rig.cameras, JOINT_SET, association="tracks")
  assert not used
  people_matching.match_people(detections, rig.cameras, JOINT_SET, association="frames")
  assert used
  with pytest.raises(ValueError, match="association is 'people', expected one of"):
    people_matching.match_people(detections, rig.cameras, JOINT_SET, association="people")
