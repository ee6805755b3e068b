"""DLT triangulation: accuracy on real cameras, batching, weighting, gradients."""

import json

import numpy as np
import pytest
import tensorflow as tf

from mf_tf.geometry import calibration
from mf_tf.geometry.rigs import ring_rig
from mf_tf.geometry.triangulation import num_confident_views, triangulate_dlt, triangulate_dlt_np


@pytest.fixture(scope="module")
def panoptic(shared_data):
  folder = shared_data / "panoptic/160906_band1"
  rig = calibration.read_panoptic(folder / "calibration_160906_band1.json", "hd",
                                  ["00_03", "00_06", "00_12", "00_13", "00_23"])
  bodies = []
  for path in sorted((folder / "hdPose3d_stage1_coco19").glob("*.json")):
    for body in json.loads(path.read_text())["bodies"]:
      values = np.asarray(body["joints19"]).reshape(-1, 4)
      bodies.append(np.where(values[:, 3:] > 0.1, values[:, :3] * 10.0, [0.0, -1000.0, 0.0]))
  return rig, np.stack(bodies)  # [B, 19, 3] mm


def _project(rig, points):
  """[B, J, 3] -> undistorted pixels [B, V, J, 2]."""
  return np.stack([camera.project(points, distort=False)[0] for camera in rig.cameras], axis=1)


@pytest.mark.parametrize("views", [[0, 1], [0, 2, 4], [0, 1, 2, 3, 4]])
def test_noise_free_real_joints_triangulate_within_a_millimetre(panoptic, views):
  rig, joints = panoptic
  rig = rig.subset(views)
  points2d = _project(rig, joints)
  for dtype in (np.float64, np.float32):
    estimate = triangulate_dlt(rig.projection_matrices(), points2d.astype(dtype))
    assert estimate.dtype == dtype and estimate.shape == joints.shape
    assert np.abs(estimate.numpy() - joints).max() < 1.0
  np.testing.assert_allclose(triangulate_dlt_np(rig.projection_matrices(), points2d), joints,
                             atol=1e-6)


def test_batched_equals_single_and_per_batch_projections(panoptic):
  rig, joints = panoptic
  points2d = _project(rig, joints) + np.random.default_rng(0).normal(0, 2.0, (1,) + (5, 19, 2))
  confidences = np.random.default_rng(1).uniform(0.2, 1.0, points2d.shape[:-1])
  P = rig.projection_matrices()
  batched = triangulate_dlt(P, points2d, confidences).numpy()
  per_batch_P = triangulate_dlt(np.broadcast_to(P, (len(joints),) + P.shape), points2d,
                                confidences).numpy()
  np.testing.assert_allclose(per_batch_P, batched, atol=1e-9)
  for b in range(len(joints)):
    single = triangulate_dlt(P, points2d[b:b + 1], confidences[b:b + 1]).numpy()
    np.testing.assert_allclose(single[0], batched[b], atol=1e-9)
  np.testing.assert_allclose(triangulate_dlt_np(P, points2d, confidences), batched, atol=1e-6)
  # Noise of 2 px gives errors of millimetres to centimetres, not metres.
  assert np.median(np.linalg.norm(batched - joints, axis=-1)) < 30.0


def test_zero_confidence_view_is_ignored(panoptic):
  rig, joints = panoptic
  points2d = _project(rig, joints) + np.random.default_rng(2).normal(0, 1.0, (1, 5, 19, 2))
  confidences = np.ones(points2d.shape[:-1])
  P = rig.projection_matrices()
  reference = triangulate_dlt(P[:4], points2d[:, :4], confidences[:, :4]).numpy()
  corrupted = points2d.copy()
  corrupted[:, 4] = [[700.0, 100.0]]  # A wrong detection in view 4 ...
  confidences[:, 4] = 0.0  # ... with zero confidence.
  np.testing.assert_allclose(triangulate_dlt(P, corrupted, confidences).numpy(), reference,
                             atol=1e-6)
  # With full confidence the wrong view does move the result.
  moved = triangulate_dlt(P, corrupted, np.ones_like(confidences)).numpy()
  assert np.abs(moved - reference).max() > 10.0


def test_gradients_are_finite_and_match_finite_differences():
  rig = ring_rig(3, seed=0)
  point = np.array([[[100.0, -50.0, 900.0], [0.0, 200.0, 1300.0]]])  # [1, 2, 3]
  points2d = _project(rig, point) + [[[[0.5, -0.3]], [[-0.2, 0.4]], [[0.1, 0.1]]]]
  confidences = np.array([[[1.0, 0.8], [0.6, 1.0], [0.9, 0.5]]])
  P = rig.projection_matrices()
  x = tf.Variable(points2d)
  w = tf.Variable(confidences)
  with tf.GradientTape() as tape:
    result = triangulate_dlt(P, x, w)
    loss = tf.reduce_sum(result * [1.0, -2.0, 0.5])
  grad_x, grad_w = tape.gradient(loss, [x, w])
  assert grad_x.shape == points2d.shape and grad_w.shape == confidences.shape
  assert np.all(np.isfinite(grad_x)) and np.all(np.isfinite(grad_w))

  def f(p2d, conf):
    return float(np.sum(triangulate_dlt_np(P, p2d, conf) * [1.0, -2.0, 0.5]))

  for index in [(0, 0, 0, 0), (0, 1, 1, 1), (0, 2, 0, 1)]:
    step = np.zeros_like(points2d)
    step[index] = 1e-4
    numeric = (f(points2d + step, confidences) - f(points2d - step, confidences)) / 2e-4
    np.testing.assert_allclose(grad_x.numpy()[index], numeric, rtol=1e-4, atol=1e-6)
  step = np.zeros_like(confidences)
  step[0, 1, 0] = 1e-5
  numeric = (f(points2d, confidences + step) - f(points2d, confidences - step)) / 2e-5
  np.testing.assert_allclose(grad_w.numpy()[0, 1, 0], numeric, rtol=1e-4, atol=1e-6)


def test_ill_posed_joints_stay_finite():
  rig = ring_rig(3, seed=0)
  truth = np.array([[[100.0, -50.0, 900.0], [0.0, 200.0, 1300.0], [50.0, 50.0, 1000.0]]])
  points2d = tf.Variable(_project(rig, truth))
  # Joint 0: no confident view; joint 1: one view; joint 2: well posed.
  confidences = tf.Variable([[[0.0, 1.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]])
  with tf.GradientTape() as tape:
    result = triangulate_dlt(rig.projection_matrices(), points2d, confidences)
    loss = tf.reduce_sum(result)
  gradients = tape.gradient(loss, [points2d, confidences])
  assert np.all(np.isfinite(result.numpy()))
  np.testing.assert_allclose(result.numpy()[0, 0], 0.0, atol=1e-6)
  np.testing.assert_allclose(result.numpy()[0, 2], truth[0, 2], atol=1e-3)
  for gradient in gradients:
    assert np.all(np.isfinite(gradient.numpy()))
  np.testing.assert_array_equal(num_confident_views(confidences), [[0, 1, 3]])


def test_rejects_wrong_ranks():
  with pytest.raises(ValueError, match="points2d"):
    triangulate_dlt(np.zeros((2, 3, 4)), np.zeros((2, 5, 2)))


def test_compiles_with_xla():
  rig = ring_rig(4, seed=3)
  P = tf.constant(rig.projection_matrices(), tf.float32)
  truth = np.array([[[0.0, 0.0, 900.0], [300.0, -200.0, 1500.0]]])
  points2d = tf.constant(_project(rig, truth), tf.float32)
  compiled = tf.function(lambda p, x: triangulate_dlt(p, x), jit_compile=True)
  np.testing.assert_allclose(compiled(P, points2d).numpy(), truth, atol=1.0)
