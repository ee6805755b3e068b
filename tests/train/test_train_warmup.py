"""Warm-up of the backbone, the precompute stage (both sources) and baseline pretraining."""

import os

import numpy as np
import pytest
import tensorflow as tf

from mf_tf.data import world
from mf_tf.geometry import rigs
from mf_tf.models import backbone as backbone_lib
from mf_tf.train import precompute
from mf_tf.train import pretrain
from mf_tf.train import warmup

SIZE = 16


def test_paper_schedule():
  schedule = warmup.paper_schedule(30, 1e-3)
  assert [schedule(e) for e in (0, 14, 15, 24, 25, 29)] == pytest.approx(
      [1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5])


def test_masked_mse_ignores_invisible_joints():
  target = tf.zeros((1, 4, 4, 2))
  prediction = tf.concat([tf.zeros((1, 4, 4, 1)), tf.ones((1, 4, 4, 1))], axis=-1)
  assert float(warmup.masked_mse(prediction, target, tf.constant([[1.0, 0.0]]))) == 0.0
  assert float(warmup.masked_mse(prediction, target, tf.constant([[1.0, 1.0]]))) == 0.5


@pytest.mark.large
def test_warmup_trains_and_checkpoints(tmp_path):
  rig = rigs.get_rig("h36m").subset([0, 1])
  # 10 images: 1 for validation and 3 batches of 3, so Keras traces one training step (tracing
  # MobileNetV2's step and its 300-variable Adam update is most of this test's time).
  frames = world.simulate_frames(rig, 5, 0, heatmap_size=SIZE, render_images=True,
                                 image_size=4 * SIZE, return_heatmaps=False)
  flat = lambda a: a.reshape((-1,) + a.shape[2:])  # noqa: E731
  model = backbone_lib.build_backbone("mobilenetv2_035", 4 * SIZE, 17)
  history = warmup.warmup_backbone(
      model, flat(frames["images"]), flat(frames["joints2d"]), flat(frames["visibility"]),
      target_sigma=0.5, epochs=2, batch_size=3, workdir=str(tmp_path), progress=False,
      jit_compile=False)  # XLA would compile the same Keras step: half a minute more.
  assert len(history["loss"]) == 2 and np.isfinite(history["val_loss"]).all()
  assert history["learning_rate"][-1] == pytest.approx(1e-4)  # Dropped at half the epochs.
  assert os.path.isfile(tmp_path / "checkpoint.weights.h5")
  assert os.listdir(tmp_path / "tensorboard")


def test_precompute_detector_and_backbone_pools():
  rig = rigs.get_rig("h36m")
  pool = precompute.build_pool(rig, 3, 0, "h36m17", SIZE)
  assert not pool.dense and pool.peaks.shape[:3] == (3, 4, 17)
  model = backbone_lib.build_backbone("mobilenetv2_035", 4 * SIZE, 17)
  dense = precompute.build_pool(rig, 2, 0, "h36m17", SIZE, backbone=model, image_size=4 * SIZE)
  assert dense.dense and dense.heatmaps.shape == (2, 4, SIZE, SIZE, 17)
  with pytest.raises(ValueError, match="heatmap_size"):
    precompute.build_pool(rig, 1, 0, "h36m17", 2 * SIZE, backbone=model, image_size=4 * SIZE)


def test_pretrain_baselines():
  pool = precompute.build_pool(rigs.get_rig("panoptic_vga20"), 12, 0, "h36m17", 8)
  pairs = pretrain.select_view_pairs(pool.num_views, (0, 5, 10, 15))
  assert pairs.shape == (12, 2) and set(pairs.ravel()) == {0, 5, 10, 15}
  params = pretrain.pretrain_affine(pool, pairs, steps=3, tasks_per_step=2, frames_per_task=4,
                                    learning_rate=1e-2, temperature=0.2, target_sigma=0.25,
                                    seed=0, progress=False)
  assert params.theta.shape == (64, 6) and np.isfinite(params.theta).all()
  matrices = pretrain.pretrain_naive(pool, (0, 5, 10), epochs=1, batch_size=4,
                                     learning_rate=1e-3, temperature=0.2, target_sigma=0.25,
                                     seed=0, progress=False)
  assert matrices.shape == (6, 64, 64) and np.abs(matrices).max() > 0
  with pytest.raises(ValueError, match="pretrain views"):
    pretrain.select_view_pairs(20, (0, 0))
