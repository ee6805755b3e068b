"""Tests of the capsule body and occlusion."""

import numpy as np
import pytest

from mf_tf.data import body, joints
from mf_tf.geometry.camera import Camera
from mf_tf.geometry.rigs import look_at

H36M = joints.H36M17

# A neutral standing pose, body right = +x, forward = +y, up = +z (mm).
_NEUTRAL = {
    "pelvis": (0, 0, 1000), "spine": (0, 0, 1236), "thorax": (0, 0, 1490),
    "nose": (0, 80, 1580), "head": (0, 80, 1700),
    "rhip": (116, 0, 990), "rknee": (116, 0, 560), "rankle": (116, 0, 140),
    "lhip": (-116, 0, 990), "lknee": (-116, 0, 560), "lankle": (-116, 0, 140),
    "rshoulder": (155, 0, 1450), "relbow": (185, 0, 1170), "rwrist": (195, 0, 930),
    "lshoulder": (-155, 0, 1450), "lelbow": (-185, 0, 1170), "lwrist": (-195, 0, 930),
}
NEUTRAL = np.asarray([_NEUTRAL[name] for name in H36M.names], np.float64)[None]


def _camera(center, target=(0.0, 0.0, 1000.0), size=(640, 480), focal=500.0):
  R, t = look_at(np.asarray(center, float), np.asarray(target, float), np.array([0.0, 0, 1]))
  K = [[focal, 0, size[0] / 2], [0, focal, size[1] / 2], [0, 0, 1]]
  return Camera("cam", K, R, t, np.zeros(5), *size)


def test_segment_distance_matches_brute_force():
  rng = np.random.default_rng(0)
  p1, q1, p2, q2 = rng.normal(size=(4, 50, 3))
  got = body.segment_distance(p1, q1, p2, q2)
  s = np.linspace(0, 1, 401)
  a = p1[:, None] + s[None, :, None] * (q1 - p1)[:, None]
  b = p2[:, None] + s[None, :, None] * (q2 - p2)[:, None]
  brute = np.min(np.linalg.norm(a[:, :, None] - b[:, None, :], axis=-1), axis=(1, 2))
  assert np.all(got <= brute + 1e-9)
  np.testing.assert_allclose(got, brute, atol=2e-2)
  np.testing.assert_allclose(body.point_segment_distance(p1, p2, q2),
                             body.segment_distance(p1, p1, p2, q2), atol=1e-12)


def test_front_view_sees_everything_side_view_hides_the_far_side():
  front = body.visibility(_camera((0, 5000, 1000)), NEUTRAL)[0]
  assert front.all()
  right = body.visibility(_camera((5000, 0, 1000)), NEUTRAL)[0]
  left = body.visibility(_camera((-5000, 0, 1000)), NEUTRAL)[0]
  for name in ("lhip", "lshoulder", "lelbow", "lwrist"):  # Behind the body from its right.
    assert not right[H36M.index(name)], name
    assert not left[H36M.index("r" + name[1:])], name
  # The near side is seen (not the hip, which the hanging arm covers in a pure side view).
  for name in ("rknee", "rankle", "rshoulder", "relbow", "rwrist", "head"):
    assert right[H36M.index(name)], name
    assert left[H36M.index("l" + name[1:]) if name != "head" else H36M.index("head")], name


def test_outside_image_and_behind_camera_are_not_visible():
  narrow = _camera((0, 5000, 1000), focal=3000.0)  # Sees only the middle of the body.
  visible = body.visibility(narrow, NEUTRAL)[0]
  assert not visible[H36M.index("rankle")] and not visible[H36M.index("head")]
  assert visible[H36M.index("pelvis")]
  behind = _camera((0, 5000, 1000), target=(0, 10000, 1000))
  assert not body.visibility(behind, NEUTRAL).any()


def test_visibility_rejects_wrong_shape_and_attached_mask():
  with pytest.raises(ValueError, match="expected"):
    body.visibility(_camera((0, 5000, 1000)), NEUTRAL[:, :10])
  attached = body.H36M_BODY.attached()
  assert attached.shape == (17, body.H36M_BODY.num_capsules)
  assert attached[H36M.index("lwrist"), body.H36M_BODY.names.index("lforearm")]
  assert not attached[H36M.index("lwrist"), body.H36M_BODY.names.index("chest")]
  assert not body.penetration(NEUTRAL).any()
