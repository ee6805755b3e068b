"""Few-shot finetuning: theta only, checkpoint round trip, baselines, and bad inputs."""

import numpy as np
import pytest
import tensorflow as tf

from mf_tf import checkpoints
from mf_tf.data import world
from mf_tf.fusion import layers
from mf_tf.fusion import starts as fusion_starts
from mf_tf.geometry import rigs
from mf_tf.geometry.rig import Rig
from mf_tf.modes import finetune as finetune_mode
from mf_tf.train import finetune
from mf_tf.train import metatrain
from mf_tf.train import selection

SIZE = 16


@pytest.fixture(scope="module")
def rig():
  return rigs.get_rig("h36m").subset([0, 1, 2], name="h36m3")


@pytest.fixture(scope="module")
def frames(rig):
  return world.simulate_frames(rig, 12, 5, heatmap_size=SIZE)


def test_metafuse_finetunes_theta_only_and_round_trips(rig, frames, tmp_path):
  init = metatrain.default_meta_params(SIZE)
  layer = fusion_starts.make_fusion_layer("metafuse", rig, SIZE, init=init)
  omega_before = layer.omega_base.numpy().copy()
  theta_before = layer.theta.numpy().copy()
  np.testing.assert_array_equal(theta_before, np.repeat(init.theta[None], 6, axis=0))
  history = finetune.finetune_fusion(layer, frames["heatmaps"], frames["joints2d"],
                                     target_sigma=0.5, epochs=3, batch_size=4, progress=False)
  assert history["epochs"] >= 1 and np.isfinite(history["val_loss"]).all()
  np.testing.assert_array_equal(layer.omega_base.numpy(), omega_before)  # Bit-identical.
  assert np.abs(layer.theta.numpy() - theta_before).max() > 1e-4
  rig_dir = checkpoints.save_finetuned(layer, rig, str(tmp_path / rig.name),
                                    {"method": "metafuse", "heatmap_size": SIZE, "shots": 12})
  loaded, loaded_rig, meta = checkpoints.load_finetuned(rig_dir)
  assert isinstance(loaded, layers.AffineFusion) and not loaded.omega_base.trainable
  assert loaded_rig.num_views == 3 and meta["method"] == "metafuse"
  x = frames["heatmaps"][:2]
  np.testing.assert_allclose(loaded(x), layer(x), atol=1e-6)


def test_finetuning_lowers_training_loss(rig, frames):
  layer = fusion_starts.make_fusion_layer("metafuse", rig, SIZE, init=metatrain.default_meta_params(
      SIZE))
  history = finetune.finetune_fusion(layer, frames["heatmaps"], frames["joints2d"],
                                     target_sigma=0.5, epochs=8, batch_size=4, patience=8,
                                     learning_rate=2e-2, progress=False)
  assert history["loss"][-1] < history["loss"][0]


@pytest.mark.parametrize("method", ["naive", "calibrated", "affine"])
def test_baselines_and_calibrated_init(method, rig, frames):
  init = {"naive": np.zeros((2, SIZE * SIZE, SIZE * SIZE), np.float32),
          "affine": metatrain.default_meta_params(SIZE), "calibrated": None}[method]
  layer = fusion_starts.make_fusion_layer(method, rig, SIZE, init=init)
  history = finetune.finetune_fusion(layer, frames["heatmaps"], frames["joints2d"],
                                     target_sigma=0.5, epochs=1, batch_size=4, progress=False)
  assert np.isfinite(history["loss"]).all()


def test_bad_inputs_are_rejected(rig, frames):
  init = metatrain.default_meta_params(SIZE)
  with pytest.raises(ValueError, match="unknown fusion start"):
    fusion_starts.make_fusion_layer("maml", rig, SIZE, init=init)
  with pytest.raises(ValueError, match="at least 2"):
    fusion_starts.make_fusion_layer("metafuse", Rig("one", rig.cameras[:1]), SIZE, init=init)
  with pytest.raises(ValueError, match="larger than"):
    finetune.select_shots(10, 50, seed=0)
  with pytest.raises(ValueError, match="init"):
    fusion_starts.make_fusion_layer("affine", rig, SIZE, init=None)
  layer = fusion_starts.make_fusion_layer("metafuse", rig, SIZE, init=init)
  with pytest.raises(ValueError, match="learning_rate"):
    finetune.finetune_fusion(layer, frames["heatmaps"], frames["joints2d"], target_sigma=0.5,
                             learning_rate=-1.0, progress=False)
  trainable = layers.AffineFusion(3, SIZE)
  trainable.build((None, 3, SIZE, SIZE, 1))
  with pytest.raises(ValueError, match="theta only"):
    finetune.finetune_fusion(trainable, frames["heatmaps"], frames["joints2d"], target_sigma=0.5,
                             progress=False)
  with pytest.raises(FileNotFoundError):
    checkpoints.load_finetuned("/nonexistent/rig")


def test_finetune_mode_rejects_bad_config(tmp_path, default_config):
  config = default_config("smoke")
  config.finetune.fusion = "bogus"
  with pytest.raises(ValueError, match="finetune.fusion"):
    finetune_mode.run(config, str(tmp_path))
  config = default_config("smoke")
  config.recipe = "bogus"
  with pytest.raises(ValueError, match="config.recipe: unknown recipe 'bogus'"):
    finetune_mode.run(config, str(tmp_path))
  config = default_config("smoke")
  config.finetune.shots = 1
  with pytest.raises(ValueError, match="shots"):
    finetune_mode.run(config, str(tmp_path))


def test_finetuning_never_ends_below_its_start_on_validation_jdr(rig):
  # The calibrated init at line_value 0.3 is far from the MSE optimum (loss ~5x No-Fusion's)
  # although its 2D estimates are good: training on that loss damps the fusion and loses
  # detections. Selection by validation JDR keeps whichever candidate detects most.
  size = 16
  frames = world.simulate_frames(rig, 16, 7, heatmap_size=size)
  layer = fusion_starts.make_fusion_layer("calibrated", rig, size)
  start = [w.copy() for w in layer.get_weights()]
  history = finetune.finetune_fusion(layer, frames["heatmaps"], frames["joints2d"],
                                     target_sigma=0.5, epochs=6, batch_size=4, patience=6,
                                     learning_rate=5e-2, progress=False,
                                     head_size_px=frames["head_size"], seed=1)
  assert history["selection"] == "val_jdr" and len(history["val_jdr"]) >= 1
  assert history["best_val_jdr"] >= history["initial_val_jdr"]
  assert history["best_val_jdr"] == max([history["initial_val_jdr"]] + history["val_jdr"])
  if history["restored_init"]:
    for before, after in zip(start, layer.get_weights()):
      np.testing.assert_array_equal(before, after)
  # The kept parameters really score best_val_jdr on the validation frames.
  order = np.random.default_rng(1).permutation(16)
  val = order[:3]
  jdr = selection.validation_jdr(layer(frames["heatmaps"][val]), frames["joints2d"][val],
                                 0.5 * frames["head_size"][val], layer.temperature)
  assert jdr == pytest.approx(history["best_val_jdr"])


def test_validation_jdr_counts_joints_strictly_within_half_the_head_size():
  size = 8
  heatmaps = np.zeros((1, 2, size, size, 2), np.float32)
  heatmaps[0, :, 3, 4, :] = 10.0  # Every channel peaks at (x=4, y=3).
  joints = np.array([[[[4.0, 3.0], [6.0, 3.0]], [[4.0, 4.0], [np.nan, np.nan]]]])
  # Errors 0, 2, 1 (the NaN joint is not counted); radius 1.5 detects 2 of 3.
  assert selection.validation_jdr(heatmaps, joints, 1.5, 0.2) == pytest.approx(200.0 / 3)
  # Per view: radius 0.5 in both views detects only the exact joint.
  assert selection.validation_jdr(heatmaps, joints, np.array([[0.5, 0.5]]),
                                  0.2) == pytest.approx(100.0 / 3)
  # An error equal to the radius is a miss, as in the reported JDR (metrics.jdr).
  assert selection.validation_jdr(heatmaps, joints, np.array([[0.5, 1.0]]),
                                  0.2) == pytest.approx(100.0 / 3)
  assert selection.validation_jdr(heatmaps, joints, np.array([[0.5, 1.01]]),
                                  0.2) == pytest.approx(200.0 / 3)


def test_selection_keeps_the_best_and_the_earlier_on_ties():
  assert selection.best_index([(50.0, -1.0), (60.0, -3.0), (60.0, -2.0)]) == 2
  assert selection.best_index([(60.0, -2.0), (60.0, -2.0)]) == 0
  assert selection.score("val_loss", 90.0, 1.5) == (-1.5,)
  with pytest.raises(ValueError, match="selection='jdr'"):
    selection.score("jdr", 90.0, 1.5)


def test_self_calibrated_init_from_labels_matches_the_calibrated_fusion(rig):
  size = 16
  frames = world.simulate_frames(rig, 30, 3, heatmap_size=size)
  calibrated = fusion_starts.make_fusion_layer("calibrated", rig, size)
  self_calibrated = fusion_starts.make_fusion_layer("self_calibrated", rig, size,
                                               labels=frames["joints2d"])
  # The self-calibrated lines come from the labelled joints only; fused maps agree closely.
  test = world.simulate_frames(rig, 4, 4, heatmap_size=size)["heatmaps"]
  a, b = calibrated(test).numpy(), self_calibrated(test).numpy()
  assert np.abs(a - b).max() < 0.1 * np.abs(a).max()
  with pytest.raises(ValueError, match="labels"):
    fusion_starts.make_fusion_layer("self_calibrated", rig, size)


def test_reused_compiled_step_trains_as_a_fresh_one(rig, frames, monkeypatch):
  # One layer finetuned twice through one `compiled` dict, the second time from other weights
  # (and with a proximal pull), ends exactly where a fresh layer and fresh compile end from those
  # weights: Adam's moments, its step count and the proximal anchors restart, the step is traced
  # once.
  kwargs = dict(target_sigma=0.5, epochs=2, batch_size=4, patience=2, learning_rate=2e-2,
                proximal=0.5, progress=False, selection="val_loss")
  traces = []
  original = finetune._FusionFit.compute_loss

  def counting(self, *args, **kw):
    if not tf.executing_eagerly():
      traces.append(1)
    return original(self, *args, **kw)

  monkeypatch.setattr(finetune._FusionFit, "compute_loss", counting)
  layer = fusion_starts.make_fusion_layer("calibrated", rig, SIZE, theta_grid=2)
  second_start = [w.copy() for w in layer.get_weights()]
  residual = [w.name for w in layer.weights].index("theta_residual")
  second_start[residual] = second_start[residual] + 0.01  # Another start.
  compiled = {}
  finetune.finetune_fusion(layer, frames["heatmaps"], frames["joints2d"], compiled=compiled,
                           **kwargs)
  model, count = compiled["model"], len(traces)
  assert count >= 1
  layer.set_weights(second_start)
  reused = finetune.finetune_fusion(layer, frames["heatmaps"], frames["joints2d"],
                                    compiled=compiled, **kwargs)
  assert compiled["model"] is model and len(traces) == count  # No new trace.
  fresh = fusion_starts.make_fusion_layer("calibrated", rig, SIZE, theta_grid=2, name="fresh")
  fresh.set_weights(second_start)
  expected = finetune.finetune_fusion(fresh, frames["heatmaps"], frames["joints2d"], **kwargs)
  np.testing.assert_allclose(reused["loss"], expected["loss"], rtol=1e-5)
  np.testing.assert_allclose(layer.theta_residual.numpy(), fresh.theta_residual.numpy(),
                             atol=1e-6)
  assert np.abs(layer.theta_residual.numpy() - second_start[residual]).max() > 1e-3  # Trained.
  # Other settings: a new step in the dict's place.
  finetune.finetune_fusion(layer, frames["heatmaps"], frames["joints2d"], compiled=compiled,
                           **dict(kwargs, learning_rate=1e-2))
  assert compiled["model"] is not model
