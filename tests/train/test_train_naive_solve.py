"""NaiveFuse trained to convergence: the least-squares solver and its validation selection."""

import numpy as np
import pytest
import tensorflow as tf

from mf_tf.data import codec
from mf_tf.data import world
from mf_tf.fusion import layers
from mf_tf.fusion import ops
from mf_tf.fusion import starts as fusion_starts
from mf_tf.geometry import rigs
from mf_tf.train import finetune
from mf_tf.train import selection


def _random_problem(seed, frames=30, views=3, size=2, joints=2):
  rng = np.random.default_rng(seed)
  heatmaps = rng.random((frames, views, size, size, joints)).astype(np.float32)
  pairs = views * (views - 1)
  truth = rng.normal(size=(pairs, size * size, size * size)).astype(np.float32)
  targets = ops.fuse(tf.constant(heatmaps), tf.constant(truth)).numpy()
  return heatmaps, targets, truth


def test_least_squares_recovers_exact_linear_fusion():
  # Targets made by Eq. 1 from known matrices: the normal equations give those matrices back.
  heatmaps, targets, truth = _random_problem(0)
  weights = np.ones(heatmaps.shape[:2] + heatmaps.shape[-1:], np.float32)
  solved = finetune.naive_least_squares(heatmaps, targets, weights, ridge=1e-9)
  np.testing.assert_allclose(solved, truth, atol=2e-3)


def test_least_squares_is_the_stationary_point_of_the_ridge_mse():
  # Gradient of the paper's MSE (plus the ridge) at the solution vanishes, against its value at 0.
  heatmaps, _, _ = _random_problem(1, frames=6, size=3)
  rng = np.random.default_rng(2)
  targets = rng.random(heatmaps.shape).astype(np.float32)
  weights = (rng.random(heatmaps.shape[:2] + heatmaps.shape[-1:]) > 0.3).astype(np.float32)
  ridge = 1e-2
  solved = finetune.naive_least_squares(heatmaps, targets, weights, ridge=ridge)
  rows = weights.sum(axis=(0, 2))  # Supervised rows per target view.
  pair_rows = np.repeat(rows, heatmaps.shape[1] - 1)  # Pairs are grouped by target view.

  def gradient(matrices):
    matrices = tf.Variable(np.asarray(matrices, np.float64))
    with tf.GradientTape() as tape:
      fused = ops.fuse(tf.constant(heatmaps, tf.float64), matrices)
      residual = (fused - targets) * weights[:, :, None, None, :]
      objective = tf.reduce_sum(residual ** 2) + tf.reduce_sum(
          ridge * pair_rows[:, None, None] * matrices ** 2)
    return tape.gradient(objective, matrices).numpy()

  at_zero = np.abs(gradient(np.zeros_like(solved))).max()
  assert np.abs(gradient(solved)).max() < 1e-5 * at_zero


def test_least_squares_rejects_a_non_positive_ridge():
  heatmaps, targets, _ = _random_problem(3, frames=4)
  with pytest.raises(ValueError, match="ridge=0"):
    finetune.naive_least_squares(heatmaps, targets, np.ones((4, 3, 2)), ridge=0)


@pytest.fixture(scope="module")
def rig():
  return rigs.get_rig("h36m").subset([0, 1, 2], name="h36m3")


def test_solved_naive_fusion_beats_no_fusion_and_keeps_what_it_reports(rig):
  size = 16
  frames = world.simulate_frames(rig, 120, 11, heatmap_size=size)
  layer = fusion_starts.make_fusion_layer("naive", rig, size)
  result = finetune.solve_naive_fusion(layer, frames["heatmaps"], frames["joints2d"],
                                       target_sigma=1.0, seed=3,
                                       head_size_px=frames["head_size"])
  assert result["train_frames"] == 96 and not result["restored_init"]
  assert set(result["val_jdr"]) == set(finetune.NAIVE_SOLVE_SCALES)
  assert result["best_val_jdr"] == max(result["val_jdr"].values())
  # The matrices start at zero (No-Fusion): the solved fusion detects more validation joints.
  assert result["best_val_jdr"] >= result["initial_val_jdr"] + 2.0
  # The kept layer is the reported scale of the least-squares matrices.
  order = np.random.default_rng(3).permutation(120)
  val, train = order[:24], order[24:]
  jdr = selection.validation_jdr(layer(frames["heatmaps"][val]), frames["joints2d"][val],
                                 0.5 * frames["head_size"][val], layer.temperature)
  assert jdr == pytest.approx(result["best_val_jdr"])
  targets, weights = codec.HeatmapCodec(size, 1.0).encode(frames["joints2d"][train])
  solution = finetune.naive_least_squares(frames["heatmaps"][train], targets.numpy(),
                                          weights.numpy())
  np.testing.assert_allclose(layer.matrices.numpy(), result["scale"] * solution, rtol=1e-5,
                             atol=1e-7)
  # Held-out frames of another seed: above No-Fusion too.
  test = world.simulate_frames(rig, 40, 12, heatmap_size=size)
  threshold = 0.5 * test["head_size"]
  fused_jdr = selection.validation_jdr(layer(test["heatmaps"]), test["joints2d"], threshold,
                                       layer.temperature)
  plain_jdr = selection.validation_jdr(test["heatmaps"], test["joints2d"], threshold,
                                       layer.temperature)
  assert fused_jdr > plain_jdr + 1.0


def test_solver_inputs_are_checked(rig):
  frames = world.simulate_frames(rig, 6, 1, heatmap_size=8)
  naive = fusion_starts.make_fusion_layer("naive", rig, 8)
  with pytest.raises(ValueError, match="scales"):
    finetune.solve_naive_fusion(naive, frames["heatmaps"], frames["joints2d"], target_sigma=1.0,
                                scales=(1.0, 0.0))
  with pytest.raises(ValueError, match="NaiveFusion"):
    finetune.solve_naive_fusion(layers.NoFusion(), frames["heatmaps"], frames["joints2d"],
                                target_sigma=1.0)
  bad = frames["heatmaps"].copy()
  bad[2, 1, 3, 3, 0] = np.nan
  with pytest.raises(ValueError, match="NaN"):
    finetune.solve_naive_fusion(naive, bad, frames["joints2d"], target_sigma=1.0)


def test_epipolar_candidate_is_the_labels_geometry_and_kept_only_when_better(rig):
  size = 32  # At 16 px and 96 frames the scaled least squares is about as good (66.7 vs 67.9).
  frames = world.simulate_frames(rig, 120, 11, heatmap_size=size)
  kwargs = dict(target_sigma=2.0, seed=3, head_size_px=frames["head_size"])
  plain = fusion_starts.make_fusion_layer("naive", rig, size)
  least_squares = finetune.solve_naive_fusion(plain, frames["heatmaps"], frames["joints2d"],
                                              **kwargs)
  layer = fusion_starts.make_fusion_layer("naive", rig, size)
  result = finetune.solve_naive_fusion(layer, frames["heatmaps"], frames["joints2d"],
                                       epipolar_rig=rig, **kwargs)
  assert least_squares["start"] == "initial" and least_squares["epipolar_val_jdr"] is None
  # Same split, same least-squares scores; the epipolar map is one more candidate.
  assert result["val_jdr"] == pytest.approx(least_squares["val_jdr"])
  assert result["best_val_jdr"] == max(result["initial_val_jdr"], result["epipolar_val_jdr"],
                                       *result["val_jdr"].values())
  # At 32 px the labels' epipolar map wins by a margin (79.3 vs 67.6) and is what is kept: the
  # self-calibrated fusion of the 96 training frames' labels (no calibration used).
  assert result["start"] == "epipolar" and result["scale"] == 0.0
  assert result["epipolar_val_jdr"] >= least_squares["best_val_jdr"] + 5.0
  train = np.random.default_rng(3).permutation(120)[24:]
  expected = fusion_starts.make_fusion_layer(
      "self_calibrated", rig, size, labels=frames["joints2d"][train],
      temperature=layer.temperature).materialize().matrices.numpy()
  np.testing.assert_allclose(layer.matrices.numpy(), expected, atol=1e-6)
