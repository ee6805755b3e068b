"""Identities without extrinsics: synthetic people seen by cameras whose poses are not given."""

import numpy as np

from mf_tf.data import joints as joints_lib
from mf_tf.geometry import rig_comparison
from mf_tf.geometry.camera import Camera
from mf_tf.geometry.rig import Rig
from mf_tf.reconstruct import people_tracks

JOINT_SET = "h36m17"


def _look_at(center, target=(0.0, 0.0, 900.0)):
  forward = np.asarray(target) - center
  forward /= np.linalg.norm(forward)
  right = np.cross(forward, [0.0, 0.0, 1.0])
  right /= np.linalg.norm(right)
  down = np.cross(forward, right)
  R = np.stack([right, down, forward])
  return R, -R @ center


def _rig(num_views=3):
  cameras = []
  for view in range(num_views):
    angle = 2 * np.pi * view / num_views + 0.3
    center = np.array([4000 * np.cos(angle), 4000 * np.sin(angle), 1500.0])
    R, t = _look_at(center)
    cameras.append(Camera(name=f"c{view}", K=[[1000, 0, 640], [0, 1000, 360], [0, 0, 1]], R=R,
                          t=t, dist=[0.05, -0.02, 0, 0, 0], width=1280, height=720))
  return Rig("synthetic", cameras)


def _people(num_frames, rng):
  """[F, 2, J, 3] two people walking apart, each joint wobbling (not a rigid body)."""
  num_joints = joints_lib.get_joint_set(JOINT_SET).num_joints
  body = rng.uniform([-250, -150, 0], [250, 150, 1750], (2, num_joints, 3))
  frames = np.arange(num_frames)[:, None, None, None]
  start = np.array([[-900.0, -300, 0], [800, 400, 0]])[None, :, None]
  walk = np.array([[30.0, 10, 0], [-20, 25, 0]])[None, :, None]
  wobble = 60 * np.sin(0.5 * frames + rng.uniform(0, 6, (1, 2, num_joints, 1)))
  return body[None] + start + walk * frames + wobble


def _detections(rig, joints3d, rng, noise_px=1.0, mirrored=()):
  """[F][V] (joints, scores), people in a random order per view and frame."""
  mirror = joints_lib.get_joint_set(JOINT_SET).mirror_array
  detections = []
  for frame, people in enumerate(joints3d):
    per_view = []
    for view, camera in enumerate(rig.cameras):
      uv = np.stack([camera.project(person)[0] for person in people])
      uv = uv + rng.normal(0, noise_px, uv.shape)
      for person in range(len(uv)):
        if (frame, view, person) in mirrored:
          uv[person] = uv[person][mirror]
      order = rng.permutation(len(uv))
      per_view.append((uv[order], np.full(uv.shape[:2], 0.9)))
    detections.append(per_view)
  return detections


def test_two_people_get_one_identity_in_every_view():
  rng = np.random.default_rng(0)
  rig = _rig()
  joints3d = _people(20, rng)
  # BlazePose's side swap in one view for a few frames: undone in the output.
  swapped = {(frame, 2, 0) for frame in range(5, 9)}
  detections = _detections(rig, joints3d, rng, mirrored=swapped)
  observations = people_tracks.observations_from_detections(detections, rig.cameras, JOINT_SET)
  assert observations.points.shape == (20, 3, 2, 17, 2)
  truth = np.stack([[[camera.project(person)[0] for camera in rig.cameras] for person in people]
                    for people in joints3d])  # [F, P, V, J, 2]
  # Which true person each slot is, from view 0; every other view must agree, every frame.
  for slot in range(2):
    first = np.linalg.norm(observations.points[:, 0, slot, None] - truth[:, 0], axis=-1)
    person = int(np.argmin(np.nanmean(first, axis=(0, 2))))
    for view in range(3):
      error = np.linalg.norm(observations.points[:, view, slot] - truth[:, person, view], axis=-1)
      assert np.nanmax(error) < 6, (slot, view)


def test_one_person_is_trivial_and_triangulates_with_the_true_rig():
  rng = np.random.default_rng(1)
  rig = _rig(4)
  joints3d = _people(12, rng)[:, :1]
  detections = _detections(rig, joints3d, rng)
  observations = people_tracks.observations_from_detections(detections, rig.cameras, JOINT_SET)
  assert observations.scores.shape == (12, 4, 1, 17)
  triangulated = rig_comparison.triangulate_observations(observations, rig)
  assert np.abs(triangulated - joints3d).max() < 20  # 1 px noise at 4 m: ~5 mm.
  same = rig_comparison.compare_reconstructions(observations, rig, rig)
  assert same["mpjpe_mm"] < 1e-6 and same["joints"] == 12 * 17


def test_tracks_follow_people_within_a_view():
  rng = np.random.default_rng(2)
  rig = _rig()
  detections = _detections(rig, _people(10, rng), rng)
  tracks = people_tracks.track_view([frame[0] for frame in detections])
  assert tracks.num_tracks == 2
  assert (tracks.scores > 0).any(-1).all()
  # Each track moves smoothly: no jump from one person to the other.
  pelvis = tracks.points[:, :, 0]
  assert np.linalg.norm(np.diff(pelvis, axis=0), axis=-1).max() < 80
