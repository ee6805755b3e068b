"""Pictorial structure model and triangulation on known answers and on a real rig."""

import itertools

import numpy as np
import pytest

from mf_tf.data import joints as joints_lib
from mf_tf.data import world
from mf_tf.data.codec import HeatmapCodec
from mf_tf.evaluation import metrics
from mf_tf.evaluation import pictorial
from mf_tf.evaluation import triangulate
from mf_tf.geometry import rigs

HEATMAP_SIZE = 64
# 200 mm coarse cells (8 cells of 250 mm can swap a wrist and an elbow); final spacing 6.25 mm.
OPTIONS = pictorial.PictorialOptions(coarse_bins=10, refine_iterations=5)


def test_max_product_tree_matches_brute_force():
  rng = np.random.default_rng(0)
  parents = [-1, 0, 0, 1, 1]  # root with two children, one of which has two children
  num_joints, num_cells = len(parents), 4
  unary = rng.normal(size=(2, num_joints, num_cells))
  points = rng.normal(scale=300.0, size=(2, num_joints, num_cells, 3))
  lengths = np.array([0.0, 250.0, 300.0, 200.0, 350.0])
  tolerance, sigma = 30.0, 80.0
  chosen = pictorial.max_product_tree(unary, points, parents, lengths, tolerance, sigma).numpy()

  for b in range(2):
    best, best_score = None, -np.inf
    for labels in itertools.product(range(num_cells), repeat=num_joints):
      score = sum(unary[b, j, labels[j]] for j in range(num_joints))
      for child in range(1, num_joints):
        parent = parents[child]
        distance = np.linalg.norm(points[b, parent, labels[parent]] - points[b, child,
                                                                            labels[child]])
        excess = max(abs(distance - lengths[child]) - tolerance, 0.0)
        score -= 0.5 * (excess / sigma) ** 2
      if score > best_score:
        best, best_score = labels, score
    np.testing.assert_array_equal(chosen[b], best)


def test_max_product_tree_shared_grid():
  # Two joints on a line of candidates 0, 100, ..., 900 mm; limb length 300 mm, tiny tolerance.
  grid = np.stack([np.arange(10) * 100.0, np.zeros(10), np.zeros(10)], axis=-1)[None, None]
  unary = np.full((1, 2, 10), -5.0)
  unary[0, 0, 2] = 0.0  # root evidence at 200 mm
  unary[0, 1, 9] = -1.0  # child evidence strongest at 900 mm (limb 700 mm: implausible)
  unary[0, 1, 5] = -2.0  # weaker evidence at 500 mm (limb 300 mm: plausible)
  chosen = pictorial.max_product_tree(unary, grid, [-1, 0], [0.0, 300.0], 10.0, 20.0).numpy()
  np.testing.assert_array_equal(chosen, [[2, 5]])


def test_mean_limb_lengths():
  poses = np.zeros((2, 3, 3))
  poses[0, 1] = [100.0, 0, 0]
  poses[1, 1] = [0, 300.0, 0]
  poses[:, 2] = poses[:, 1] + [0, 0, 50.0]
  poses[1, 2] = np.nan  # skipped
  joint_set = joints_lib.JointSet("chain3", ("a", "b", "c"), (-1, 0, 1), (0, 1, 2))
  np.testing.assert_allclose(pictorial.mean_limb_lengths(poses, joint_set), [0.0, 200.0, 50.0])


@pytest.mark.parametrize("method", ["bilinear", "bicubic"])
def test_sample_heatmaps(method):
  rows, cols = np.meshgrid(np.arange(6.0), np.arange(7.0), indexing="ij")
  ramp = (2.0 * cols + 3.0 * rows + 1.0)[None, None, :, :, None]  # [1, 1, 6, 7, 1]
  points = np.array([[[[[2.0, 3.0], [2.5, 2.25], [3.3, 1.6], [-3.0, 1.0]]]]])  # [1,1,1,4,2]
  values = pictorial.sample_heatmaps(ramp, points, method).numpy()[0, 0, 0]
  # Both interpolants reproduce a linear ramp in the interior; outside the heatmap is 0.
  np.testing.assert_allclose(values[:3], [14.0, 12.75, 12.4], atol=1e-4)
  assert values[3] == 0.0


@pytest.fixture(scope="module")
def clean_frames():
  """H36M rig, 6 synthetic poses, noise-free Gaussian heatmaps of the true projections."""
  rig = rigs.get_rig("h36m")
  frames = world.simulate_frames(rig, 6, seed=11, heatmap_size=HEATMAP_SIZE,
                                 return_heatmaps=False)
  heatmaps, _ = HeatmapCodec(HEATMAP_SIZE, 2.0).encode(frames["joints2d"])
  training = world.simulate_frames(rig, 100, seed=12, heatmap_size=HEATMAP_SIZE,
                                   return_heatmaps=False)
  limb_lengths = pictorial.mean_limb_lengths(training["joints3d"], "h36m17")
  return rig, frames, heatmaps.numpy(), limb_lengths


def test_dlt_recovers_noise_free_poses(clean_frames):
  rig, frames, _, _ = clean_frames
  points = triangulate.triangulate_heatmap_joints(frames["joints2d"], None, rig, HEATMAP_SIZE)
  # joints2d are float32 heatmap px (~1e-5 px), i.e. well under a millimetre in 3D.
  assert metrics.mpjpe(points, frames["joints3d"]) < 1.0
  np.testing.assert_allclose(
      triangulate.heatmap_to_image(frames["joints2d"], rig, HEATMAP_SIZE)[:, 0],
      rig.cameras[0].project(frames["joints3d"].astype(np.float64))[0], atol=0.01)


def test_rpsm_recovers_clean_poses(clean_frames):
  rig, frames, heatmaps, limb_lengths = clean_frames
  coords, scores = HeatmapCodec(HEATMAP_SIZE).decode(heatmaps)
  root = triangulate.triangulate_heatmap_joints(coords.numpy(), scores.numpy(), rig,
                                                HEATMAP_SIZE)[:, 0]
  estimate = pictorial.rpsm(heatmaps, rig, "h36m17", limb_lengths, root, OPTIONS)
  error = metrics.mpjpe(estimate, frames["joints3d"])
  # A 64 x 64 whole-image heatmap pixel is ~70 mm here; measured ~4 mm (grid 6.25 mm).
  assert error < 15.0, error


def test_rpsm_outvotes_a_distractor(clean_frames):
  rig, frames, heatmaps, limb_lengths = clean_frames
  joint_set = joints_lib.get_joint_set("h36m17")
  joint = joint_set.index("lwrist")
  # In view 0 the lwrist heatmap peaks 6 px (~400 mm at this depth) away from the truth,
  # horizontally towards the heatmap's centre.
  corrupted = heatmaps.copy()
  true2d = frames["joints2d"][:, 0, joint]
  wrong = true2d + np.where(true2d[:, :1] < HEATMAP_SIZE / 2, 6.0, -6.0) * [1.0, 0.0]
  corrupted[:, 0, :, :, joint] = HeatmapCodec(HEATMAP_SIZE).encode(wrong[:, None])[0].numpy()[
      ..., 0]

  coords, _ = HeatmapCodec(HEATMAP_SIZE).decode(corrupted)
  coords = coords.numpy()
  truth = frames["joints3d"][:, joint].astype(np.float64)
  dlt = triangulate.triangulate_heatmap_joints(coords, None, rig, HEATMAP_SIZE)
  estimate = pictorial.rpsm(corrupted, rig, joint_set, limb_lengths, dlt[:, 0], OPTIONS)
  rpsm_error = np.linalg.norm(estimate[:, joint] - truth, axis=-1)
  dlt_error = np.linalg.norm(dlt[:, joint] - truth, axis=-1)
  view_error = np.linalg.norm(coords[:, 0, joint] - frames["joints2d"][:, 0, joint], axis=-1)
  # Reprojected into the corrupted view, the RPSM joint lands on the truth, not the distractor.
  scale = pictorial.heatmap_image_scale(rig, HEATMAP_SIZE)[0]
  reprojected = rig.cameras[0].project(estimate[:, joint])[0] * scale
  reprojection_error = np.linalg.norm(reprojected - frames["joints2d"][:, 0, joint], axis=-1)
  assert np.all(view_error > 3.0)
  assert np.all(reprojection_error < 1.0), reprojection_error
  assert np.all(rpsm_error < 30.0), rpsm_error
  assert np.mean(rpsm_error) < 0.5 * np.mean(dlt_error), (rpsm_error, dlt_error)


def test_rpsm_rejects_bad_inputs(clean_frames):
  rig, _, heatmaps, limb_lengths = clean_frames
  with pytest.raises(ValueError, match="center"):
    pictorial.rpsm(heatmaps, rig, "h36m17", limb_lengths, np.zeros((1, 3)), OPTIONS)
  with pytest.raises(ValueError, match="heatmaps"):
    pictorial.rpsm(heatmaps[:, :2], rig, "h36m17", limb_lengths, np.zeros((6, 3)), OPTIONS)
  with pytest.raises(ValueError, match="sampling"):
    pictorial.PictorialOptions(sampling="nearest")
